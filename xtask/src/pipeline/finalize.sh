# Stage finalize: put fips.so in place, activate the FIPS provider, self-test it, and add
# the setup command that repeats the self-test on the machine that runs the tree.
ssl="$PREFIX/ssl"
modules="$PREFIX/lib/ossl-modules"
test -f "$modules/fips.so"
mkdir -p "$ssl"
cat > "$ssl/openssl.cnf" <<CNF
# python-fips-seal: the tree's python sets OPENSSL_CONF, OPENSSL_CONF_INCLUDE and OPENSSL_MODULES
# to this tree's, whatever the environment says, and hashlib and ssl refuse to import unless this
# tree's OpenSSL runs with its FIPS provider active. Deleting this line unseals the tree: it then
# honours the environment like any OpenSSL, and may run without FIPS.
#
# python-fips: every algorithm fetch defaults to the FIPS provider (fips=yes).
# The default provider stays loaded for explicit non-security uses such as
# hashlib.md5(usedforsecurity=False); nothing reaches it unless it asks for fips=no.
config_diagnostics = 1
openssl_conf = openssl_init

# fipsmodule.cnf is written on each machine by python-fips-setup. The include is relative, found
# in OPENSSL_CONF_INCLUDE (which the tree's python sets to the tree's ssl/, wherever it lies) or
# else in the build's prefix.
.pragma includedir:$ssl
.include fipsmodule.cnf

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect
ssl_conf = ssl_sect

[provider_sect]
fips = fips_sect
base = base_sect
default = default_sect

[base_sect]
activate = 1

[default_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes

# The TLS floor of every SSL_CTX (CPython is built with --with-ssl-default-suites=openssl, so
# its contexts take OpenSSL's defaults): TLS 1.2 or later, and security level 2 (keys of at
# least 112 bits of strength: RSA and DH of 2048 bits, no SHA-1 signatures), where OpenSSL's
# compiled-in level 1 would accept 1024-bit RSA peers.
[ssl_sect]
system_default = system_default_sect

[system_default_sect]
MinProtocol = TLSv1.2
CipherString = DEFAULT@SECLEVEL=2
CNF
install -m 0755 /build/python-fips-setup "$PREFIX/bin/python-fips-setup"
mkdir -p "$PREFIX/share/python-fips"
echo "$PREFIX/lib" > "$PREFIX/share/python-fips/ld.so.conf"
if [ -n "${CROSS_HOST:-}" ]; then
    sh -eux /build/cross-pip.sh
    # A cross build cannot run the module's self-test: the tree says so, and python-fips-setup
    # runs it on the target (the runtime image's build does) and removes this file.
    cat > "$PREFIX/share/python-fips/SELFTEST-PENDING" <<TXT
This tree was cross-compiled for $CROSS_HOST, so the FIPS module's self-test (openssl fipsinstall)
has not run yet and ssl/fipsmodule.cnf does not exist. Run $PREFIX/bin/python-fips-setup once on
the machine that uses the tree; until then OpenSSL refuses to load its configuration.
TXT
else
    "$PREFIX/bin/python-fips-setup"
    "$PREFIX/bin/openssl" list -providers
fi

# Debug information leaves the runtime tree: each ELF program and shared library (fips.so
# excepted: stripping it would fail its integrity check) keeps its code, and its DWARF moves to
# lib/debug/.build-id/, where gdb finds it by build id (the package step puts lib/debug in the
# development tarball). strip and objcopy write the same bytes for the same input; a cross build uses the
# target's binutils.
tools=${CROSS_HOST:+$CROSS_HOST-}
debug="$PREFIX/lib/debug"
find "$PREFIX" -type f \( -perm -u+x -o -name '*.so*' \) ! -path "$debug/*" ! -path "$modules/fips.so" |
    LC_ALL=C sort |
while IFS= read -r f; do
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    # Relocatable objects (.o, members of .a) belong to the development tree, unstripped.
    "${tools}readelf" --file-header "$f" | grep -Eq 'Type: +(EXEC|DYN)' || continue
    id=$("${tools}readelf" --notes "$f" | awk '/Build ID:/ { print $3; exit }')
    if [ -z "$id" ]; then
        echo "error: $f has no build id, so its debug file could not be found by it" >&2
        exit 1
    fi
    out="$debug/.build-id/$(echo "$id" | cut -c1-2)/$(echo "$id" | cut -c3-).debug"
    mkdir -p "$(dirname "$out")"
    "${tools}objcopy" --only-keep-debug "$f" "$out"
    chmod 0644 "$out"
    "${tools}strip" --strip-unneeded "$f"
    "${tools}objcopy" --add-gnu-debuglink="$out" "$f"
done

# Every rpath into $PREFIX becomes relative to the file's own directory ($ORIGIN), so the tree
# runs from wherever it is unpacked. DT_RPATH rather than DT_RUNPATH: the loader searches it before
# LD_LIBRARY_PATH and for the libraries loaded through the file too, so a host library of the same
# soname never stands in for the tree's. fips.so has no rpath, and is never changed (its integrity
# check covers its bytes).
if ! command -v patchelf >/dev/null 2>&1; then
    echo "error: patchelf is missing from the builder image; add it to the recipe's [builder] packages" >&2
    exit 1
fi
find "$PREFIX" -type f \( -perm -u+x -o -name '*.so*' \) ! -path "$debug/*" ! -path "$modules/fips.so" |
    LC_ALL=C sort |
while IFS= read -r f; do
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    rpath=$(patchelf --print-rpath "$f" 2>/dev/null) || continue
    case ":$rpath:" in
        *":$PREFIX/lib:"*) ;;
        *) continue ;;
    esac
    rel=$(realpath --relative-to="$(dirname "$f")" "$PREFIX/lib")
    if [ "$rel" = . ]; then origin='$ORIGIN'; else origin="\$ORIGIN/$rel"; fi
    patchelf --force-rpath --set-rpath "$origin" "$f"
done
