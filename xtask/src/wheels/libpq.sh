# Stage libpq: PostgreSQL's client library built against the tree's OpenSSL (at $PREFIX, from the
# finalize stage), with pg_config and the headers psycopg2 builds with, installed at /opt/libpq.
# Its rpath leads to the tree's libssl and libcrypto, never the system's.
set -eu
mkdir -p /build/src
cd /build/src
tar -xjf /build/postgresql.tar.bz2
cd postgresql-*/
export CFLAGS="-O2 -ffile-prefix-map=/build/src=/src"
./configure --prefix=/opt/libpq --with-ssl=openssl --without-readline --without-icu \
    --with-includes="$PREFIX/include" --with-libraries="$PREFIX/lib" \
    LDFLAGS="-Wl,-rpath,$PREFIX/lib"
make -C src/interfaces/libpq -j"$JOBS" install
make -C src/bin/pg_config install
make -C src/include install
mkdir -p /out
cp -a /opt/libpq /out/libpq
