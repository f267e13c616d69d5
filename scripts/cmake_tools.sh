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

# configure_sanitized BUILD: the one instrumented build that scripts/test_sanitizers.sh (the test
# suite under ASan + UBSan) and scripts/fuzz.sh (the libFuzzer harnesses) share, so CI compiles
# the tree once for both. clang, because libFuzzer comes with it; tests/fuzz/CMakeLists.txt adds
# the sanitizers and coverage to every target of the project (not XGrammar). -O1 -g1 with asserts
# on: line tables are all a report needs, and a broken invariant is a finding too.
configure_sanitized() {
  local build=$1 root
  root=$(pwd)
  local xgrammar=()
  # XGrammar offline: reuse the sources another build of this checkout already fetched.
  if [[ -z "${FETCHCONTENT_SOURCE_DIR_XGRAMMAR:-}" && -d build/_deps/xgrammar-src/cpp ]]; then
    xgrammar=(-DFETCHCONTENT_SOURCE_DIR_XGRAMMAR="$root/build/_deps/xgrammar-src")
  fi
  CC=clang CXX=clang++ cmake -S . -B "$build" "${generator[@]}" "${launcher[@]}" "${xgrammar[@]}" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DSAKER_FUZZ=ON -DSAKER_CUDA=OFF \
    -DSAKER_BUILD_BENCHMARKS=OFF >/dev/null
}
