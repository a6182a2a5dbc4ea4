# Sourced by the stages that compile. When the run carries a compiler cache (CCACHE_DIR is set,
# outside the stage's key) and the builder image has ccache, every C compiler the stage may call
# is reached through it. A hit returns the object file a miss would have made: ccache hashes the
# preprocessed source, the flags, the compiler and the working directory, and all of those are
# the same in every container of one builder image.
if [ -n "${CCACHE_DIR:-}" ] && command -v ccache >/dev/null 2>&1; then
    mkdir -p /build/ccache-bin
    for cc in gcc cc g++ c++ ${CROSS_HOST:+$CROSS_HOST-gcc $CROSS_HOST-g++}; do
        if command -v "$cc" >/dev/null 2>&1; then
            ln -sf "$(command -v ccache)" "/build/ccache-bin/$cc"
        fi
    done
    export PATH="/build/ccache-bin:$PATH"
    ccache --zero-stats >/dev/null
    ccache_on=1
fi

# Prints what the compiler cache did in this stage (nothing without one).
ccache_summary() {
    if [ -n "${ccache_on:-}" ]; then
        ccache --show-stats
    fi
}
