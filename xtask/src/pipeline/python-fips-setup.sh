#!/bin/sh
# python-fips-setup: run the FIPS module's self-tests on this machine and record the result.
#
# The OpenSSL FIPS security policy requires `openssl fipsinstall` on every machine that uses
# the module. The tree's python runs this with --first-use when ssl/fipsmodule.cnf is missing (a
# tree just unpacked or installed by uv), image builds run it, and it can be run again by hand
# whenever fips.so or the machine changes. As root, and unless --first-use, it also registers the
# libraries with ldconfig for the other programs of the machine.
set -eu
first_use=
case "${1:-}" in
    --first-use) first_use=1 ;;
    "") ;;
    *) echo "usage: $0 [--first-use]" >&2; exit 2 ;;
esac
prefix=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
openssl="$prefix/bin/openssl"
# When the provider comes from another release than the libraries, the tree carries that
# release's own openssl for fipsinstall: it writes the fields that release's security policy
# expects (3.0.x: install-mac, install-status), which a later openssl leaves out.
if [ -x "$prefix/libexec/openssl-fipsinstall" ]; then
    openssl="$prefix/libexec/openssl-fipsinstall"
fi
module="$prefix/lib/ossl-modules/fips.so"
cnf="$prefix/ssl/fipsmodule.cnf"
# A name of this run's own, renamed into place: two first uses at once each write a whole file.
new="$cnf.$$.new"
trap 'rm -f "$new"' EXIT
# The module's self-test must not depend on the configuration it is about to write.
OPENSSL_CONF=/dev/null "$openssl" fipsinstall -out "$new" -module "$module"
OPENSSL_CONF=/dev/null "$openssl" fipsinstall -module "$module" -in "$new" -verify
mv "$new" "$cnf"
# A cross-compiled tree waited for this self-test; it has run now.
rm -f "$prefix/share/python-fips/SELFTEST-PENDING"
if [ -z "$first_use" ] && [ "$(id -u)" = 0 ] && [ -d /etc/ld.so.conf.d ]; then
    cp "$prefix/share/python-fips/ld.so.conf" /etc/ld.so.conf.d/python-fips.conf
    ldconfig
fi
