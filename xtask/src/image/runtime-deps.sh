# Runs in the builder image, which has every library the tree was linked against installed.
# usage: runtime-deps.sh LDCONFIG_ARCH_TAG SONAME...
# Prints `package SONAME PACKAGE` for each soname whose package is found, `missing SONAME` for
# the others, and exits non-zero if any is missing.
exec 2>&1
set -u
tag=$1
shift
case "$tag" in
    x86-64) multiarch=x86_64-linux-gnu ;;
    AArch64) multiarch=aarch64-linux-gnu ;;
    *) multiarch="" ;;
esac
status=0
for soname in "$@"; do
    path=$(ldconfig -p | awk -v s="$soname" -v tag="$tag" \
        '$1 == s && (tag == "" || index($0, tag) > 0) { print $NF; exit }')
    # ldconfig's cache holds only the machine's own architecture: a cross builder's target
    # libraries are found in their multiarch directory instead.
    if [ -z "$path" ] && [ -n "$multiarch" ]; then
        for dir in "/usr/lib/$multiarch" "/lib/$multiarch"; do
            if [ -e "$dir/$soname" ]; then
                path="$dir/$soname"
                break
            fi
        done
    fi
    package=""
    if [ -n "$path" ]; then
        real=$(readlink -f "$path")
        # With a merged /usr, dpkg knows a file by one of /lib/... and /usr/lib/... only.
        for candidate in "$path" "$real" "/usr$path" "/usr$real" "${path#/usr}" "${real#/usr}"; do
            if command -v dpkg >/dev/null 2>&1; then
                package=$(dpkg -S "$candidate" 2>/dev/null | grep -v '^diversion' \
                    | head -n 1 | sed 's/[:,].*//')
            elif command -v rpm >/dev/null 2>&1; then
                package=$(rpm -qf --queryformat '%{NAME}\n' "$candidate" 2>/dev/null | head -n 1)
            fi
            if [ -n "$package" ]; then
                break
            fi
        done
    fi
    if [ -n "$package" ]; then
        echo "package $soname $package"
    else
        echo "missing $soname ${path:-(not known to ldconfig)}"
        status=1
    fi
done
exit $status
