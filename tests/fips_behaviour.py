"""Behaviour checks for a python-fips interpreter (stdlib only).

Run it with the built interpreter:

    /opt/python-fips/bin/python3 tests/fips_behaviour.py              # FIPS mode
    /opt/python-fips/bin/python3 tests/fips_behaviour.py --non-fips   # non-FIPS mode

FIPS mode (the default) expects the installed OpenSSL configuration
(<prefix>/ssl/openssl.cnf: fips + base + default providers, default_properties
fips=yes) to be in force.  Some checks start the same interpreter again with a
configuration the script writes to a temporary directory: one without the FIPS
provider, one without the default provider, and one whose fips.so has a byte
flipped (loaded through OPENSSL_MODULES).

Non-FIPS mode (--non-fips, or FIPS_BEHAVIOUR_MODE=non-fips) checks that the
interpreter behaves like stock CPython when OpenSSL runs without the FIPS
provider.  If OPENSSL_CONF is not set, the script writes such a configuration
and runs itself again with OPENSSL_CONF pointing to it.

The installation prefix is /opt/python-fips unless FIPS_PREFIX says otherwise.
The script fails on an unpatched CPython built against the same OpenSSL.
"""

import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
import unittest
import uuid

PREFIX = os.environ.get("FIPS_PREFIX", "/opt/python-fips")
OPENSSL = os.path.join(PREFIX, "bin", "openssl")
FIPS_SO = os.path.join(PREFIX, "lib", "ossl-modules", "fips.so")
FIPSMODULE_CNF = os.path.join(PREFIX, "ssl", "fipsmodule.cnf")

NON_FIPS = ("--non-fips" in sys.argv[1:]
            or os.environ.get("FIPS_BEHAVIOUR_MODE", "").lower() in ("non-fips", "nonfips"))

# Known answers (FIPS 180-4 / FIPS 202 "abc" vectors, RFC 4231 case 2,
# RFC 1321, RFC 7693 appendix A, RFC 4122 appendix B).
ABC = b"abc"
KAT = {
    "sha224": "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "sha384": "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
              "8086072ba1e7cc2358baeca134c825a7",
    "sha512": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    "sha3_256": "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
    "sha3_512": "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e"
                "10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0",
}
SHAKE_KAT = {
    "shake_128": "5881092dd818bf5cf8a3ddb793fbcba74097d5c526a6d35f97b83351940f2cc8",
    "shake_256": "483366601360a8771c6863080cc4114d8db44530f8f1e1ee4f94ea37e78b5739",
}
HMAC_KEY, HMAC_MSG = b"Jefe", b"what do ya want for nothing?"
HMAC_SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
HMAC_SHA512 = ("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
               "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")
HMAC_MD5 = "750c783e6ab0b503eaa86e310a5db738"
# PBKDF2 parameters that satisfy the FIPS provider's lower bounds
# (salt >= 16 bytes, >= 1000 iterations, key >= 112 bits).
PBKDF2 = dict(hash_name="sha256", password=b"passwordPASSWORDpassword",
              salt=b"saltSALTsaltSALTsaltSALTsaltSALTsalt", iterations=4096, dklen=40)
PBKDF2_SHA256 = ("348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1"
                 "c635518c7dac47e9")
MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"
MD5_ABC = "900150983cd24fb0d6963f7d28e17f72"
BLAKE2B_ABC = ("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
               "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")
BLAKE2S_ABC = "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
UUID3_PYTHON_ORG = "6fa459ea-ee8a-3ca4-894e-db77e160355e"

NON_FIPS_CNF = """\
# fips_behaviour.py: OpenSSL without the FIPS provider
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
base = base_sect

[default_sect]
activate = 1

[base_sect]
activate = 1
"""

FIPS_ONLY_CNF = """\
# fips_behaviour.py: FIPS provider without the default provider
config_diagnostics = 1
openssl_conf = openssl_init

.include {fipsmodule}

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes
"""

FIPS_CNF = FIPS_ONLY_CNF.replace(
    "base = base_sect\n", "base = base_sect\ndefault = default_sect\n").replace(
    "[base_sect]\n", "[default_sect]\nactivate = 1\n\n[base_sect]\n")

