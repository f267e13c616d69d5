#!/usr/bin/env bash
# Builds saker and its tests with ThreadSanitizer (CPU backend only, no benchmarks) and runs the
# serving tests under it: the Catch2 cases tagged [serve] (test_serve_api.cpp: the routes, in
# process) and the end-to-end tests (ctest -L serve: `saker serve` under mpirun, its HTTP thread,
# routing pool, backend socket and engine thread driven from Python). Not part of CI (slow); run it after changing
# launcher/serve/ or the engine's threads.
#   scripts/tsan_serve.sh [BUILD_DIR]      (default build-tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${1:-build-tsan}

# shellcheck source=scripts/cmake_tools.sh
source scripts/cmake_tools.sh
# -O1 -g1 as in scripts/test_sanitizers.sh: line tables are all a report needs.
cmake -S . -B "$build" "${generator[@]}" "${launcher[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DSAKER_CUDA=OFF -DSAKER_BUILD_BENCHMARKS=OFF -DSAKER_SANITIZE=thread
cmake --build "$build" --parallel "$(nproc)" --target saker saker_tests

# Every process the tests start (saker under mpirun too) inherits these. The suppressions cover
# Open MPI and its helpers only.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/sanitizers/tsan.supp"

status=0
"$build/tests/saker_tests" "[serve]" || status=1
# Not label soak: its criterion is a flat RSS, which TSan's shadow memory does not keep.
ctest --test-dir "$build" --output-on-failure -L serve -LE soak || status=1
exit $status
