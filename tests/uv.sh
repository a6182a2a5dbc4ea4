#!/usr/bin/env bash
# Fetches what the uv channel test runs, pinned by sha256: uv itself (the real one, from PyPI's
# wheel, which carries the binary) and a pure-Python wheel to install into a uv venv.
# usage: tests/uv.sh DIR   (prints the path of the uv binary)
set -euo pipefail
dir=${1:?usage: tests/uv.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -x "$dir/uv" ] || [ ! -f "$dir/six-1.16.0-py2.py3-none-any.whl" ]; then
    cat > "$dir/requirements.txt" <<'REQ'
uv==0.13.9 --hash=sha256:d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19
six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
REQ
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        --platform manylinux2014_x86_64 --python-version 3.11 \
        -r "$dir/requirements.txt" -d "$dir" >&2
    python3 - "$dir" <<'PY'
import os, sys, zipfile
d = sys.argv[1]
wheel = next(f for f in os.listdir(d) if f.startswith("uv-0.13.9-") and f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(d, wheel)) as z:
    data = z.read("uv-0.13.9.data/scripts/uv")
with open(os.path.join(d, "uv.partial"), "wb") as f:
    f.write(data)
os.chmod(os.path.join(d, "uv.partial"), 0o755)
os.rename(os.path.join(d, "uv.partial"), os.path.join(d, "uv"))
PY
fi
"$dir/uv" --version >&2
echo "$dir/uv"