# Run by a child interpreter: tries each operation and prints what happened.
PROBE = textwrap.dedent("""\
    import hashlib, hmac, json, ssl, sys
    import _hashlib

    def attempt(fn):
        try:
            fn()
            return "ok"
        except ValueError as exc:
            return "ValueError"
        except ssl.SSLError as exc:
            return "SSLError:" + str(exc)
        except Exception as exc:
            return type(exc).__name__ + ":" + str(exc)

    out = {
        "ssl_fips_mode": getattr(ssl, "FIPS_mode", lambda: None)(),
        "hashlib_fips_mode": _hashlib.get_fips_mode(),
        "sha256": attempt(lambda: hashlib.sha256(b"abc").hexdigest()),
        "new_sha256": attempt(lambda: hashlib.new("sha256", b"abc").hexdigest()),
        "sha512": attempt(lambda: hashlib.sha512(b"abc").hexdigest()),
        "sha3_256": attempt(lambda: hashlib.sha3_256(b"abc").hexdigest()),
        "md5": attempt(lambda: hashlib.md5(b"abc").hexdigest()),
        "new_md5": attempt(lambda: hashlib.new("md5", b"abc").hexdigest()),
        "blake2b": attempt(lambda: hashlib.blake2b(b"abc").hexdigest()),
        "blake2s": attempt(lambda: hashlib.blake2s(b"abc").hexdigest()),
        "new_blake2b": attempt(lambda: hashlib.new("blake2b", b"abc").hexdigest()),
        "hmac_sha256": attempt(lambda: hmac.new(b"k", b"m", "sha256").hexdigest()),
        "hmac_digest_sha256": attempt(lambda: hmac.digest(b"k", b"m", "sha256")),
        "hmac_md5": attempt(lambda: hmac.new(b"k", b"m", "md5").hexdigest()),
        "fips_mode_set_1": attempt(lambda: ssl.FIPS_mode_set(1)),
    }
    print(json.dumps(out))
    """)


def _run_child(code, env_updates, *extra_args):
    env = dict(os.environ)
    env.pop("OPENSSL_CONF_INCLUDE", None)
    env.update(env_updates)
    return subprocess.run([sys.executable, "-I", *extra_args, "-c", code], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)


