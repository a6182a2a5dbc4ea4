# Stage fips-provider: fips.so from the pinned provider release, configured as its security
# policy says (./Configure enable-fips); only the module is taken from this build.
cd /build
tar -xf "src/$PROVIDER_FILE"
cd "openssl-$PROVIDER_VERSION"
./Configure ${OPENSSL_TARGET:-} enable-fips
# The generated headers first, then the module alone: not libcrypto, apps or the legacy provider.
make -j"$JOBS" build_generated
make -j"$JOBS" providers/fips.so
mkdir -p "/out/python-fips/lib/ossl-modules"
cp providers/fips.so /out/python-fips/lib/ossl-modules/fips.so
