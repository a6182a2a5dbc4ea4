#!/usr/bin/env bash
# Prepares a machine for the end-to-end tests: installs mmdebstrap and QEMU user emulation if
# they are missing and fills a local mirror with real upstream tarballs taken from Debian source
# packages and the Rust crate registry.
# usage: tests/setup.sh MIRROR_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${1:?usage: tests/setup.sh MIRROR_DIR}

if ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: mmdebstrap is missing; install it with \`sudo apt-get install mmdebstrap\`" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
fi

# QEMU user emulation for the arm64 tests: they run the cross-compiled tree's image (never a
# build step) and make the arm64 base image (mmdebstrap runs its packages' scripts under QEMU). binfmt_misc must be mounted for the
# registration; CI containers often have /proc/sys/fs/binfmt_misc with nothing mounted on it.
if [ "$(uname -m)" != aarch64 ]; then
    binfmt=/proc/sys/fs/binfmt_misc
    if [ ! -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || ! command -v update-binfmts >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "error: QEMU user emulation is missing; install it with \`sudo apt-get install qemu-user-static binfmt-support\`" >&2
            exit 1
        fi
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support >&2
    fi
    if [ ! -e "$binfmt/status" ]; then
        mount -t binfmt_misc binfmt_misc "$binfmt"
    fi
    if ! grep -qx enabled "$binfmt/qemu-aarch64" 2>/dev/null; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -qx enabled "$binfmt/qemu-aarch64"
fi

bash "$here/debian-mirror.sh" "$mirror" \
    python3.13=3.13.15-1 python3.13=3.13.5-2+deb13u5 python3.11=3.11.2-6+deb12u8 \
    openssl=3.5.7-1~deb13u2 openssl=3.0.20-1~deb12u2 \
    postgresql-15=15.18-0+deb12u1
# The validated 3.1.2 provider's tree: its release tarball cannot be had here (tests/sources.toml).
bash "$here/crate-source.sh" "$mirror" openssl-src=300.1.3+3.1.2