def _probe(env_updates):
    proc = _run_child(PROBE, env_updates)
    if proc.returncode != 0:
        raise AssertionError(f"probe failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class TempDirMixin:
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fips-behaviour-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class KnownAnswers(unittest.TestCase):
    """Approved algorithms work and give correct results (both modes)."""

    def test_sha2_sha3(self):
        for name, want in KAT.items():
            with self.subTest(name=name):
                self.assertEqual(getattr(hashlib, name)(ABC).hexdigest(), want)
                self.assertEqual(hashlib.new(name, ABC).hexdigest(), want)

    def test_shake(self):
        for name, want in SHAKE_KAT.items():
            with self.subTest(name=name):
                self.assertEqual(getattr(hashlib, name)(ABC).hexdigest(32), want)

    def test_hmac_sha2(self):
        self.assertEqual(hmac.new(HMAC_KEY, HMAC_MSG, "sha256").hexdigest(), HMAC_SHA256)
        self.assertEqual(hmac.new(HMAC_KEY, HMAC_MSG, hashlib.sha256).hexdigest(),
                         HMAC_SHA256)
        self.assertEqual(hmac.digest(HMAC_KEY, HMAC_MSG, "sha512").hex(), HMAC_SHA512)

    def test_pbkdf2_hmac_sha256(self):
        self.assertEqual(hashlib.pbkdf2_hmac(**PBKDF2).hex(), PBKDF2_SHA256)

    def test_md5_not_for_security(self):
        self.assertEqual(hashlib.md5(b"", usedforsecurity=False).hexdigest(), MD5_EMPTY)
        self.assertEqual(hashlib.new("md5", ABC, usedforsecurity=False).hexdigest(),
                         MD5_ABC)
        self.assertEqual(str(uuid.uuid3(uuid.NAMESPACE_DNS, "python.org")),
                         UUID3_PYTHON_ORG)

    def test_blake2_not_for_security(self):
        self.assertEqual(hashlib.blake2b(ABC, usedforsecurity=False).hexdigest(),
                         BLAKE2B_ABC)
        self.assertEqual(hashlib.blake2s(ABC, usedforsecurity=False).hexdigest(),
                         BLAKE2S_ABC)
        self.assertEqual(
            hashlib.new("blake2b", ABC, usedforsecurity=False).hexdigest(), BLAKE2B_ABC)

    def test_builtin_hashes_not_built(self):
        # --with-builtin-hashlib-hashes=blake2: only _blake2 may exist.
        for mod in ("_md5", "_sha1", "_sha2", "_sha256", "_sha512", "_sha3"):
            with self.subTest(module=mod):
                with self.assertRaises(ImportError):
                    __import__(mod)

    def test_default_cipher_suites_from_openssl(self):
        # --with-ssl-default-suites=openssl: not Python's own cipher string.
        self.assertNotIn("ECDH+CHACHA20", ssl._DEFAULT_CIPHERS)


class TLS(TempDirMixin, unittest.TestCase):
    """TLS through in-memory BIOs with a certificate made by OpenSSL itself."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cert = os.path.join(cls.tmp, "cert.pem")
        cls.key = os.path.join(cls.tmp, "key.pem")
        subprocess.run(
            [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", cls.key, "-out", cls.cert, "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def contexts(self):
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(self.cert, self.key)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(self.cert)
        return client, server

    def handshake(self, client_ctx, server_ctx):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        done = {client: False, server: False}
        for _ in range(50):
            for obj in (client, server):
                if not done[obj]:
                    try:
                        obj.do_handshake()
                        done[obj] = True
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if all(done.values()):
                break
        self.assertTrue(all(done.values()), "handshake did not finish")
        client.write(b"ping")
        s_in.write(c_out.read())
        self.assertEqual(server.read(4), b"ping")
        return client

    def test_tls13_aes_gcm(self):
        client_ctx, server_ctx = self.contexts()
        client = self.handshake(client_ctx, server_ctx)
        self.assertEqual(client.version(), "TLSv1.3")
        self.assertIn(client.cipher()[0], ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"))

    @unittest.skipIf(NON_FIPS, "FIPS mode only")
    def test_md5_cipher_string_refused(self):
        with self.assertRaises(ssl.SSLError):
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers("MD5")

    def chacha_client(self):
        client_ctx, server_ctx = self.contexts()
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client_ctx.set_ciphers("ECDHE+CHACHA20")
        return client_ctx, server_ctx

    @unittest.skipIf(NON_FIPS, "FIPS mode only")
    def test_chacha20_only_client_gets_no_connection(self):
        try:
            client_ctx, server_ctx = self.chacha_client()
        except ssl.SSLError:
            return  # "No cipher can be selected": refused up front
        with self.assertRaises(ssl.SSLError):
            self.handshake(client_ctx, server_ctx)

    @unittest.skipUnless(NON_FIPS, "non-FIPS mode only")
    def test_chacha20_only_client_connects(self):
        client = self.handshake(*self.chacha_client())
        self.assertIn("CHACHA20", client.cipher()[0])


@unittest.skipIf(NON_FIPS, "FIPS mode only")
class FipsMode(TempDirMixin, unittest.TestCase):
    """Behaviour with the FIPS configuration in force."""

    def test_fips_mode_on(self):
        import _hashlib
        self.assertEqual(ssl.FIPS_mode(), 1)
        self.assertEqual(_hashlib.get_fips_mode(), ssl.FIPS_mode())

    def test_fips_mode_set_switches_default_properties(self):
        import _hashlib
        try:
            ssl.FIPS_mode_set(0)
            self.assertEqual(ssl.FIPS_mode(), 0)
            self.assertEqual(_hashlib.get_fips_mode(), 0)
            # The default provider is loaded too: MD5 is available again.
            self.assertEqual(hashlib.md5(ABC).hexdigest(), MD5_ABC)
            self.assertEqual(hmac.new(HMAC_KEY, HMAC_MSG, "md5").hexdigest(), HMAC_MD5)
        finally:
            ssl.FIPS_mode_set(1)
        self.assertEqual(ssl.FIPS_mode(), 1)
        self.assertEqual(_hashlib.get_fips_mode(), 1)
        # Digests fetched while FIPS mode was off must not stay usable from a cache.
        with self.assertRaises(ValueError):
            hashlib.md5(ABC)
        with self.assertRaises(ValueError):
            hashlib.new("md5", ABC)
        with self.assertRaises(ValueError):
            hmac.new(HMAC_KEY, HMAC_MSG, "md5")
        with self.assertRaises(ValueError):
            hmac.digest(HMAC_KEY, HMAC_MSG, "md5")

    def test_blake2_refused_after_runtime_fips_mode_set(self):
        # hashlib imported while FIPS mode was off, then FIPS mode turned on: the builtin
        # BLAKE2 constructors (and subclasses of them) must refuse all the same.
        code = textwrap.dedent("""\
            import ssl
            ssl.FIPS_mode_set(0)
            import hashlib, _blake2
            hashlib.blake2b(b"abc")
            ssl.FIPS_mode_set(1)
            try:
                Sub = type("Sub", (_blake2.blake2s,), {})
            except TypeError:
                Sub = _blake2.blake2s  # not subclassable before 3.14
            allowed = []
            for name, call in [("hashlib.blake2b", lambda: hashlib.blake2b(b"abc")),
                               ("hashlib.new", lambda: hashlib.new("blake2s", b"abc")),
                               ("_blake2.blake2b", lambda: _blake2.blake2b(b"abc")),
                               ("subclass", lambda: Sub(b"abc"))]:
                try:
                    call()
                    allowed.append(name)
                except ValueError:
                    pass
            Sub(b"abc", usedforsecurity=False)
            print("allowed:", allowed)
            raise SystemExit(1 if allowed else 0)
            """)
        proc = _run_child(code, {})
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    def test_md5_refused(self):
        for call in (lambda: hashlib.md5(), lambda: hashlib.md5(ABC),
                     lambda: hashlib.new("md5"), lambda: hashlib.new("MD5", ABC),
                     lambda: hashlib.md5(usedforsecurity=True)):
            with self.assertRaises(ValueError):
                call()

    def test_blake2_refused(self):
        for call in (lambda: hashlib.blake2b(), lambda: hashlib.blake2s(),
                     lambda: hashlib.blake2b(ABC), lambda: hashlib.new("blake2b"),
                     lambda: hashlib.new("blake2s", ABC)):
            with self.assertRaises(ValueError):
                call()

    def test_builtin_blake2_module_refuses(self):
        import _blake2
        for cons in (_blake2.blake2b, _blake2.blake2s):
            try:
                calls = (cons, type("Sub", (cons,), {}))
            except TypeError:
                calls = (cons,)  # not subclassable before 3.14
            for call in calls:
                with self.assertRaises(ValueError):
                    call(ABC)
                call(ABC, usedforsecurity=False)

    def test_builtin_hmac_module_not_a_fallback(self):
        # 3.14 has a builtin HMAC (_hmac, HACL*): it must not exist, or refuse MD5.
        try:
            import _hmac
        except ImportError:
            return
        for call in (lambda: _hmac.new(HMAC_KEY, HMAC_MSG, "md5"),
                     lambda: _hmac.compute_digest(HMAC_KEY, HMAC_MSG, "md5"),
                     lambda: _hmac.compute_md5(HMAC_KEY, HMAC_MSG)):
            with self.assertRaises((ValueError, AttributeError)):
                call()

    def test_pbkdf2_sp800_132_lower_bounds(self):
        good = dict(PBKDF2)
        for change in (dict(salt=b"salt"), dict(iterations=1), dict(dklen=8),
                       dict(salt=b"s" * 15), dict(iterations=999), dict(dklen=13)):
            with self.subTest(**{k: v for k, v in change.items()}):
                with self.assertRaises(ValueError):
                    hashlib.pbkdf2_hmac(**dict(good, **change))
        with self.assertRaises(ValueError):
            hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1, 8)
        # The bounds themselves are allowed.
        hashlib.pbkdf2_hmac("sha256", b"password", b"s" * 16, 1000, 14)

    def test_fips_mode_set_is_audited(self):
        code = textwrap.dedent("""\
            import ssl, sys
            events = []
            sys.addaudithook(lambda event, args: events.append([event, list(args)])
                             if event.startswith("ssl.FIPS") else None)
            ssl.FIPS_mode_set(1)
            print(events)
            """)
        proc = _run_child(code, {})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), "[['ssl.FIPS_mode_set', [1]]]")

    def test_import_hashlib_fails_loudly_without_hashlib(self):
        shadow = os.path.join(self.tmp, "shadow")
        os.makedirs(shadow, exist_ok=True)
        self.write("shadow/_hashlib.py", "raise ImportError('simulated: no libcrypto')\n")
        code = (f"import sys\nsys.path.insert(0, {shadow!r})\n"
                "try:\n    import hashlib\nexcept ImportError as e:\n    print('refused:', e)\n"
                "else:\n    raise SystemExit('hashlib imported without _hashlib')\n")
        proc = _run_child(code, {})
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("_hashlib", proc.stdout)
        # A deliberate block (CPython's own tests do this) stays quiet.
        code = "import sys\nsys.modules['_hashlib'] = None\nimport hashlib\n"
        proc = _run_child(code, {})
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_multiprocessing_authkey(self):
        # multiprocessing authenticates connections by HMAC (3.11: HMAC-MD5 unless patched).
        import threading
        from multiprocessing.connection import Client, Listener
        with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
            errors = []

            def serve():
                try:
                    with listener.accept() as conn:
                        conn.send(conn.recv())
                except Exception as exc:  # reported below
                    errors.append(exc)

            thread = threading.Thread(target=serve)
            thread.start()
            try:
                with Client(listener.address, authkey=b"secret") as client:
                    client.send("ping")
                    self.assertEqual(client.recv(), "ping")
            finally:
                thread.join(60)
            self.assertEqual(errors, [])

    def test_hmac_md5_refused(self):
        with self.assertRaises(ValueError):
            hmac.new(HMAC_KEY, HMAC_MSG, "md5")
        with self.assertRaises(ValueError):
            hmac.new(HMAC_KEY, HMAC_MSG, digestmod=hashlib.md5)
        with self.assertRaises(ValueError):
            hmac.digest(HMAC_KEY, HMAC_MSG, "md5")

    def test_hmac_needs_openssl_digest(self):
        # A digest that is not OpenSSL's is never run through the Python HMAC.
        with self.assertRaises(ValueError):
            hmac.new(HMAC_KEY, HMAC_MSG, digestmod=hashlib.blake2b)
        with self.assertRaises(ValueError):
            hmac.digest(HMAC_KEY, HMAC_MSG, "blake2b")

    def test_fips_mode_set_needs_fips_provider(self):
        cnf = self.write("non-fips.cnf", NON_FIPS_CNF)
        result = _probe({"OPENSSL_CONF": cnf})
        self.assertEqual(result["ssl_fips_mode"], 0)
        self.assertEqual(result["hashlib_fips_mode"], 0)
        self.assertTrue(result["fips_mode_set_1"].startswith("SSLError:"),
                        result["fips_mode_set_1"])
        # OpenSSL's own reason ("unsupported": no provider offers fips=yes).
        self.assertIn("unsupported", result["fips_mode_set_1"].lower())

    def test_non_fips_configuration_behaves_like_stock(self):
        cnf = self.write("non-fips.cnf", NON_FIPS_CNF)
        result = _probe({"OPENSSL_CONF": cnf})
        for key in ("sha256", "new_sha256", "md5", "new_md5", "blake2b", "blake2s",
                    "new_blake2b", "hmac_sha256", "hmac_md5"):
            self.assertEqual(result[key], "ok", key)

    def test_corrupt_fips_module_fails_closed(self):
        moddir = os.path.join(self.tmp, "modules")
        os.makedirs(moddir, exist_ok=True)
        corrupt = os.path.join(moddir, "fips.so")
        shutil.copyfile(FIPS_SO, corrupt)
        with open(corrupt, "r+b") as f:
            f.seek(os.path.getsize(corrupt) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        cnf = self.write("fips.cnf", FIPS_CNF.format(fipsmodule=FIPSMODULE_CNF))
        result = _probe({"OPENSSL_CONF": cnf, "OPENSSL_MODULES": moddir})
        for key in ("sha256", "new_sha256", "sha512", "sha3_256", "md5", "new_md5",
                    "blake2b", "blake2s", "new_blake2b", "hmac_sha256",
                    "hmac_digest_sha256", "hmac_md5"):
            self.assertEqual(result[key], "ValueError", f"{key}: {result[key]}")
        self.assertTrue(result["fips_mode_set_1"].startswith("SSLError:"),
                        result["fips_mode_set_1"])

    def test_import_is_quiet_without_default_provider(self):
        cnf = self.write("fips-only.cnf", FIPS_ONLY_CNF.format(fipsmodule=FIPSMODULE_CNF))
        code = ("import hashlib, hmac, ssl\n"
                "assert ssl.FIPS_mode() == 1\n"
                "assert hashlib.sha256(b'abc').hexdigest().startswith('ba7816bf')\n"
                "try:\n    hashlib.md5()\nexcept ValueError:\n    pass\n"
                "else:\n    raise SystemExit('md5 was not refused')\n")
        proc = _run_child(code, {"OPENSSL_CONF": cnf})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")


@unittest.skipUnless(NON_FIPS, "non-FIPS mode only")
class NonFipsMode(unittest.TestCase):
    """OpenSSL without the FIPS provider: stock CPython behaviour."""

    def test_fips_mode_off(self):
        import _hashlib
        self.assertEqual(ssl.FIPS_mode(), 0)
        self.assertEqual(_hashlib.get_fips_mode(), 0)

    def test_fips_mode_set_fails_without_provider(self):
        with self.assertRaises(ssl.SSLError) as cm:
            ssl.FIPS_mode_set(1)
        self.assertIn("unsupported", str(cm.exception).lower())
        self.assertEqual(ssl.FIPS_mode(), 0)
        ssl.FIPS_mode_set(0)
        self.assertEqual(ssl.FIPS_mode(), 0)

    def test_md5_blake2_work(self):
        self.assertEqual(hashlib.md5(ABC).hexdigest(), MD5_ABC)
        self.assertEqual(hashlib.new("md5", ABC).hexdigest(), MD5_ABC)
        self.assertEqual(hashlib.blake2b(ABC).hexdigest(), BLAKE2B_ABC)
        self.assertEqual(hashlib.blake2s(ABC).hexdigest(), BLAKE2S_ABC)
        self.assertEqual(hashlib.new("blake2b", ABC).hexdigest(), BLAKE2B_ABC)

    def test_hmac_md5_works(self):
        self.assertEqual(hmac.new(HMAC_KEY, HMAC_MSG, "md5").hexdigest(), HMAC_MD5)
        self.assertEqual(hmac.digest(HMAC_KEY, HMAC_MSG, "md5").hex(), HMAC_MD5)


def main():
    if NON_FIPS and not os.environ.get("OPENSSL_CONF"):
        # Write a configuration without the FIPS provider and run again with it.
        tmp = tempfile.mkdtemp(prefix="fips-behaviour-")
        try:
            cnf = os.path.join(tmp, "non-fips.cnf")
            with open(cnf, "w") as f:
                f.write(NON_FIPS_CNF)
            env = dict(os.environ, OPENSSL_CONF=cnf, FIPS_BEHAVIOUR_MODE="non-fips")
            args = [a for a in sys.argv[1:] if a != "--non-fips"]
            return subprocess.call([sys.executable, os.path.abspath(__file__), *args],
                                   env=env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--non-fips"]
    print(f"fips_behaviour: {'non-FIPS' if NON_FIPS else 'FIPS'} mode, "
          f"{sys.version.split()[0]}, {ssl.OPENSSL_VERSION}", file=sys.stderr)
    prog = unittest.main(argv=argv, exit=False, verbosity=2)
    result = prog.result
    # A test with failing subtests is one failed test, however many of its subtests failed.
    failed = len({getattr(test, "test_case", test).id()
                  for test, _ in result.failures + result.errors}
                 | {test.id() for test in result.unexpectedSuccesses})
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"fips_behaviour: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
