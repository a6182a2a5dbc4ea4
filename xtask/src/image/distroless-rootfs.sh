# Runs in the first stage of the distroless image, as root, after python-fips-setup.
# usage: distroless-rootfs.sh DIR
# Fills DIR with the image's whole file system: the tree; every library its programs and
# modules load (ldd follows NEEDED entries through the libraries too) and the loader, each
# under its real path plus the name it is asked for; the /usr-merge symlinks; the CA
# certificates; passwd and group naming root and the non-root user; /tmp; and the loader
# cache of exactly these files.
set -eu
root=$1
mkdir -p "$root/opt" "$root/etc" "$root/tmp" "$root/home/python"
cp -a /opt/python-fips "$root/opt/"
for link in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [ -L "$link" ]; then
        cp -a "$link" "$root/"
    fi
done

# A file under the real path of its directory; a symlink also brings what it points to.
copy() {
    dir=$(cd "$(dirname "$1")" && pwd -P)
    mkdir -p "$root$dir"
    cp -a "$dir/$(basename "$1")" "$root$dir/"
    real=$(readlink -f "$1")
    if [ "$real" != "$dir/$(basename "$1")" ]; then
        mkdir -p "$root$(dirname "$real")"
        cp -a "$real" "$root$(dirname "$real")/"
    fi
}

find /opt/python-fips -type f \( -perm -u+x -o -name '*.so*' \) | LC_ALL=C sort |
    while IFS= read -r f; do
        ldd "$f" 2>/dev/null || true
    done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    grep -v '^/opt/python-fips/' | LC_ALL=C sort -u > /tmp/libraries
if ! grep -q 'libc\.so' /tmp/libraries; then
    echo "error: ldd found no C library for the tree's programs" >&2
    exit 1
fi
while IFS= read -r lib; do
    echo "library $lib"
    copy "$lib"
done < /tmp/libraries

# CA certificates: the bundle the tree's python names in SSL_CERT_FILE (and its licence), and the
# certificate directories of a base that installed the ca-certificates package itself.
for path in /etc/ssl/certs /usr/share/ca-certificates /usr/share/doc/ca-certificates; do
    if [ -d "$path" ]; then
        mkdir -p "$root$(dirname "$path")"
        cp -a "$path" "$root$(dirname "$path")/"
    fi
done

cat > "$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
python:x:1000:1000:python:/home/python:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<GROUP
root:x:0:
python:x:1000:
GROUP
if [ -f /etc/nsswitch.conf ]; then
    cp /etc/nsswitch.conf "$root/etc/"
fi
chown 1000:1000 "$root/home/python"
chmod 1777 "$root/tmp"

# The loader cache, made from the copied libraries only.
cp -a /etc/ld.so.conf "$root/etc/" 2>/dev/null || true
if [ -d /etc/ld.so.conf.d ]; then
    cp -a /etc/ld.so.conf.d "$root/etc/"
fi
ldconfig -r "$root"
du -sh "$root"
