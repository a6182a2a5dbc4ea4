# Stage python: configure, build and install the patched CPython against the OpenSSL in $PREFIX.
cd "/build/src/Python-$PYTHON_VERSION"
# Every Python the build runs (compileall, ensurepip) hashes strings the same way every time, so
# no set or dict order that depends on a random seed can reach a generated file.
export PYTHONHASHSEED=0
./configure --prefix="$PREFIX" --with-openssl="$PREFIX" --with-openssl-rpath=auto \
    $PYTHON_SHARED $PYTHON_CONFIGURE LDFLAGS="-Wl,-rpath,$PREFIX/lib"
make -j"$JOBS"
# One process compiles the .pyc files, in compileall's sorted order. With the default -j0, which
# worker compiles a file, and so what that worker had interned before, varies from run to run;
# marshal writes an object shared between code objects once with a back-reference, else twice,
# so the same source gave two different .pyc files (test_text.cpython-313.pyc: frozenset({'sel',
# 'a', 'b'}) inline twice in one build, a reference in the other).
make install COMPILEALL_OPTS=-j1

# The failure users hit most: _ssl or _hashlib missing, or linked against another OpenSSL.
dynload="$PREFIX/lib/python$PYTHON_MINOR/lib-dynload"
for module in _ssl _hashlib; do
    so=$(ls "$dynload/$module".*.so 2>/dev/null | head -n 1)
    if [ -z "$so" ]; then
        echo "error: the $module module was not built; see 'Could not build the ssl module' above" >&2
        exit 1
    fi
    ldd "$so"
    if ! ldd "$so" | grep -q "libcrypto.so.* => $PREFIX/lib/libcrypto.so"; then
        echo "error: $module does not load libcrypto from $PREFIX/lib" >&2
        exit 1
    fi
    if ldd "$so" | grep -E 'lib(ssl|crypto)\.so' | grep -v "=> $PREFIX/lib/"; then
        echo "error: $module links an OpenSSL outside $PREFIX (lines above)" >&2
        exit 1
    fi
done
"$PREFIX/bin/python3" -c 'import ssl, _hashlib; print(ssl.OPENSSL_VERSION)'
