"""python-fips verify: the checks a runtime image must pass, one JSON row per check.

`cargo xtask verify` copies this file into a container of the runtime image and runs it there
as the image's own (non-root) user with the `python3` found on PATH. The versions to expect come
from the image's labels, through PYTHON_FIPS_EXPECT_PYTHON, _OPENSSL and _PROVIDER.

Each check prints one line `python-fips-check {"name": ..., "passed": ..., "detail": ...}` as
soon as it ends; the last line is `python-fips-checks-done`. Standard library only: the script
must run in an image that holds nothing but the tree.
"""

import hashlib
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback

PREFIX = "/opt/python-fips"
OPENSSL = PREFIX + "/bin/openssl"
FIPS_SO = PREFIX + "/lib/ossl-modules/fips.so"
FIPSMODULE_CNF = PREFIX + "/ssl/fipsmodule.cnf"
OPENSSL_CNF = PREFIX + "/ssl/openssl.cnf"
EXPECT_PYTHON = os.environ.get("PYTHON_FIPS_EXPECT_PYTHON", "")
EXPECT_OPENSSL = os.environ.get("PYTHON_FIPS_EXPECT_OPENSSL", "")
EXPECT_PROVIDER = os.environ.get("PYTHON_FIPS_EXPECT_PROVIDER", "")

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SHA3_256_ABC = "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"

# The extension modules a user of a full CPython expects; a missing one is a broken build.
STDLIB_MODULES = [
    "ssl", "_ssl", "hashlib", "_hashlib", "hmac", "sqlite3", "_sqlite3", "zlib", "lzma", "_lzma",
    "bz2", "_bz2", "ctypes", "_ctypes", "readline", "decimal", "_decimal", "uuid", "_uuid",
    "curses", "_curses", "_curses_panel", "dbm", "dbm.gnu", "_gdbm", "dbm.ndbm", "_dbm", "json",
    "_json", "pyexpat", "xml.etree.ElementTree", "_elementtree", "unicodedata", "multiprocessing",
    "_multiprocessing", "_posixshmem", "_posixsubprocess", "mmap", "select", "socket", "fcntl",
    "grp", "termios", "resource", "syslog", "array", "math", "cmath", "_struct", "binascii",
    "_pickle", "_datetime", "zoneinfo", "_zoneinfo", "asyncio", "_asyncio", "_queue", "_random",
    "_bisect", "_heapq", "_csv", "_statistics", "_contextvars", "_lsprof", "_opcode", "_blake2",
    "zipfile", "tarfile", "venv", "ensurepip",
]

CHECKS = []


class Fail(Exception):
    """A check's expectation does not hold; the message is the row's detail."""


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


def run(argv, env=None, stdin=b"", timeout=300):
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=timeout)


def out(result):
    """stdout and stderr of a finished command, as one stripped text."""
    return (result.stdout + result.stderr).decode(errors="replace").strip()


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else "(no output)"


