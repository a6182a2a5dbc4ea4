#!/usr/bin/env bash
# Unpacks Debian's binary packages of a CPython release's standard library, whose
# usr/lib/python3.X/ holds the release's Lib/ files byte for byte: the drift check applies the
# patches' Lib/ hunks to them where no source tarball of the release can be had.
#
# usage: tests/debian-lib.sh DIR package=version ...
# Each package is unpacked (dpkg-deb -x) into DIR/root; the Debian mirror is read from this
# machine's apt configuration, nothing is hard-coded.
set -euo pipefail

dir=${1:?usage: tests/debian-lib.sh DIR package=version ...}
shift
mkdir -p "$dir/root" "$dir/debs"
dir=$(cd "$dir" && pwd)
. "$(dirname "$0")/debian-apt.sh"

missing=()
for spec in "$@"; do
    pkg=${spec%%=*}
    ver=${spec#*=}
    [ -f "$dir/debs/${pkg}_${ver}.unpacked" ] || missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
    private_apt "$dir" deb sid
    for spec in "${missing[@]}"; do
        pkg=${spec%%=*}
        ver=${spec#*=}
        (cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "$spec" >&2)
        dpkg-deb -x "$(ls "$dir/debs/${pkg}_${ver/:/%3a}_"*.deb | head -n 1)" "$dir/root"
        : > "$dir/debs/${pkg}_${ver}.unpacked"
    done
fi
