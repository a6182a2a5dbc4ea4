"""python-fips wheels stage: build the requested packages from source against the tree's OpenSSL.

Runs with the tree's own interpreter in a container of the wheels toolchain image. Steps:
1. resolve the requirements with pip (`install --dry-run --report`), asking for the requested
   projects as sdists; the report records each file's sha256;
2. download exactly those files again with `--require-hashes`, so pip checks every byte against
   the hashes it recorded;
3. unpack each sdist at a fixed path (/build/src) and build its wheel there, with OPENSSL_DIR and
   an rpath pointing at the tree, SOURCE_DATE_EPOCH and path remapping for reproducibility;
   dependencies that the index serves as wheels are kept as they are (the audit reads them too);
4. write /out/lock.json: name, version, source file and its sha256, the wheel, built or not.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

PREFIX = os.environ["PREFIX"]
OUT = pathlib.Path("/out/wheels")
DOWNLOADS = pathlib.Path("/build/downloads")
SRC = pathlib.Path("/build/src")
PIP = [sys.executable, "-m", "pip", "--no-cache-dir", "--disable-pip-version-check"]


def say(text):
    print(f"python-fips-wheels: {text}", flush=True)


def pip(*args, env=None):
    say("pip " + " ".join(args))
    subprocess.run([*PIP, *args], check=True, env=env)


def canonical(name):
    return "".join("-" if c in "_." else c for c in name.lower())


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


def unpack(archive):
    """Unpacks an sdist into /build/src and returns its top directory."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            top = z.namelist()[0].split("/")[0]
            z.extractall(SRC)
    else:
        with tarfile.open(archive) as t:
            top = t.getnames()[0].split("/")[0]
            t.extractall(SRC, filter="data")
    return SRC / top


def main():
    requirements = pathlib.Path("/build/requirements.in").read_text().splitlines()
    names = requested_names(requirements)
    if not names:
        sys.exit("no requirements given")
    no_binary = ["--no-binary", ",".join(names)]
    find_links = sorted(str(p) for p in pathlib.Path("/build/find-links").glob("*"))
    links = [a for d in find_links for a in ("--find-links", d)]

    # 1. Resolve; pip records where each file comes from and its sha256.
    pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", "/build/report.json",
        *no_binary, *links, "--requirement", "/build/requirements.in")
    report = json.loads(pathlib.Path("/build/report.json").read_text())
    lock = []
    for item in report["install"]:
        meta = item["metadata"]
        url = item["download_info"]["url"]
        sha256 = sha256_of(item)
        if sha256 is None:
            sys.exit(f"pip recorded no sha256 for {url}; cannot verify it")
        lock.append({"name": canonical(meta["name"]), "version": meta["version"],
                     "file": url.rsplit("/", 1)[-1].split("#")[0], "sha256": sha256})

    # 2. Download exactly those files; pip refuses any whose sha256 differs.
    locked = "".join(f"{e['name']}=={e['version']} --hash=sha256:{e['sha256']}\n" for e in lock)
    pathlib.Path("/build/lock.txt").write_text(locked)
    pip("download", "--no-deps", "--require-hashes", "--dest", str(DOWNLOADS), *no_binary, *links,
        "--requirement", "/build/lock.txt")

    # 3. Build each sdist at a fixed path; keep the wheels as they came.
    env = dict(os.environ)
    lib = f"{PREFIX}/lib"
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
    })
    OUT.mkdir(parents=True, exist_ok=True)
    SRC.mkdir(parents=True, exist_ok=True)
    by_file = {e["file"]: e for e in lock}
    for archive in sorted(DOWNLOADS.iterdir()):
        entry = by_file.get(archive.name)
        if entry is None:
            sys.exit(f"pip downloaded {archive.name}, which the resolution did not name")
        if archive.name.endswith(".whl"):
            shutil.copy(archive, OUT / archive.name)
            entry.update(wheel=archive.name, built=False)
            continue
        tree = unpack(archive)
        before = set(OUT.iterdir())
        say(f"building {entry['name']} {entry['version']} from {archive.name}")
        try:
            pip("wheel", "--no-deps", "--wheel-dir", str(OUT), *links, str(tree), env=env)
        except subprocess.CalledProcessError:
            say(f"FAILED building {entry['name']} {entry['version']}")
            raise
        made = sorted(p.name for p in set(OUT.iterdir()) - before)
        if len(made) != 1:
            sys.exit(f"building {archive.name} made {made}, not one wheel")
        entry.update(wheel=made[0], built=True)
    pathlib.Path("/out/lock.json").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    for e in lock:
        say(f"{'built' if e['built'] else 'kept '} {e['wheel']}")


if __name__ == "__main__":
    main()
