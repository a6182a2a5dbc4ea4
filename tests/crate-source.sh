#!/usr/bin/env bash
# Puts crates' .crate files, as the Rust crate registry serves them, into a directory, so tests
# can serve them as a mirror (tests/sources.toml names them). cargo fetches each one and checks
# it against the checksum the crate index publishes; the build checks its own pin again.
#
# usage: tests/crate-source.sh DIR name=version ...
set -euo pipefail

dir=${1:?usage: tests/crate-source.sh DIR name=version ...}
shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cargo_home=${CARGO_HOME:-$HOME/.cargo}

for spec in "$@"; do
    name=${spec%%=*}
    version=${spec#*=}
    file="$name-$version.crate"
    [ -f "$dir/$file" ] && continue
    # A throwaway package that depends on exactly that version; its own [workspace] keeps it
    # out of any workspace around DIR.
    pkg="$dir/.crates/$name-$version"
    mkdir -p "$pkg/src"
    cat > "$pkg/Cargo.toml" <<TOML
[package]
name = "python-fips-fetch-$name"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$name = "=$version"

[workspace]
TOML
    : > "$pkg/src/lib.rs"
    cargo fetch --quiet --manifest-path "$pkg/Cargo.toml" >&2
    found=$(find "$cargo_home/registry/cache" -name "$file" -print -quit)
    if [ -z "$found" ]; then
        echo "error: cargo fetched $name $version but $file is not under $cargo_home/registry/cache" >&2
        exit 1
    fi
    cp "$found" "$dir/$file.partial"
    mv "$dir/$file.partial" "$dir/$file"
done
