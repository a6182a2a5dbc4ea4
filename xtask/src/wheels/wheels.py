"""python-fips wheels stages: lock a requirement set, then build exactly what the lock says.

Runs with the tree's own interpreter in a container of the wheels toolchain image.

MODE=lock (the `wheels-lock` stage) writes /out/wheels.lock:
1. resolve the requirements with pip (`install --dry-run --report`), asking for the requested
   projects as sdists; the report records each file and its sha256;
2. download those files, checked against the recorded sha256;
3. for each sdist, resolve its build requirements as wheels into a fresh venv: the static ones of
   its pyproject.toml (setuptools for a setup.py project), then what the backend's
   get_requires_for_build_wheel hook adds; each is recorded with its file and sha256 too.

MODE=build (the `wheels` stage) reads /build/wheels.lock and builds nothing else:
1. download every locked file with `--require-hashes`: pip refuses a file whose bytes changed;
2. for each sdist, in a fresh venv holding only its locked build requirements (again by hash):
   check the Rust toolchain against the package's `rust-version`, then build the wheel without
   build isolation, at a fixed path, with OPENSSL_DIR and an rpath pointing at the tree,
   SOURCE_DATE_EPOCH and path remapping; cargo runs `--locked` against the sdist's Cargo.lock,
   and offline when the sdist vendors its crates;
3. bundle the libraries a wheel links from /opt/libpq (the libpq built against the tree) into
   `<dist>.libs/` inside the wheel, with rpaths to them and to the tree;
4. write /out/lock.json: name, version, source file and its sha256, the wheel, built or not.

A failure prints `python-fips-wheels: FAILED <name> <version> at <step>: <cause>` and exits 1.
"""

import base64
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile

PREFIX = os.environ["PREFIX"]
MODE = os.environ["MODE"]
OUT = pathlib.Path("/out/wheels")
DOWNLOADS = pathlib.Path("/build/downloads")
SRC = pathlib.Path("/build/src")
ENVS = pathlib.Path("/build/envs")
LIBPQ = pathlib.Path("/opt/libpq")
PIP = ["-m", "pip", "--no-cache-dir", "--disable-pip-version-check"]
LOCK_FORMAT = 1
PIP_VERBS = {"install", "download", "wheel"}
# The `libpq` stage's pg_config, for the packages whose metadata and build ask it (psycopg2).
os.environ["PATH"] = f"{LIBPQ}/bin:{os.environ['PATH']}"


def say(text):
    print(f"python-fips-wheels: {text}", flush=True)


class Failed(Exception):
    """A step failed; `cause` is the line that says why."""

    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


def run(args, env=None, python=sys.executable):
    """Runs pip or another command, streaming its output, and raises Failed with the last line
    that reads like an error."""
    args = [python, *PIP, *args] if args[0] in PIP_VERBS else args
    say(" ".join(str(a) for a in args))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    tail = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        tail = (tail + [line.rstrip()])[-400:]
    if proc.wait() != 0:
        raise Failed(cause_of(tail) or f"{args[0]} exited with {proc.returncode}")


# pip's lines that say a build failed without saying why.
GENERIC = ("subprocess-exited-with-error", "metadata-generation-failed", "Encountered error while",
           "failed-wheel-build", "Failed building wheel", "Failed to build")


def cause_of(lines):
    """The line of a failed command's output that says why: the first error of cargo or a
    compiler, else the last Python exception, else the last line that mentions an error."""
    lines = [l.strip() for l in lines if not any(g in l for g in GENERIC)]
    compiler = [l for l in lines if re.match(r"error(\[E\d+\])?: ", l) or ": error: " in l]
    if compiler:
        return compiler[0]
    raised = [l for l in lines if re.match(r"[\w.]+(Error|Exception): ", l)]
    if raised:
        return raised[-1]
    errors = [l for l in lines if re.search(r"\berror\b", l, re.IGNORECASE)]
    return errors[-1] if errors else None


def step(entry, what, action):
    """Runs one step of one package; a failure names both and stops the stage."""
    try:
        return action()
    except Failed as e:
        fail(entry, what, e.cause)


def fail(entry, what, cause):
    say(f"FAILED {entry['name']} {entry['version']} at {what}: {cause}")
    sys.exit(1)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requested_names(lines):
    from pip._vendor.packaging.requirements import Requirement

    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(canonical(Requirement(line).name))
    return names


