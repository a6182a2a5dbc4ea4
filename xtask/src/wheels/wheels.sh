# Stage wheels: build the requested packages from source against the tree's OpenSSL, with the
# tree's own interpreter (see wheels.py); the wheels and lock.json land in /out.
mkdir -p /out
exec "$PREFIX/bin/python3" /build/wheels.py
