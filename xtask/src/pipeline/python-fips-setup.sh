#!/bin/sh
# python-fips-setup: run the FIPS module's self-tests on this machine and record the result.
#
# The OpenSSL FIPS security policy requires `openssl fipsinstall` on every machine that uses
# the module, so run this once after unpacking the tree (image builds do it for you), and again
# whenever fips.so or the machine changes. As root it also registers the libraries with ldconfig.
set -eu
prefix=$(cd "$(dirname "$0")/.." && pwd)
openssl="$prefix/bin/openssl"
# When the provider comes from another release than the libraries, the tree carries that
# release's own openssl for fipsinstall: it writes the fields that release's security policy
# expects (3.0.x: install-mac, install-status), which a later openssl leaves out.
if [ -x "$prefix/libexec/openssl-fipsinstall" ]; then
    openssl="$prefix/libexec/openssl-fipsinstall"
fi
module="$prefix/lib/ossl-modules/fips.so"
cnf="$prefix/ssl/fipsmodule.cnf"
# The module's self-test must not depend on the configuration it is about to write.
OPENSSL_CONF=/dev/null "$openssl" fipsinstall -out "$cnf.new" -module "$module"
mv "$cnf.new" "$cnf"
OPENSSL_CONF=/dev/null "$openssl" fipsinstall -module "$module" -in "$cnf" -verify
# A cross-compiled tree waited for this self-test; it has run now.
rm -f "$prefix/share/python-fips/SELFTEST-PENDING"
# OpenSSL looks for trusted CAs in its own directory: point it at this machine's bundle.
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    if [ -f "$bundle" ]; then
        ln -sfn "$bundle" "$prefix/ssl/cert.pem"
        break
    fi
done
if [ -d /etc/ssl/certs ]; then
    ln -sfn /etc/ssl/certs "$prefix/ssl/certs"
fi
if [ "$(id -u)" = 0 ] && [ -d /etc/ld.so.conf.d ]; then
    cp "$prefix/share/python-fips/ld.so.conf" /etc/ld.so.conf.d/python-fips.conf
    ldconfig
fi
