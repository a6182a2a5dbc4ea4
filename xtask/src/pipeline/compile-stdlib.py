"""Compile the installed standard library to .pyc files, in parallel and reproducibly.

usage: python compile-stdlib.py LIBDEST JOBS

compileall's own -j hands each file to whichever worker is free, and what a worker compiled
before changes the bytes marshal writes (an object shared between code objects is written once
with a back-reference, else twice), so a parallel compileall gives different .pyc files from run
to run (seen: test_text.cpython-313.pyc held frozenset({'sel', 'a', 'b'}) inline twice in one
build and a reference in the other). Here the sorted list of sources is cut into a fixed number of contiguous parts, the same
whatever the number of cores, and each part is compiled in order by a fresh process of its own.
The same part therefore always gives the same bytes, and up to JOBS parts run at once.

With REUSE_DIR set (a directory carried from earlier runs, outside the stage's key), a part whose
stamp is found there is not compiled again: its .pyc files are unpacked instead. The stamp holds
everything a worker's output depends on: this script, the interpreter, the files of every module
a fresh worker has loaded when it starts compiling, the environment that matters, and each
source of the part by path and content. So a change to one standard library file recompiles one
part, and the bytes are those a compilation would have written.
"""

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tarfile

# Fixed, never derived from JOBS: the partition decides the output.
PARTS = 8
# What CPython's `make install` leaves out (files that must not compile, and site-packages).
EXCLUDE = re.compile(r"bad_coding|badsyntax|site-packages|lib2to3/tests/data")


def sources(libdest):
    found = []
    for dirpath, dirnames, filenames in os.walk(libdest):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(".py") and not EXCLUDE.search(path):
                found.append(path)
    return sorted(found)


def parts(files):
    size = -(-len(files) // PARTS)
    return [files[i : i + size] for i in range(0, len(files), size)]


def worker():
    import compileall

    ok = True
    for path in sys.stdin.read().splitlines():
        # As `make install` does: all three optimisation levels, rewritten even if present; the
        # invalidation mode follows SOURCE_DATE_EPOCH (checked hashes).
        ok = compileall.compile_file(path, force=True, quiet=1, optimize=[0, 1, 2]) and ok
    sys.exit(0 if ok else 1)


WORKER = [sys.executable, "-s", "-Wi", __file__, "--worker"]


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def loaded_files():
    """Print the files of the modules a fresh worker has loaded, and its search path."""
    import compileall  # noqa: F401  (what a worker imports before it compiles)

    names = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    print("\n".join(sorted(n for n in names if n)))
    print("\n".join(sys.path))


def worker_stamp():
    """What every part's output depends on besides its own sources."""
    h = hashlib.sha256()
    probe = subprocess.run(WORKER[:-1] + ["--loaded"], capture_output=True, check=True, text=True)
    for line in [__file__, os.path.realpath(sys.executable)] + probe.stdout.splitlines():
        h.update(line.encode() + b"\0")
        if os.path.isfile(line):
            h.update(file_digest(line).encode())
    for name in ("SOURCE_DATE_EPOCH", "PYTHONHASHSEED", "LC_ALL"):
        h.update(f"{name}={os.environ.get(name)}\0".encode())
    h.update(f"{PARTS}\0".encode())
    return h.hexdigest()


def outputs(path):
    for level in ("", 1, 2):
        pyc = importlib.util.cache_from_source(path, optimization=level)
        if os.path.exists(pyc):
            yield pyc


def main(libdest, jobs):
    pending = parts(sources(libdest))
    total = sum(len(p) for p in pending)
    count = len(pending)
    store = None
    if os.environ.get("REUSE_DIR"):
        store = os.path.join(os.environ["REUSE_DIR"], "pyc")
        os.makedirs(store, exist_ok=True)
        base = worker_stamp()
    stamps = {}
    for part in pending:
        if store:
            h = hashlib.sha256(base.encode())
            for path in part:
                h.update(f"{path}\0{file_digest(path)}\0".encode())
            stamps[id(part)] = os.path.join(store, h.hexdigest() + ".tar")
    reused = 0
    running = []
    failed = 0
    while pending or running:
        while pending and len(running) < jobs:
            part = pending.pop(0)
            kept = stamps.get(id(part))
            if kept and os.path.exists(kept):
                with tarfile.open(kept) as tar:
                    try:
                        tar.extractall(libdest, filter="data")
                    except TypeError:  # before 3.11.4 and 3.12: no filters (our own tar)
                        tar.extractall(libdest)
                reused += 1
                continue
            proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE)
            proc.stdin.write("".join(p + "\n" for p in part).encode())
            proc.stdin.close()
            running.append((proc, part))
        if not running:
            continue
        proc, part = running.pop(0)
        if proc.wait() != 0:
            failed += 1
        kept = stamps.get(id(part))
        if kept:
            with tarfile.open(kept + ".partial", "w") as tar:
                for path in part:
                    for pyc in outputs(path):
                        tar.add(pyc, arcname=os.path.relpath(pyc, libdest))
            os.replace(kept + ".partial", kept)
    if store:
        # Only this run's parts are kept: the store never outgrows one standard library.
        for name in os.listdir(store):
            if os.path.join(store, name) not in stamps.values():
                os.remove(os.path.join(store, name))
    # Like `make install`, a file that does not compile is not fatal (some test data is meant
    # not to); its errors are in the log above.
    print(
        f"{total} files in {count} parts, {jobs} at a time: {reused} parts reused, "
        f"{count - reused} compiled, {failed} reported errors"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    elif sys.argv[1:] == ["--loaded"]:
        loaded_files()
    else:
        main(sys.argv[1], max(1, int(sys.argv[2])))
