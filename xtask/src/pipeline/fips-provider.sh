# Stage fips-provider: fips.so from the pinned provider release, configured as its security
# policy says (./Configure enable-fips); only the module is taken from this build (and, below,
# from a second build of the same release, its own `openssl` command for fipsinstall).
cd /build
. /build/ccache.sh
tar -xf "src/$PROVIDER_FILE"
cd "$PROVIDER_SRC_DIR"
# The stage's own SOURCE_DATE_EPOCH (unless the recipe pins one), from the provider's tarball:
# its newest file. Not its directories: an archive without directory entries (a .crate) leaves
# them with the time of extraction, which would put today's date into the build.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(find . -type f -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
    export SOURCE_DATE_EPOCH
fi
./Configure ${OPENSSL_TARGET:-} enable-fips
# The generated headers first, then the module alone: not libcrypto, apps or the legacy provider.
make -j"$JOBS" build_generated
make -j"$JOBS" providers/fips.so
mkdir -p "/out/python-fips/lib/ossl-modules"
cp providers/fips.so /out/python-fips/lib/ossl-modules/fips.so

# The provider release's own `openssl`, for `fipsinstall` only: OpenSSL recommends running
# fipsinstall from the provider's release, and from 3.1 on it no longer writes the install-status
# fields a 3.0.x provider's security policy expects (openssl/openssl#23400). Built statically in a
# second copy of the sources, so it carries its own libcrypto and never meets the tree's libcrypto
# of another release (same soname); python-fips-setup prefers it to bin/openssl.
mkdir -p /build/fipsinstall-app
tar -xf "/build/src/$PROVIDER_FILE" -C /build/fipsinstall-app
cd "/build/fipsinstall-app/$PROVIDER_SRC_DIR"
./Configure ${OPENSSL_TARGET:-} no-shared no-tests \
    --prefix=/opt/python-fips --openssldir=/opt/python-fips/ssl --libdir=lib
make -j"$JOBS" build_generated
make -j"$JOBS" apps/openssl
mkdir -p /out/python-fips/libexec
cp apps/openssl /out/python-fips/libexec/openssl-fipsinstall
ccache_summary
# A cross build strips with the target's binutils and never runs what it made.
"${CROSS_HOST:+$CROSS_HOST-}strip" /out/python-fips/libexec/openssl-fipsinstall
if [ -z "${CROSS_HOST:-}" ]; then
    /out/python-fips/libexec/openssl-fipsinstall version
fi
