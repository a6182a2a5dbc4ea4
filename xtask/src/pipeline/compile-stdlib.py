"""Compile the installed standard library to .pyc files, in parallel and reproducibly.

usage: python compile-stdlib.py LIBDEST JOBS

compileall's own -j hands each file to whichever worker is free, and what a worker compiled
before changes the bytes marshal writes (an object shared between code objects is written once
with a back-reference, else twice), so a parallel compileall gives different .pyc files from run
to run (seen: test_text.cpython-313.pyc held frozenset({'sel', 'a', 'b'}) inline twice in one
build and a reference in the other). Here the sorted list of sources is cut into a fixed number of contiguous parts, the same
whatever the number of cores, and each part is compiled in order by a fresh process of its own.
The same part therefore always gives the same bytes, and up to JOBS parts run at once.
"""

import os
import re
import subprocess
import sys

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


def main(libdest, jobs):
    pending = parts(sources(libdest))
    total = sum(len(p) for p in pending)
    running = []
    failed = 0
    while pending or running:
        while pending and len(running) < jobs:
            part = pending.pop(0)
            proc = subprocess.Popen(
                [sys.executable, "-s", "-Wi", __file__, "--worker"],
                stdin=subprocess.PIPE,
            )
            proc.stdin.write("".join(p + "\n" for p in part).encode())
            proc.stdin.close()
            running.append(proc)
        proc = running.pop(0)
        if proc.wait() != 0:
            failed += 1
    # Like `make install`, a file that does not compile is not fatal (some test data is meant
    # not to); its errors are in the log above.
    print(f"compiled {total} files in {PARTS} parts, {jobs} at a time; {failed} parts reported errors")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main(sys.argv[1], max(1, int(sys.argv[2])))