def refusal(fn):
    """How `fn()` was refused (`Type: message`), or None if it was not."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any refusal counts; the detail names it
        return f"{type(e).__name__}: {e}"
    return None


def must_refuse(**calls):
    refused, allowed = [], []
    for what, fn in calls.items():
        how = refusal(fn)
        if how is None:
            allowed.append(what)
        else:
            refused.append(f"{what} -> {how}")
    if allowed:
        raise Fail("allowed: " + ", ".join(allowed))
    return "; ".join(refused)


@check("runs as a non-root user")
def non_root():
    uid = os.getuid()
    name = pwd.getpwuid(uid).pw_name
    if uid == 0:
        raise Fail("uid 0 (root)")
    return f"uid {uid} ({name})"


@check("python3 on PATH is the tree's")
def on_path():
    found = shutil.which("python3")
    if found != PREFIX + "/bin/python3" or not sys.executable.startswith(PREFIX + "/"):
        raise Fail(f"python3 on PATH is {found}, sys.executable is {sys.executable}")
    return f"{found} (PATH={os.environ.get('PATH', '')})"


@check("no LD_LIBRARY_PATH")
def no_ld_library_path():
    value = os.environ.get("LD_LIBRARY_PATH")
    if value is not None:
        raise Fail(f"LD_LIBRARY_PATH={value}")
    return "unset: libraries resolve by rpath and ldconfig"


@check("python version")
def python_version():
    version = platform.python_version()
    if version != EXPECT_PYTHON:
        raise Fail(f"{version}, expected {EXPECT_PYTHON}")
    return version


@check("ssl.OPENSSL_VERSION")
def openssl_version():
    import ssl

    if not ssl.OPENSSL_VERSION.startswith(f"OpenSSL {EXPECT_OPENSSL} "):
        raise Fail(f"{ssl.OPENSSL_VERSION!r}, expected OpenSSL {EXPECT_OPENSSL}")
    return ssl.OPENSSL_VERSION


@check("openssl list -providers: fips active")
def providers():
    result = run([OPENSSL, "list", "-providers"])
    text = out(result)
    if result.returncode != 0:
        raise Fail(f"exit {result.returncode}: {last_line(text)}")
    blocks, current = {}, None
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            current = line.strip()
            blocks[current] = {}
        elif current and ":" in line:
            key, _, value = line.strip().partition(":")
            blocks[current][key.strip()] = value.strip()
    fips = blocks.get("fips")
    if fips is None:
        raise Fail("no fips provider; loaded: " + ", ".join(blocks))
    summary = f"{fips.get('name')} {fips.get('version')} {fips.get('status')}"
    if fips.get("status") != "active" or fips.get("version") != EXPECT_PROVIDER:
        raise Fail(f"{summary}, expected version {EXPECT_PROVIDER} active")
    return summary + "; loaded: " + ", ".join(blocks)


@check("openssl fipsinstall -verify")
def fipsinstall_verify():
    env = dict(os.environ, OPENSSL_CONF="/dev/null")
    result = run([OPENSSL, "fipsinstall", "-module", FIPS_SO, "-in", FIPSMODULE_CNF, "-verify"],
                 env=env)
    text = out(result)
    if result.returncode != 0 or "VERIFY PASSED" not in text:
        raise Fail(f"exit {result.returncode}: {last_line(text)}")
    return "VERIFY PASSED"


def mapped_libraries(module):
    """What ldd would list for `module`, read from the mappings of a fresh interpreter that
    imported it: for images without ldd (the distroless one has no shell to run it)."""
    code = f"import {module}; print(open('/proc/self/maps').read())"
    result = run([sys.executable, "-c", code])
    if result.returncode != 0:
        raise Fail(f"import {module}: {last_line(out(result))}")
    paths = {line.split()[-1] for line in result.stdout.decode().splitlines()
             if len(line.split()) >= 6 and line.split()[-1].startswith("/")}
    return "\n".join(f"{os.path.basename(p)} => {p} (mapped)" for p in sorted(paths))


def ldd_check(module, wanted):
    mod = __import__(module)
    if shutil.which("ldd") is None:
        text = mapped_libraries(module)
    else:
        result = run(["ldd", mod.__file__])
        text = out(result)
        if result.returncode != 0:
            raise Fail(f"ldd {mod.__file__}: {last_line(text)}")
    found, outside = {}, []
    for line in text.splitlines():
        name, arrow, target = line.strip().partition(" => ")
        if not arrow or not name.startswith(("libssl.so", "libcrypto.so")):
            continue
        path = target.split(" (")[0]
        found[name.split(".so")[0]] = path
        if not path.startswith(PREFIX + "/lib/"):
            outside.append(f"{name} => {path}")
    missing = [lib for lib in wanted if lib not in found]
    if outside or missing:
        raise Fail("; ".join(outside + [f"{lib} not linked" for lib in missing]))
    return ", ".join(f"{k} => {v}" for k, v in sorted(found.items()))


@check("ldd _ssl: libssl, libcrypto from the tree")
def ldd_ssl():
    return ldd_check("_ssl", ["libssl", "libcrypto"])


@check("ldd _hashlib: libcrypto from the tree")
def ldd_hashlib():
    return ldd_check("_hashlib", ["libcrypto"])


@check("ssl.FIPS_mode() == 1")
def ssl_fips_mode():
    import ssl

    if not hasattr(ssl, "FIPS_mode"):
        raise Fail("ssl has no FIPS_mode (the FIPS patch is not applied)")
    mode = ssl.FIPS_mode()
    if mode != 1:
        raise Fail(f"ssl.FIPS_mode() is {mode!r}")
    return "1"


@check("_hashlib.get_fips_mode() == 1")
def hashlib_fips_mode():
    import _hashlib

    mode = _hashlib.get_fips_mode()
    if mode != 1:
        raise Fail(f"_hashlib.get_fips_mode() is {mode!r}")
    return "1"


@check("hashlib.md5() refuses")
def md5_refused():
    return must_refuse(**{
        "hashlib.md5()": lambda: hashlib.md5(),
        "hashlib.new('md5')": lambda: hashlib.new("md5"),
    })


@check("md5(usedforsecurity=False) works")
def md5_non_security():
    digest = hashlib.md5(b"", usedforsecurity=False).hexdigest()
    if digest != MD5_EMPTY:
        raise Fail(f"{digest}, expected {MD5_EMPTY}")
    return digest


@check("hmac with md5 refuses")
def hmac_md5_refused():
    import hmac

    return must_refuse(**{
        "hmac.new(k, m, 'md5')": lambda: hmac.new(b"key", b"msg", "md5").hexdigest(),
        "hmac.digest(k, m, 'md5')": lambda: hmac.digest(b"key", b"msg", "md5"),
    })


@check("blake2 refuses")
def blake2_refused():
    return must_refuse(**{
        "hashlib.blake2b()": lambda: hashlib.blake2b(b"abc").hexdigest(),
        "hashlib.blake2s()": lambda: hashlib.blake2s(b"abc").hexdigest(),
        "hashlib.new('blake2b')": lambda: hashlib.new("blake2b", b"abc").hexdigest(),
    })


def known_answer(name, expected):
    got = {
        f"hashlib.{name}": getattr(hashlib, name)(b"abc").hexdigest(),
        f"hashlib.new('{name}')": hashlib.new(name, b"abc").hexdigest(),
    }
    wrong = [f"{k} = {v}" for k, v in got.items() if v != expected]
    if wrong:
        raise Fail("; ".join(wrong) + f", expected {expected}")
    return f"{name}(b'abc') = {expected[:16]}..."


@check("SHA-256 known answer")
def sha256_kat():
    return known_answer("sha256", SHA256_ABC)


@check("SHA3-256 known answer")
def sha3_256_kat():
    return known_answer("sha3_256", SHA3_256_ABC)


@check("TLS 1.3 loopback negotiates AES-GCM")
def tls13_loopback():
    import socket
    import ssl

    with tempfile.TemporaryDirectory() as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        result = run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
                      "-days", "1", "-subj", "/CN=localhost",
                      "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert])
        if result.returncode != 0:
            raise Fail(f"openssl req failed: {last_line(out(result))}")
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(cert)
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(60)
        port = listener.getsockname()[1]
        server_error = []

        def serve():
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(s.recv(5))
            except Exception as e:  # noqa: BLE001 - reported in the row
                server_error.append(f"{type(e).__name__}: {e}")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"hello")
                    echo = s.recv(5)
                    version, cipher = s.version(), s.cipher()[0]
        except Exception as e:
            raise Fail(f"{type(e).__name__}: {e}; server: {server_error}") from e
        finally:
            thread.join(60)
            listener.close()
    detail = f"{version} {cipher}"
    if version != "TLSv1.3" or "GCM" not in cipher or echo != b"hello":
        raise Fail(f"{detail}, echo {echo!r}")
    return detail


@check("set_ciphers('MD5') refuses")
def md5_ciphers_refused():
    import ssl

    return must_refuse(**{
        "SSLContext.set_ciphers('MD5')":
            lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers("MD5"),
    })


@check("openssl dgst -md5 refuses")
def openssl_md5_refused():
    result = run([OPENSSL, "dgst", "-md5"], stdin=b"abc")
    if result.returncode == 0:
        raise Fail(f"exit 0: {last_line(out(result))}")
    return f"exit {result.returncode}: {last_line(out(result))}"


def hash_with_module(directory, module_bytes):
    """sha256 in a fresh interpreter whose FIPS provider is `module_bytes`, loaded from
    `directory` through OPENSSL_MODULES and a configuration naming that file."""
    os.makedirs(directory)
    module = os.path.join(directory, "fips.so")
    with open(module, "wb") as f:
        f.write(module_bytes)
    with open(FIPSMODULE_CNF) as f:
        fips_cnf = f.read().replace("[fips_sect]", f"[fips_sect]\nmodule = {module}", 1)
    with open(os.path.join(directory, "fipsmodule.cnf"), "w") as f:
        f.write(fips_cnf)
    with open(OPENSSL_CNF) as f:
        cnf = f.read().replace(FIPSMODULE_CNF, os.path.join(directory, "fipsmodule.cnf"))
    with open(os.path.join(directory, "openssl.cnf"), "w") as f:
        f.write(cnf)
    env = dict(os.environ, OPENSSL_CONF=os.path.join(directory, "openssl.cnf"),
               OPENSSL_MODULES=directory)
    code = "import hashlib; print(hashlib.sha256(b'abc').hexdigest())"
    return run([sys.executable, "-c", code], env=env, timeout=120)


@check("a corrupted fips.so makes hashing fail")
def corrupted_module():
    with open(FIPS_SO, "rb") as f:
        intact = f.read()
    flipped = bytearray(intact)
    at = len(flipped) // 2
    flipped[at] ^= 0x01
    with tempfile.TemporaryDirectory() as tmp:
        # The control: the same set-up with an intact copy must hash, or the check proves nothing.
        control = hash_with_module(os.path.join(tmp, "intact"), intact)
        if control.returncode != 0 or control.stdout.decode().strip() != SHA256_ABC:
            raise Fail(f"even the intact copy fails: {last_line(out(control))}")
        result = hash_with_module(os.path.join(tmp, "flipped"), bytes(flipped))
    text = out(result)
    if result.returncode == 0 and SHA256_ABC in text:
        raise Fail(f"byte {at} flipped, yet sha256 still works: {last_line(text)}")
    return f"byte {at} flipped: exit {result.returncode}: {last_line(text)}"


@check("stdlib extension modules import")
def stdlib_modules():
    import importlib

    missing = []
    for name in STDLIB_MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - every failure is a missing module here
            missing.append(f"{name} ({type(e).__name__}: {e})")
    if missing:
        raise Fail("missing: " + "; ".join(missing))
    return f"all {len(STDLIB_MODULES)} import"


@check("python3 -m venv, then pip --version")
def venv_pip():
    with tempfile.TemporaryDirectory() as tmp:
        venv = os.path.join(tmp, "venv")
        result = run([sys.executable, "-m", "venv", venv])
        if result.returncode != 0:
            raise Fail(f"venv: exit {result.returncode}: {last_line(out(result))}")
        result = run([os.path.join(venv, "bin", "pip"), "--version"])
        text = out(result)
        if result.returncode != 0 or not text.startswith("pip "):
            raise Fail(f"pip --version: exit {result.returncode}: {last_line(text)}")
        return text.split(" from ")[0]


def main():
    for name, fn in CHECKS:
        try:
            detail, passed = fn(), True
        except Fail as e:
            detail, passed = str(e), False
        except Exception as e:  # noqa: BLE001 - an unexpected error fails the row, not the run
            tb = traceback.extract_tb(e.__traceback__)[-1]
            detail, passed = f"{type(e).__name__}: {e} (line {tb.lineno})", False
        row = {"name": name, "passed": passed, "detail": detail}
        print("python-fips-check " + json.dumps(row), flush=True)
    print("python-fips-checks-done", flush=True)


if __name__ == "__main__":
    main()
