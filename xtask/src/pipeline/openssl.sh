# Stage openssl: libcrypto, libssl and the openssl command, installed under $PREFIX.
# With a separate FIPS provider the module is built by the fips-provider stage instead.
cd /build
. /build/ccache.sh
tar -xf "src/$OPENSSL_FILE"
cd "$OPENSSL_SRC_DIR"
# The stage's own SOURCE_DATE_EPOCH (unless the recipe pins one): the newest time in its tarball,
# not the CPython release's, so one OpenSSL build serves every CPython release that pins it.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(find . -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
    export SOURCE_DATE_EPOCH
fi
# --libdir=lib: without it x86_64 installs into lib64 and CPython's --with-openssl silently
# finds the system OpenSSL. The rpath lets the openssl command find its own libraries.
# A cross build names the target and the toolchain (OPENSSL_TARGET, set only then).
./Configure ${OPENSSL_TARGET:-} $OPENSSL_CONFIGURE shared no-tests \
    --prefix="$PREFIX" --openssldir="$PREFIX/ssl" --libdir=lib "-Wl,-rpath,$PREFIX/lib"
# Shared libraries only: `LIBS=` and `INSTALL_LIBS=` leave out libcrypto.a and libssl.a, which a
# `shared` build would otherwise compile every source of a second time for. Nothing in the tree
# links them, and an extension that linked a static libcrypto would carry its own copy of OpenSSL,
# which `audit` refuses.
make -j"$JOBS" build_sw LIBS=
make install_sw LIBS= INSTALL_LIBS= $OPENSSL_INSTALL_EXTRA
ccache_summary
# A cross build never runs what it made: its openssl is for the target.
if [ -z "${CROSS_HOST:-}" ]; then
    "$PREFIX/bin/openssl" version -a
fi
