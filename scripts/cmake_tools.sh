# Sourced by the scripts that configure a build of their own (fuzz, sanitizers): Ninja when it is
# installed, ccache when it is (CCACHE_BASEDIR keeps hits across checkouts under /work). Sets the
# arrays `generator` and `launcher` for cmake's command line.
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-/work}
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
