# The builder image: the base image plus the recipe's build dependencies for its package family,
# and ccache, the compiler cache the compiling stages use when a run carries one (ccache.sh).
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install --yes --no-install-recommends $APT_PACKAGES ccache
    apt-get clean
    rm -rf /var/lib/apt/lists/*
elif command -v dnf >/dev/null 2>&1; then
    # Untested: written for Rocky and UBI; no test covers it yet. Their base repositories have no
    # ccache, so these builders compile without a compiler cache.
    dnf install --assumeyes $DNF_PACKAGES
    dnf clean all
else
    echo "error: the base image has neither apt-get nor dnf; pick a Debian, Rocky or UBI base" >&2
    exit 1
fi