def sha256_of(item):
    info = item["download_info"].get("archive_info", {})
    hashes = info.get("hashes", {})
    if "sha256" in hashes:
        return hashes["sha256"]
    if info.get("hash", "").startswith("sha256="):
        return info["hash"][len("sha256="):]
    return None


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entries_of(report_path):
    """The files a pip report says it would install: name, version, file, sha256."""
    report = json.loads(pathlib.Path(report_path).read_text())
    out = []
    for item in report["install"]:
        meta = item["metadata"]
        url = item["download_info"]["url"]
        sha256 = sha256_of(item)
        if sha256 is None:
            raise Failed(f"pip recorded no sha256 for {url}; cannot lock it")
        out.append({"name": canonical(meta["name"]), "version": meta["version"],
                    "file": url.rsplit("/", 1)[-1].split("#")[0], "sha256": sha256})
    return sorted(out, key=lambda e: e["name"])


def unpack(archive):
    """Unpacks an sdist into a fresh /build/src and returns its top directory."""
    shutil.rmtree(SRC, ignore_errors=True)
    SRC.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            top = z.namelist()[0].split("/")[0]
            z.extractall(SRC)
    else:
        with tarfile.open(archive) as t:
            top = t.getnames()[0].split("/")[0]
            t.extractall(SRC, filter="data")
    return SRC / top


def links():
    dirs = sorted(str(p) for p in pathlib.Path("/build/find-links").glob("*"))
    return [a for d in dirs for a in ("--find-links", d)]


def hashed_lines(entries):
    return "".join(f"{e['name']}=={e['version']} --hash=sha256:{e['sha256']}\n" for e in entries)


def build_system(tree):
    """The static build requirements, backend and backend path of an sdist (PEP 517/518)."""
    pyproject = tree / "pyproject.toml"
    table = {}
    if pyproject.is_file():
        table = tomllib.loads(pyproject.read_text()).get("build-system", {})
    if "build-backend" not in table:
        return (table.get("requires", ["setuptools>=40.8.0"]),
                "setuptools.build_meta:__legacy__", None)
    return table.get("requires", []), table["build-backend"], table.get("backend-path")


def fresh_env(name):
    venv = ENVS / name
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    return venv / "bin" / "python"


def lock_build_requirements(entry, tree):
    """Resolves an sdist's build requirements as wheels into a fresh venv and returns them."""
    from pip._vendor.pyproject_hooks import BuildBackendHookCaller

    requires, backend, backend_path = build_system(tree)
    python = fresh_env(entry["name"])
    report = ENVS / f"{entry['name']}.json"
    install = ["install", "--ignore-installed", "--only-binary", ":all:", "--report", str(report),
               "--quiet", *links()]
    if requires:
        run([*install, *requires], python=python)
    caller = BuildBackendHookCaller(str(tree), backend, backend_path=backend_path,
                                    python_executable=str(python))
    added = caller.get_requires_for_build_wheel({})
    if added:
        run([*install, *requires, *added], python=python)
    if not requires and not added:
        return []
    return [dict(e, build=False) for e in entries_of(report)]


def lock():
    requirements = [l.strip() for l in pathlib.Path("/build/requirements.in").read_text().splitlines()
                    if l.strip()]
    names = requested_names(requirements)
    if not names:
        sys.exit("no requirements given")
    no_binary = ["--no-binary", ",".join(names)]
    top = {"name": "the requirements", "version": "set"}
    step(top, "resolving", lambda: run(["install", "--dry-run", "--ignore-installed", "--quiet",
                                        "--report", "/build/report.json", *no_binary, *links(),
                                        "--requirement", "/build/requirements.in"]))
    packages = step(top, "resolving", lambda: entries_of("/build/report.json"))
    pathlib.Path("/build/lock.txt").write_text(hashed_lines(packages))
    step(top, "downloading", lambda: run(["download", "--no-deps", "--require-hashes", "--dest",
                                          str(DOWNLOADS), *no_binary, *links(),
                                          "--requirement", "/build/lock.txt"]))
    for entry in packages:
        entry["build"] = not entry["file"].endswith(".whl")
        if entry["build"]:
            tree = unpack(DOWNLOADS / entry["file"])
            entry["build_requires"] = step(entry, "locking its build requirements",
                                           lambda: lock_build_requirements(entry, tree))
    locked = {
        "python-fips-wheels-lock": LOCK_FORMAT,
        "python": platform.python_version(),
        "arch": platform.machine(),
        "requirements": requirements,
        "packages": packages,
    }
    pathlib.Path("/out").mkdir(exist_ok=True)
    pathlib.Path("/out/wheels.lock").write_text(json.dumps(locked, indent=2, sort_keys=True) + "\n")
    for e in packages:
        extra = f", {len(e['build_requires'])} build requirements" if e["build"] else ""
        say(f"locked {e['name']} {e['version']} ({e['file']}{extra})")


