#!/usr/bin/env bash
# Fills a directory with real upstream tarballs taken from Debian source packages,
# renamed to their upstream file names, so tests can serve them as a mirror.
#
# usage: tests/debian-mirror.sh DIR [package=version ...]
# The Debian mirror is read from this machine's apt configuration; nothing is hard-coded.
set -euo pipefail

dir=${1:?usage: tests/debian-mirror.sh DIR [package=version ...]}
shift
if [ $# -eq 0 ]; then
    set -- python3.13=3.13.15-1 openssl=3.5.7-1~deb13u2 openssl=3.0.20-1~deb12u2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# A private apt configuration holding only deb-src stanzas built from the machine's own sources.
. "$(dirname "$0")/debian-apt.sh"
private_apt "$dir" deb-src bookworm trixie sid experimental

work="$dir/.download"
mkdir -p "$work"
for spec in "$@"; do
    pkg=${spec%%=*}
    ver=${spec#*=}
    upstream=${ver%-*}
    upstream=${upstream#*:}
    case $pkg in
        python3.*) want="Python-$upstream.tar" ;;
        openssl) want="openssl-$upstream.tar" ;;
        postgresql-*) want="postgresql-$upstream.tar" ;;
        *) echo "error: do not know the upstream name of $pkg" >&2; exit 1 ;;
    esac
    if ls "$dir/$want".* "$dir/${want%.tar}.tgz" >/dev/null 2>&1; then
        continue
    fi
    (cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "$spec" >&2)
    orig=$(ls "$work/${pkg}_${upstream}.orig.tar."* | grep -v '\.asc$' | head -n 1)
    ext=${orig##*.orig.tar.}
    # python.org names its gzip tarballs .tgz; OpenSSL names them .tar.gz.
    target="$dir/$want.$ext"
    case $pkg.$ext in python3.*.gz) target="$dir/${want%.tar}.tgz" ;; esac
    mv "$orig" "$target.partial"
    mv "$target.partial" "$target"
    rm -f "$work"/*
done
rm -rf "$work"
ls -l "$dir" >&2
