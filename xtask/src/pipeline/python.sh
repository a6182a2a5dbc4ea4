# Stage python: configure, build and install the patched CPython against the OpenSSL in $PREFIX.
cd "/build/src/Python-$PYTHON_VERSION"
# Every Python the build runs (compileall, ensurepip) hashes strings the same way every time, so
# no set or dict order that depends on a random seed can reach a generated file.
export PYTHONHASHSEED=0
cross=""
if [ -n "${CROSS_HOST:-}" ]; then
    # A cross build runs its Python steps (freezing, compileall, ensurepip) with a native
    # interpreter of the same version: the native build's python stage, unpacked away from
    # $PREFIX, which holds the target's OpenSSL. Its extension modules find the native libcrypto
    # through LD_LIBRARY_PATH (the loader skips the target's libraries in their rpath).
    build_python=/opt/build-python
    mkdir -p "$build_python"
    tar -xf /build/build-python.tar -C "$build_python" --strip-components=1
    cat > "$build_python/bin/python-for-build" <<SH
#!/bin/sh
LD_LIBRARY_PATH=$build_python/lib exec $build_python/bin/python$PYTHON_MINOR "\$@"
SH
    chmod +x "$build_python/bin/python-for-build"
    # What configure cannot probe without running target code, as it is on glibc Linux.
    cat > /build/config.site <<SITE
ac_cv_file__dev_ptmx=yes
ac_cv_file__dev_ptc=no
ac_cv_buggy_getaddrinfo=no
SITE
    export CONFIG_SITE=/build/config.site
    # The target's .pc files only, never the build machine's.
    export PKG_CONFIG_LIBDIR="/usr/lib/$CROSS_HOST/pkgconfig:/usr/share/pkgconfig"
    cross="--build=$CROSS_BUILD --host=$CROSS_HOST --with-build-python=$build_python/bin/python-for-build"
fi
./configure --prefix="$PREFIX" --with-openssl="$PREFIX" --with-openssl-rpath=auto \
    $cross $PYTHON_SHARED $PYTHON_CONFIGURE LDFLAGS="-Wl,-rpath,$PREFIX/lib"
make -j"$JOBS"
# One process compiles the .pyc files, in compileall's sorted order. With the default -j0, which
# worker compiles a file, and so what that worker had interned before, varies from run to run;
# marshal writes an object shared between code objects once with a back-reference, else twice,
# so the same source gave two different .pyc files (test_text.cpython-313.pyc: frozenset({'sel',
# 'a', 'b'}) inline twice in one build, a reference in the other).
make install COMPILEALL_OPTS=-j1

# The failure users hit most: _ssl or _hashlib missing, or linked against another OpenSSL.
dynload="$PREFIX/lib/python$PYTHON_MINOR/lib-dynload"
for module in _ssl _hashlib; do
    so=$(ls "$dynload/$module".*.so 2>/dev/null | head -n 1)
    if [ -z "$so" ]; then
        echo "error: the $module module was not built; see 'Could not build the ssl module' above" >&2
        exit 1
    fi
    if [ -n "${CROSS_HOST:-}" ]; then
        # ldd cannot load a target binary: read what it needs and where it looks instead.
        "$CROSS_HOST-readelf" --file-header --dynamic "$so"
        if ! "$CROSS_HOST-readelf" --dynamic "$so" | grep -q "Shared library: \[libcrypto.so"; then
            echo "error: $module does not link libcrypto" >&2
            exit 1
        fi
        if ! "$CROSS_HOST-readelf" --dynamic "$so" | grep -E "R(UN)?PATH" | grep -q "$PREFIX/lib"; then
            echo "error: $module does not look for libcrypto in $PREFIX/lib" >&2
            exit 1
        fi
        continue
    fi
    ldd "$so"
    if ! ldd "$so" | grep -q "libcrypto.so.* => $PREFIX/lib/libcrypto.so"; then
        echo "error: $module does not load libcrypto from $PREFIX/lib" >&2
        exit 1
    fi
    if ldd "$so" | grep -E 'lib(ssl|crypto)\.so' | grep -v "=> $PREFIX/lib/"; then
        echo "error: $module links an OpenSSL outside $PREFIX (lines above)" >&2
        exit 1
    fi
done
if [ -z "${CROSS_HOST:-}" ]; then
    "$PREFIX/bin/python3" -c 'import ssl, _hashlib; print(ssl.OPENSSL_VERSION)'
fi
