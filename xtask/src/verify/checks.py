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
import time
import traceback

PREFIX = "/opt/python-fips"
OPENSSL = PREFIX + "/bin/openssl"
FIPS_SO = PREFIX + "/lib/ossl-modules/fips.so"
FIPSMODULE_CNF = PREFIX + "/ssl/fipsmodule.cnf"
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
    # The provider release's own openssl, when the tree carries one, as python-fips-setup uses.
    tool = PREFIX + "/libexec/openssl-fipsinstall"
    tool = tool if os.access(tool, os.X_OK) else OPENSSL
    result = run([tool, "fipsinstall", "-module", FIPS_SO, "-in", FIPSMODULE_CNF, "-verify"],
                 env=env)
    text = out(result)
    if result.returncode != 0 or "VERIFY PASSED" not in text:
        raise Fail(f"exit {result.returncode}: {last_line(text)}")
    return "VERIFY PASSED"


@check("FIPS provider CMVP status")
def provider_cmvp_status():
    # BUILD-INFO.json records the certificate and its status on the build's date; the Historical
    # list date tells where it stands today. A historical or unvalidated provider still passes:
    # this row says what the tree is, the build printed the warning.
    with open(PREFIX + "/BUILD-INFO.json") as f:
        provider = json.load(f)["fips_provider"]
    source = provider["source"]
    carries = source.get("carries")
    version = carries["release"] if carries else source["version"]
    # A test source is the release's tree but not its release tarball: the row says so.
    built = f" (built from {source['file']}, {carries['what']}, not the release tarball)" \
        if carries else ""
    cmvp = provider["cmvp"]
    if not isinstance(cmvp, dict):
        return f"{version}{built}: {cmvp}"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    now = "historical" if cmvp["historical_from"] <= today else "active"
    return (f"{version}{built}: certificate #{cmvp['certificate']} ({cmvp['standard']}), "
            f"{cmvp['status']} on {cmvp['status_as_of']} (build date), {now} on {today}; "
            f"historical from {cmvp['historical_from']}")


@check("fipsmodule.cnf written by the provider's own release")
def fipsmodule_cnf_fields():
    # Each provider release's security policy names the fields its own fipsinstall writes: 3.0.x
    # also install-mac and install-status (self-tests once, at installation); 3.1.x, a FIPS 140-3
    # module, leaves them out and runs its self-tests on every load. The tree carries the
    # provider release's own openssl as libexec/openssl-fipsinstall, which python-fips-setup uses.
    with open(FIPSMODULE_CNF) as f:
        fields = [line.split("=")[0].strip() for line in f if "=" in line]
    required = ["activate", "module-mac"]
    if EXPECT_PROVIDER.startswith(("3.0.", "3.1.")):
        required += ["conditional-errors", "security-checks"]
    if EXPECT_PROVIDER.startswith("3.0."):
        required += ["install-mac", "install-status"]
    missing = [k for k in required if k not in fields]
    if missing:
        raise Fail(f"fields {', '.join(fields)}; missing {', '.join(missing)}")
    if EXPECT_PROVIDER.startswith("3.1.") and "install-status" in fields:
        raise Fail("install-status is written: not by a 3.1 fipsinstall, whose 140-3 module "
                   "self-tests on every load")
    detail = "fields: " + ", ".join(fields)
    if EXPECT_PROVIDER == EXPECT_OPENSSL:
        return detail
    tool = PREFIX + "/libexec/openssl-fipsinstall"
    if not os.access(tool, os.X_OK):
        raise Fail(f"the provider {EXPECT_PROVIDER} differs from OpenSSL {EXPECT_OPENSSL}, "
                   f"yet {tool} is missing")
    version = last_line(out(run([tool, "version"], env=dict(os.environ, OPENSSL_CONF="/dev/null"))))
    if not version.startswith(f"OpenSSL {EXPECT_PROVIDER} "):
        raise Fail(f"{tool} is {version!r}, not OpenSSL {EXPECT_PROVIDER}")
    return f"{detail}; by {version}"


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


