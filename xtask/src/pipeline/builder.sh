# The builder image: the base image plus the recipe's build dependencies for its package family.
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install --yes --no-install-recommends $APT_PACKAGES
    apt-get clean
    rm -rf /var/lib/apt/lists/*
elif command -v dnf >/dev/null 2>&1; then
    # Untested: written for Rocky and UBI; no test covers it yet.
    dnf install --assumeyes $DNF_PACKAGES
    dnf clean all
else
    echo "error: the base image has neither apt-get nor dnf; pick a Debian, Rocky or UBI base" >&2
    exit 1
fi