def version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def rust_needed(tree):
    """The highest `rust-version` any Cargo.toml of the sdist asks for, with that file."""
    best = None
    for manifest in sorted(tree.rglob("Cargo.toml")):
        if {"vendor", "target"} & set(manifest.relative_to(tree).parts):
            continue
        data = tomllib.loads(manifest.read_text())
        wanted = (data.get("package", {}).get("rust-version")
                  or data.get("workspace", {}).get("package", {}).get("rust-version"))
        if isinstance(wanted, str) and (best is None or version_tuple(wanted) > version_tuple(best[0])):
            best = (wanted, manifest.relative_to(tree))
    return best


def check_rust(tree):
    needed = rust_needed(tree)
    if needed is None:
        return
    wanted, manifest = needed
    rustc = shutil.which("rustc")
    if rustc is None:
        raise Failed(f"it needs Rust {wanted} or newer (rust-version in {manifest}) and the "
                     "wheels toolchain image has no rustc; add one to the recipe's [wheels] packages")
    text = subprocess.run([rustc, "--version"], capture_output=True, text=True).stdout.strip()
    if version_tuple(text.split()[1] if len(text.split()) > 1 else "0") < version_tuple(wanted):
        raise Failed(f"it needs Rust {wanted} or newer (rust-version in {manifest}), and the "
                     f"recipe's toolchain has {text}; lock an older release of the package, or "
                     "give the recipe's [wheels] a newer Rust")
    say(f"Rust: {manifest} asks for {wanted}; {text}")


def cargo_env(tree, env):
    """cargo stays on the sdist's Cargo.lock, and offline when the sdist vendors its crates."""
    env = dict(env)
    if any(tree.rglob("Cargo.lock")):
        env["MATURIN_PEP517_ARGS"] = "--locked"
    configs = list(tree.rglob(".cargo/config.toml")) + list(tree.rglob(".cargo/config"))
    if any("vendored-sources" in c.read_text(errors="replace") for c in configs):
        env["CARGO_NET_OFFLINE"] = "true"
        say("the sdist vendors its crates: cargo runs offline")
    return env