@check("HMAC objects run in the FIPS provider (EVP_MAC)")
def hmac_in_provider():
    # With the legacy HMAC_CTX API the HMAC construction runs in libcrypto, outside the module
    # boundary, and only its digest in the provider; EVP_MAC fetches the provider's own HMAC.
    # The imported symbol names in _hashlib's dynamic string table tell which API it calls.
    import _hashlib
    import hmac

    with open(_hashlib.__file__, "rb") as f:
        data = f.read()
    legacy = [s for s in ("HMAC_Init_ex", "HMAC_CTX_new", "HMAC_Update", "HMAC_Final")
              if b"\0" + s.encode() + b"\0" in data]
    if legacy:
        raise Fail(f"{os.path.basename(_hashlib.__file__)} calls {', '.join(legacy)}: the "
                   "HMAC construction runs outside the FIPS provider")
    if b"\0EVP_MAC_init\0" not in data:
        raise Fail(f"{os.path.basename(_hashlib.__file__)} does not call EVP_MAC_init")
    # RFC 4231 test case 2, through an object that is copied and continued.
    h = hmac.new(b"Jefe", b"what do ya want ", "sha256")
    copy = h.copy()
    h.update(b"for nothing?")
    copy.update(b"for nothing?")
    want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    if h.hexdigest() != want or copy.hexdigest() != want:
        raise Fail(f"HMAC-SHA256 of RFC 4231 case 2 is {h.hexdigest()}, copy {copy.hexdigest()}")
    return f"EVP_MAC_init, no HMAC_CTX; {type(h).__module__}.{type(h).__qualname__} " \
        "RFC 4231 case 2 ok"


@check("blake2 refuses")
def blake2_refused():
    return must_refuse(**{
        "hashlib.blake2b()": lambda: hashlib.blake2b(b"abc").hexdigest(),
        "hashlib.blake2s()": lambda: hashlib.blake2s(b"abc").hexdigest(),
        "hashlib.new('blake2b')": lambda: hashlib.new("blake2b", b"abc").hexdigest(),
    })


@check("_blake2 constructors and subclasses refuse")
def builtin_blake2_refused():
    import _blake2

    calls = {
        "_blake2.blake2b()": lambda: _blake2.blake2b(b"abc"),
        "_blake2.blake2s()": lambda: _blake2.blake2s(b"abc"),
    }
    try:
        sub = type("Sub", (_blake2.blake2b,), {})
    except TypeError:
        sub = None  # the types are not subclassable before 3.14
    else:
        calls["subclass of _blake2.blake2b"] = lambda: sub(b"abc")
        sub(b"abc", usedforsecurity=False)
    return must_refuse(**calls)


@check("no builtin HMAC (_hmac) to fall back to")
def builtin_hmac_absent():
    try:
        import _hmac
    except ImportError as e:
        return f"not built ({e})"
    return must_refuse(**{
        "_hmac.compute_digest(k, m, 'md5')":
            lambda: _hmac.compute_digest(b"key", b"msg", "md5"),
    })


@check("no _crypt (crypt(3) outside OpenSSL)")
def crypt_absent():
    # 3.11 and 3.12 would build _crypt against the builder's libcrypt, whose MD5-crypt and
    # SHA-512-crypt run outside OpenSSL; the recipes leave it out, and 3.13 removed it.
    try:
        import _crypt
    except ImportError as e:
        return f"not built ({e})"
    raise Fail(f"_crypt is built: {_crypt.__file__}")


def python_child(code):
    """Run `code` in a fresh interpreter of the tree; its stdout and stderr as one text."""
    result = run([sys.executable, "-I", "-c", code], timeout=120)
    return result.returncode, out(result)


@check("FIPS_mode_set(1) at run time: no cached md5 or blake2")
def runtime_fips_mode_set():
    code = (
        "import ssl, hashlib, hmac, _blake2\n"
        "ssl.FIPS_mode_set(0)\n"
        "hashlib.md5(b'a'); hmac.new(b'k', b'm', 'md5'); hashlib.blake2b(b'a')\n"
        "ssl.FIPS_mode_set(1)\n"
        "allowed = []\n"
        "for what, fn in [('hashlib.md5', lambda: hashlib.md5(b'a')),\n"
        "                 ('hmac md5', lambda: hmac.new(b'k', b'm', 'md5')),\n"
        "                 ('hashlib.blake2b', lambda: hashlib.blake2b(b'a')),\n"
        "                 ('_blake2.blake2s', lambda: _blake2.blake2s(b'a'))]:\n"
        "    try:\n        fn(); allowed.append(what)\n"
        "    except ValueError:\n        pass\n"
        "print('allowed after FIPS_mode_set(1): ' + ', '.join(allowed) if allowed else 'all refused')\n"
        "raise SystemExit(1 if allowed else 0)\n"
    )
    code_, text = python_child(code)
    if code_ != 0:
        raise Fail(last_line(text))
    return last_line(text)


