# Carried into the finalize stage of a cross build: installs the pip that CPython bundles into
# $PREFIX. The python stage's `make install` cannot: its ensurepip runs pip with the build
# interpreter, whose own pip answers "Requirement already satisfied", and whose install scheme is
# the build interpreter's prefix. Here pip installs into --prefix and, as CPython's own cross
# `make install` does, reads the target's sysconfig data, so the scripts' shebang is
# $PREFIX/bin/python$PYTHON_MINOR.
build_python=/opt/build-python
mkdir -p "$build_python"
tar -xf /build/build-python.tar -C "$build_python" --strip-components=1
# sysconfig counts a directory holding Modules/Setup.local as a CPython build tree, and then takes
# BINDIR from the sysconfig data named below: the target's, as installed.
mkdir -p /build/project/Modules
: > /build/project/Modules/Setup.local
lib="$PREFIX/lib/python$PYTHON_MINOR"
data=$(cd "$lib" && ls _sysconfigdata_*.py | head -n 1)
# ENSUREPIP_OPTIONS=install: pip then makes pip3 and pip3.13 but no plain pip, as ensurepip does.
env LD_LIBRARY_PATH="$build_python/lib" PIP_CONFIG_FILE=/dev/null PYTHONHASHSEED=0 \
    ENSUREPIP_OPTIONS=install \
    _PYTHON_PROJECT_BASE=/build/project _PYTHON_HOST_PLATFORM="linux-${CROSS_HOST%%-*}" \
    _PYTHON_SYSCONFIGDATA_NAME="${data%.py}" _PYTHON_SYSCONFIGDATA_PATH="$lib" \
    "$build_python/bin/python$PYTHON_MINOR" -m pip install --no-cache-dir --no-index \
    --find-links "$lib/ensurepip/_bundled" --prefix "$PREFIX" --ignore-installed \
    --no-warn-script-location --disable-pip-version-check --root-user-action=ignore pip
head -n 1 "$PREFIX/bin/pip3"
