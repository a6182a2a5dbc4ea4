# Stage packages: what is installed in the builder image, one "family<TAB>name<TAB>version<TAB>arch"
# line per package, for the SBOM.
mkdir -p /out/packages
if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query --show --showformat='${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\n' \
        | awk -F '\t' '$1 == "installed" { print "deb\t" $2 "\t" $3 "\t" $4 }' \
        | sort > /out/packages/packages.tsv
elif command -v rpm >/dev/null 2>&1; then
    # Untested: written for Rocky and UBI; no test covers it yet.
    rpm --query --all --queryformat 'rpm\t%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n' \
        | sort > /out/packages/packages.tsv
else
    echo "error: the builder image has neither dpkg-query nor rpm" >&2
    exit 1
fi
wc -l /out/packages/packages.tsv