@check("ssl.FIPS_mode_set raises an audit event")
def fips_mode_set_audited():
    code = (
        "import ssl, sys\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append((e, a)) if e == 'ssl.FIPS_mode_set' else None)\n"
        "ssl.FIPS_mode_set(1)\n"
        "print(seen)\n"
    )
    code_, text = python_child(code)
    if code_ != 0 or "('ssl.FIPS_mode_set', (1,))" not in text:
        raise Fail(f"exit {code_}: {last_line(text)}")
    return last_line(text)


@check("pbkdf2_hmac refuses what SP 800-132 forbids")
def pbkdf2_bounds():
    detail = must_refuse(**{
        "salt of 32 bits": lambda: hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1000, 32),
        "1 iteration": lambda: hashlib.pbkdf2_hmac("sha256", b"password", b"s" * 16, 1, 32),
        "key of 64 bits": lambda: hashlib.pbkdf2_hmac("sha256", b"password", b"s" * 16, 1000, 8),
    })
    hashlib.pbkdf2_hmac("sha256", b"password", b"s" * 16, 1000, 14)
    return detail


@check("import hashlib fails loudly without _hashlib")
def hashlib_needs_hashlib():
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "_hashlib.py"), "w") as f:
            f.write("raise ImportError('simulated: libcrypto missing')\n")
        code = (f"import sys; sys.path.insert(0, {tmp!r})\n"
                "import hashlib\n"
                "print('hashlib imported quietly without _hashlib')\n")
        code_, text = python_child(code)
    if code_ == 0:
        raise Fail(last_line(text))
    return last_line(text)


@check("multiprocessing authkey handshake works")
def multiprocessing_authkey():
    from multiprocessing.connection import Client, Listener

    with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
        errors = []

        def serve():
            try:
                with listener.accept() as conn:
                    conn.send(conn.recv())
            except Exception as e:  # noqa: BLE001 - reported in the row
                errors.append(f"{type(e).__name__}: {e}")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with Client(listener.address, authkey=b"secret") as client:
                client.send("ping")
                echo = client.recv()
        except Exception as e:
            raise Fail(f"{type(e).__name__}: {e}; listener: {errors}") from e
        finally:
            thread.join(60)
    if echo != "ping" or errors:
        raise Fail(f"echo {echo!r}; listener: {errors}")
    return "Listener/Client with an authkey: ping echoed"


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


def start_weak_server(cert, key, port, connections):
    """`openssl s_server` with a 1024-bit RSA certificate, outside FIPS mode and at security
    level 0, so that only the client can refuse it."""
    return subprocess.Popen(
        [OPENSSL, "s_server", "-quiet", "-accept", f"127.0.0.1:{port}", "-cert", cert,
         "-key", key, "-cipher", "DEFAULT:@SECLEVEL=0", "-naccept", str(connections)],
        env=dict(os.environ, OPENSSL_CONF="/dev/null"), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def handshake(port, cert, level=None):
    """A TLS handshake of the tree's ssl with 127.0.0.1:`port`, trusting `cert`; `level` lowers
    the context's security level. Retries while the server is not listening yet."""
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cert)
    if level is not None:
        ctx.set_ciphers(f"DEFAULT:@SECLEVEL={level}")
    deadline = time.monotonic() + 30
    while True:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with raw, ctx.wrap_socket(raw) as s:
        return s.version()


