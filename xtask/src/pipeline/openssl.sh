# Stage openssl: libcrypto, libssl and the openssl command, installed under $PREFIX.
# With a separate FIPS provider the module is built by the fips-provider stage instead.
cd /build
tar -xf "src/$OPENSSL_FILE"
cd "openssl-$OPENSSL_VERSION"
# --libdir=lib: without it x86_64 installs into lib64 and CPython's --with-openssl silently
# finds the system OpenSSL. The rpath lets the openssl command find its own libraries.
./Configure $OPENSSL_CONFIGURE shared no-tests \
    --prefix="$PREFIX" --openssldir="$PREFIX/ssl" --libdir=lib "-Wl,-rpath,$PREFIX/lib"
make -j"$JOBS" build_sw
make install_sw $OPENSSL_INSTALL_EXTRA
"$PREFIX/bin/openssl" version -a