def needed_of(path):
    out = subprocess.run(["patchelf", "--print-needed", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise Failed(f"patchelf cannot read {path.name}: {out.stderr.strip()}")
    return out.stdout.split()


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def bundle(wheel):
    """Copies the libraries the wheel's ELF members link from /opt/libpq/lib into the wheel,
    points the members' rpath at them (then the tree) and theirs at the tree; rewrites RECORD
    and the archive with fixed times. Returns the bundled sonames."""
    libdir = LIBPQ / "lib"
    if not libdir.is_dir():
        return []
    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        data = {i.filename: z.read(i.filename) for i in infos}
    work = pathlib.Path(tempfile.mkdtemp(dir="/build"))
    elves, wanted = {}, set()
    for name, body in data.items():
        if body[:4] == b"\x7fELF":
            path = work / name.replace("/", "__")
            path.write_bytes(body)
            elves[name] = path
            wanted |= {n for n in needed_of(path) if (libdir / n).exists()}
    if not wanted:
        return []
    dist = wheel.name.split("-")[0]
    libs = f"{dist}.libs"
    added = {}
    for soname in sorted(wanted):
        path = work / soname
        shutil.copyfile(os.path.realpath(libdir / soname), path)
        run(["patchelf", "--set-rpath", f"{PREFIX}/lib", str(path)])
        added[f"{libs}/{soname}"] = path.read_bytes()
    for name, path in elves.items():
        if set(needed_of(path)) & wanted:
            rel = os.path.relpath(libs, os.path.dirname(name) or ".")
            run(["patchelf", "--set-rpath", f"$ORIGIN/{rel}:{PREFIX}/lib", str(path)])
            data[name] = path.read_bytes()
    shutil.rmtree(work)
    record = next(n for n in data if n.endswith(".dist-info/RECORD"))
    names = [n for n in data if n != record] + sorted(added)
    data.update(added)
    data[record] = "".join(record_line(n, data[n]) for n in names).encode() + f"{record},,\n".encode()
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)
    stamp = time.gmtime(epoch)[:6]
    modes = {i.filename: i.external_attr for i in infos}
    body_first = [n for n in names if ".dist-info/" not in n] + [n for n in names if ".dist-info/" in n]
    tmp = wheel.with_suffix(".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in body_first + [record]:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = modes.get(name, 0o755 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data[name])
    tmp.replace(wheel)
    return sorted(wanted)


def build_env():
    lib = f"{PREFIX}/lib"
    env = dict(os.environ)
    env.update({
        "OPENSSL_DIR": PREFIX,
        "OPENSSL_LIB_DIR": lib,
        "OPENSSL_INCLUDE_DIR": f"{PREFIX}/include",
        "OPENSSL_STATIC": "0",
        "CARGO_HOME": "/build/cargo",
        "CARGO_NET_RETRY": "5",
        "RUSTFLAGS": f"-C link-arg=-Wl,-rpath,{lib} --remap-path-prefix=/build/cargo=/cargo "
                     "--remap-path-prefix=/build/src=/src",
        "CPPFLAGS": f"-I{PREFIX}/include",
        "CFLAGS": "-ffile-prefix-map=/build/src=/src",
        "LDFLAGS": f"-L{lib} -Wl,-rpath,{lib}",
        "PYTHONHASHSEED": "0",
        # grpcio links the OpenSSL the flags above name (the tree's) instead of its BoringSSL.
        "GRPC_PYTHON_BUILD_SYSTEM_OPENSSL": "1",
    })
    return env


def build_one(entry, env):
    """Builds one locked sdist into OUT and returns the wheel's file name."""
    tree = unpack(DOWNLOADS / entry["file"])
    say(f"building {entry['name']} {entry['version']} from {entry['file']}")
    python = step(entry, "making its build environment", lambda: fresh_env(entry["name"]))
    requires = ENVS / f"{entry['name']}.txt"
    requires.write_text(hashed_lines(entry.get("build_requires", [])))
    if entry.get("build_requires"):
        step(entry, "installing its locked build requirements",
             lambda: run(["install", "--no-deps", "--require-hashes", "--only-binary", ":all:",
                          *links(), "--requirement", str(requires)], python=python))
    step(entry, "checking the Rust toolchain", lambda: check_rust(tree))
    before = set(OUT.iterdir())
    # The backend runs tools of its venv by name (maturin): that venv's bin comes first.
    env = dict(env, PATH=f"{python.parent}:{env['PATH']}", VIRTUAL_ENV=str(python.parent.parent))
    step(entry, "building the wheel",
         lambda: run(["wheel", "--no-deps", "--no-build-isolation", "--no-index",
                      "--wheel-dir", str(OUT), str(tree)], env=cargo_env(tree, env), python=python))
    made = sorted(p for p in set(OUT.iterdir()) - before)
    if len(made) != 1:
        fail(entry, "building the wheel", f"it made {[p.name for p in made]}, not one wheel")
    bundled = step(entry, "bundling the libraries it links", lambda: bundle(made[0]))
    if bundled:
        say(f"bundled {', '.join(bundled)} into {made[0].name}")
    return made[0].name


def build():
    locked = json.loads(pathlib.Path("/build/wheels.lock").read_text())
    packages = locked["packages"]
    built = sorted(e["name"] for e in packages if e["build"])
    kept = sorted(e["name"] for e in packages if not e["build"])
    pathlib.Path("/build/lock.txt").write_text(hashed_lines(packages))
    binary = (["--no-binary", ",".join(built)] if built else []) + \
        (["--only-binary", ",".join(kept)] if kept else [])
    top = {"name": "the locked set", "version": f"({len(packages)} files)"}
    step(top, "downloading", lambda: run(["download", "--no-deps", "--require-hashes", "--dest",
                                          str(DOWNLOADS), *binary, *links(),
                                          "--requirement", "/build/lock.txt"]))
    OUT.mkdir(parents=True, exist_ok=True)
    env = build_env()
    record = []
    for entry in packages:
        archive = DOWNLOADS / entry["file"]
        if not archive.is_file() or file_sha256(archive) != entry["sha256"]:
            fail(entry, "downloading", f"{entry['file']} is missing or is not the locked file")
        if entry["build"]:
            wheel = build_one(entry, env)
        else:
            shutil.copy(archive, OUT / archive.name)
            wheel = archive.name
        record.append({"name": entry["name"], "version": entry["version"], "file": entry["file"],
                       "sha256": entry["sha256"], "wheel": wheel, "built": entry["build"]})
    pathlib.Path("/out/lock.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    for e in record:
        say(f"{'built' if e['built'] else 'kept '} {e['wheel']}")


if __name__ == "__main__":
    {"lock": lock, "build": build}[MODE]()