@check("TLS floor: a 1024-bit RSA peer is refused")
def tls_floor():
    import socket

    with tempfile.TemporaryDirectory() as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        # The FIPS provider will not make a 1024-bit RSA key: the default provider alone does.
        result = run([OPENSSL, "req", "-x509", "-newkey", "rsa:1024", "-sha256", "-nodes",
                      "-days", "1", "-subj", "/CN=weak", "-keyout", key, "-out", cert],
                     env=dict(os.environ, OPENSSL_CONF="/dev/null"))
        if result.returncode != 0:
            raise Fail(f"openssl req failed: {last_line(out(result))}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_weak_server(cert, key, port, 2)
        try:
            how = refusal(lambda: handshake(port, cert))
            # The same peer with the context lowered to OpenSSL's compiled-in level 1: it is the
            # floor that refused, not something else.
            lowered = refusal(lambda: handshake(port, cert, level=1))
        finally:
            server.kill()
            server.wait(30)
    if how is None:
        raise Fail("a handshake with a 1024-bit RSA certificate succeeded")
    if "too weak" not in how and "too small" not in how:
        raise Fail(f"refused, but not for the key size: {how}")
    if lowered is not None:
        raise Fail(f"refused at level 1 too, so the floor was not what refused: {lowered}")
    return f"{how}; accepted only after set_ciphers('DEFAULT:@SECLEVEL=1')"


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


def tree_copy(directory):
    """A copy of the whole tree at `directory`, as a user would unpack it anywhere."""
    shutil.copytree(PREFIX, directory, symlinks=True)
    return directory


# What a copied tree's python reports about itself: FIPS mode, MD5, the OpenSSL it runs and the
# libcrypto and configuration it loaded. Run with the copy's own python, no environment added.
PROBE = """
import hashlib, json, os, ssl
try:
    hashlib.md5(b"")
    md5 = "allowed"
except ValueError as e:
    md5 = "refused: " + str(e)
maps = open("/proc/self/maps").read().split("\\n")
print(json.dumps({
    "fips": ssl.FIPS_mode() if hasattr(ssl, "FIPS_mode") else None,
    "md5": md5,
    "openssl": ssl.OPENSSL_VERSION,
    "sha256": hashlib.sha256(b"abc").hexdigest(),
    "libcrypto": sorted({l.split(None, 5)[5] for l in maps if "/libcrypto" in l}),
    "conf": os.environ.get("OPENSSL_CONF"),
}))
"""


def run_copy(copy, code=PROBE):
    return run([os.path.join(copy, "bin", "python3"), "-c", code], timeout=120)


@check("the tree copied elsewhere installs its FIPS module and runs on its own OpenSSL")
def relocated_tree():
    with tempfile.TemporaryDirectory() as tmp:
        copy = tree_copy(os.path.join(tmp, "moved"))
        # As unpacked on a new machine: the per-machine self-test has not run yet, and the first
        # use runs it (python-fips-setup, a shell script: the distroless image, which has no
        # shell, keeps the copied result instead).
        cnf = os.path.join(copy, "ssl", "fipsmodule.cnf")
        first_use = os.path.exists("/bin/sh")
        if first_use:
            os.remove(cnf)
        result = run_copy(copy)
        if result.returncode != 0:
            raise Fail(f"exit {result.returncode}: {last_line(out(result))}")
        if not os.path.exists(cnf):
            raise Fail("the first use did not write the copy's ssl/fipsmodule.cnf")
        seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
        problems = []
        if seen["fips"] != 1:
            problems.append(f"FIPS mode {seen['fips']!r}")
        if not seen["md5"].startswith("refused"):
            problems.append("md5 allowed")
        if seen["libcrypto"] != [os.path.join(copy, "lib", "libcrypto.so.3")]:
            problems.append(f"libcrypto {seen['libcrypto']}")
        if seen["conf"] != os.path.join(copy, "ssl", "openssl.cnf"):
            problems.append(f"OPENSSL_CONF {seen['conf']}")
        if not seen["openssl"].startswith(f"OpenSSL {EXPECT_OPENSSL} "):
            problems.append(seen["openssl"])
        if seen["sha256"] != SHA256_ABC:
            problems.append("sha256 " + seen["sha256"])
        if problems:
            raise Fail("; ".join(problems))
        how = "self-test on first use" if first_use else "no shell: fipsmodule.cnf copied"
        return f"{how}; {seen['openssl']}, FIPS mode 1, md5 refused; {seen['libcrypto'][0]}"


@check("the tree copied without its libcrypto refuses to import hashlib")
def relocated_without_libcrypto():
    with tempfile.TemporaryDirectory() as tmp:
        copy = tree_copy(os.path.join(tmp, "moved"))
        for name in os.listdir(os.path.join(copy, "lib")):
            if name.startswith(("libcrypto.so", "libssl.so")):
                os.remove(os.path.join(copy, "lib", name))
        result = run_copy(copy, "import hashlib")
        text = last_line(out(result))
        if result.returncode == 0:
            raise Fail("import hashlib worked without the tree's libcrypto")
        # Refused by the tree's own check (the image has a libcrypto.so.3 with every symbol the
        # module asks for), or by the loader: the image has none (the distroless image), or an
        # older one (bookworm's 3.0 lacks OPENSSL_3.4.0, which the aarch64 _hashlib asks for).
        refused = (
            "python-fips: this tree's" in text
            or "libcrypto.so.3: cannot open" in text
            or ("libcrypto.so.3: version `OPENSSL_" in text and "not found" in text)
        )
        if not refused:
            raise Fail(f"failed, but not for want of the tree's libcrypto: {text}")
        return f"exit {result.returncode}: {text}"


@check("a corrupted fips.so makes hashing fail")
def corrupted_module():
    # A copy of the tree whose fips.so has one bit flipped while its fipsmodule.cnf keeps the
    # intact module's MAC (the copy's own python, unlike OPENSSL_MODULES, cannot be pointed at
    # another module; the row above is the intact control).
    with tempfile.TemporaryDirectory() as tmp:
        copy = tree_copy(os.path.join(tmp, "flipped"))
        module = os.path.join(copy, "lib", "ossl-modules", "fips.so")
        with open(module, "rb") as f:
            flipped = bytearray(f.read())
        at = len(flipped) // 2
        flipped[at] ^= 0x01
        os.chmod(module, 0o644)
        with open(module, "wb") as f:
            f.write(flipped)
        result = run_copy(copy, "import hashlib; print(hashlib.sha256(b'abc').hexdigest())")
    text = out(result)
    if result.returncode == 0 and SHA256_ABC in text:
        raise Fail(f"byte {at} flipped, yet sha256 still works: {last_line(text)}")
    return f"byte {at} flipped: exit {result.returncode}: {last_line(text)}"


def elf_rpaths(path):
    """(tag, string) of each DT_RPATH (15) and DT_RUNPATH (29) entry of a 64-bit little-endian
    ELF file, or None if `path` is not an ELF file."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise Fail(f"{path}: not a 64-bit little-endian ELF file, which this check cannot read")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    entries, strtab = [], None
    for at in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == 0:
            break
        if tag == 5:
            strtab = value
        elif tag in (15, 29):
            entries.append((tag, value))

    def offset(vaddr):
        for base, off, size in loads:
            if base <= vaddr < base + size:
                return off + vaddr - base
        raise Fail(f"{path}: string table outside its segments")

    out_ = []
    for tag, value in entries:
        start = offset(strtab) + value
        out_.append((tag, data[start:data.index(b"\0", start)].decode()))
    return out_


@check("every rpath is a DT_RPATH relative to the tree ($ORIGIN)")
def rpaths_relative():
    count, bad = 0, []
    for top, dirs, files in os.walk(PREFIX):
        # The tree's own files: wheels installed into site-packages bring their own rpaths, which
        # `cargo xtask audit` judges.
        dirs[:] = [d for d in dirs if d != "site-packages"]
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path) or not (name.endswith(".so") or ".so." in name
                                            or os.access(path, os.X_OK)):
                continue
            rpaths = elf_rpaths(path)
            if not rpaths:
                continue
            count += 1
            for tag, rpath in rpaths:
                # DT_RPATH: searched before LD_LIBRARY_PATH; DT_RUNPATH would come after it.
                if tag != 15 or any(not p.startswith("$ORIGIN") for p in rpath.split(":")):
                    kind = "RPATH" if tag == 15 else "RUNPATH"
                    bad.append(f"{os.path.relpath(path, PREFIX)}: {kind} {rpath}")
    if bad:
        raise Fail(f"{len(bad)} not $ORIGIN-relative DT_RPATH: " + "; ".join(bad[:5]))
    if count == 0:
        raise Fail("no ELF file has an rpath: python3 cannot find the tree's libraries")
    return f"{count} files, each a DT_RPATH relative to $ORIGIN"


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


def installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def loaded_by(path):
    """The libraries a fresh process maps after loading only `path`: what its own NEEDED entries
    resolve to, not what the checks' process loaded already."""
    probe = (
        "import ctypes, sys\n"
        "ctypes.CDLL(sys.argv[1])\n"
        "print(open('/proc/self/maps').read())\n"
    )
    result = run([sys.executable, "-S", "-I", "-c", probe, path])
    if result.returncode != 0:
        raise Fail(f"cannot load {path}: {last_line(out(result))}")
    fields = [line.split() for line in result.stdout.decode().splitlines()]
    return sorted({f[-1] for f in fields if len(f) >= 6 and f[-1].startswith("/") and ".so" in f[-1]})


# Rows for wheels built by `cargo xtask wheels`, present only when cryptography is installed.
if installed("cryptography"):

    @check("cryptography uses the tree's OpenSSL")
    def cryptography_openssl():
        from cryptography.hazmat.backends.openssl.backend import backend

        text = backend.openssl_version_text()
        if not text.startswith(f"OpenSSL {EXPECT_OPENSSL} "):
            raise Fail(f"{text}, expected OpenSSL {EXPECT_OPENSSL}")
        return text

    @check("cryptography FIPS mode on")
    def cryptography_fips():
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        if not rust_openssl.is_fips_enabled():
            raise Fail("rust_openssl.is_fips_enabled() is False")
        return "rust_openssl.is_fips_enabled() is True"

    @check("cryptography refuses MD5")
    def cryptography_md5_refused():
        from cryptography.hazmat.primitives import hashes

        how = refusal(lambda: hashes.Hash(hashes.MD5()))
        if how is None:
            raise Fail("hashes.Hash(hashes.MD5()) worked")
        return how

    @check("cryptography's libcrypto is the tree's")
    def cryptography_libcrypto():
        import cryptography.hazmat.bindings._rust as rust

        loaded = [p for p in loaded_by(rust.__file__)
                  if "/libcrypto" in p or "/libssl" in p]
        outside = [p for p in loaded if not p.startswith(PREFIX + "/lib/")]
        if not loaded or outside:
            raise Fail(f"{os.path.basename(rust.__file__)} loads {loaded or 'no libcrypto'}")
        return f"{os.path.basename(rust.__file__)} loads {', '.join(loaded)}"


# Rows for psycopg2 built by `cargo xtask wheels` against the libpq of the `libpq` stage.
if installed("psycopg2"):

    @check("psycopg2's libpq and libssl are the tree's")
    def psycopg2_libraries():
        import psycopg2._psycopg as ext

        loaded = loaded_by(ext.__file__)
        libpq = [p for p in loaded if os.path.basename(p).startswith("libpq.")]
        crypto = [p for p in loaded
                  if os.path.basename(p).startswith(("libssl.", "libcrypto."))]
        outside = [p for p in crypto if not p.startswith(PREFIX + "/lib/")]
        if len(libpq) != 1 or "/psycopg2.libs/" not in libpq[0]:
            raise Fail(f"{os.path.basename(ext.__file__)} loads {libpq or 'no libpq'}, not the "
                       "libpq bundled in psycopg2.libs")
        if len(crypto) != 2 or outside:
            raise Fail(f"{os.path.basename(ext.__file__)} loads {crypto}")
        return f"{os.path.basename(ext.__file__)} loads {', '.join(libpq + crypto)}"


# A TLS session to a real server, when the caller names one (`verify --postgres DSN`): libpq
# negotiates it through the tree's libssl, under the FIPS provider.
if os.environ.get("PYTHON_FIPS_POSTGRES"):

    @check("PostgreSQL TLS in FIPS mode")
    def postgres_tls():
        if not installed("psycopg2"):
            raise Fail("psycopg2 is not installed in this image; build it with `wheels --image "
                       "psycopg2`")
        import _hashlib
        import psycopg2

        try:
            conn = psycopg2.connect(os.environ["PYTHON_FIPS_POSTGRES"], sslmode="require",
                                    connect_timeout=10)
        except psycopg2.Error as e:
            raise Fail(f"cannot connect with sslmode=require: {str(e).strip()}")
        try:
            cur = conn.cursor()
            cur.execute("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl, version, cipher = cur.fetchone()
        finally:
            conn.close()
        if not ssl:
            raise Fail("the server says this session is not TLS")
        if _hashlib.get_fips_mode() != 1:
            raise Fail(f"{version} {cipher}, but the process is not in FIPS mode")
        return f"{version} {cipher}"


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
