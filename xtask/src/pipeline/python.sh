# Stage python: configure, build and install the patched CPython against the OpenSSL in $PREFIX.
. /build/ccache.sh
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

# configure's results are reused (from $REUSE_DIR, outside the key) when nothing it reads has
# changed: its arguments and environment, the OpenSSL it finds, the build interpreter, every path
# in the tree, and the content of every file but the C and Python sources, which it never reads
# (Misc/platform_triplet.c, which it preprocesses, excepted). Same inputs, same generated files:
# the reproducibility check, which starts without a reuse directory, compares.
configure_stamp() {
    {
        echo "$PREFIX $cross $PYTHON_SHARED $PYTHON_CONFIGURE ${CONFIG_SITE:-} ${PKG_CONFIG_LIBDIR:-}"
        if [ -n "${CONFIG_SITE:-}" ]; then cat "$CONFIG_SITE"; fi
        find "$PREFIX" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        if [ -n "${build_python:-}" ]; then sha256sum "$build_python/bin/python$PYTHON_MINOR"; fi
        find . -print | LC_ALL=C sort
        find . -type f ! -name '*.py' \( ! -name '*.c' -o -path ./Misc/platform_triplet.c \) -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
}
configured=""
if [ -n "${REUSE_DIR:-}" ]; then
    stamp=$(configure_stamp)
    configured="$REUSE_DIR/configure/$stamp.tar"
fi
if [ -n "$configured" ] && [ -f "$configured" ]; then
    # Touched on extraction: newer than every source, so make does not configure again.
    tar -xf "$configured" --touch
    echo "configure: reused the results of an earlier run with the same inputs ($stamp)"
else
    touch /build/before-configure
    ./configure --prefix="$PREFIX" --with-openssl="$PREFIX" --with-openssl-rpath=auto \
        $cross $PYTHON_SHARED $PYTHON_CONFIGURE LDFLAGS="-Wl,-rpath,$PREFIX/lib"
    if [ -n "$configured" ]; then
        # What configure wrote: every file newer than the mark. The three newest sets are kept.
        mkdir -p "$REUSE_DIR/configure"
        find . -type f -newer /build/before-configure -print0 | LC_ALL=C sort -z |
            tar -cf "$configured.partial" --null -T -
        mv "$configured.partial" "$configured"
        ls -t "$REUSE_DIR/configure"/*.tar | tail -n +4 | xargs -r rm -f
    fi
fi
make -j"$JOBS"
ccache_summary
# The standard library's .pyc files are compiled by compile-stdlib.py after the install, in
# fixed parts by separate processes (see there why compileall's -j is not reproducible). From
# 3.12 on, `make install` passes COMPILEALL_OPTS to its compileall runs, and --help makes them
# print their usage and compile nothing; 3.11's compiles with -j0 and is then overwritten.
make install COMPILEALL_OPTS=--help
if [ -n "${CROSS_HOST:-}" ]; then
    compile_python="$build_python/bin/python-for-build"
else
    compile_python="$PREFIX/bin/python3"
fi
"$compile_python" -s /build/compile-stdlib.py "$PREFIX/lib/python$PYTHON_MINOR" "$JOBS"

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
