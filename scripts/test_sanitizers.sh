#!/usr/bin/env bash
# Builds saker and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (clang, CPU
# backend only, no benchmarks; the build scripts/fuzz.sh uses too) and runs the test suite (CTest)
# over it. Any finding fails its test.
#   scripts/test_sanitizers.sh [BUILD_DIR]      (default build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${1:-build-asan}

# shellcheck source=scripts/cmake_tools.sh
source scripts/cmake_tools.sh
configure_sanitized "$build"
start=$(date +%s)
cmake --build "$build" --parallel "$(nproc)"
echo "sanitizer build: $(($(date +%s) - start)) s"

# Every process the tests start (saker under mpirun, under the Python e2e drivers, under Slurm)
# inherits these: any ASan or UBSan finding ends the process with a stack trace; leaks are checked
# at exit.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
# Open MPI leaks at exit, from libraries without frame pointers: only a full (slow) unwind of each
# malloc reaches their frames for the suppressions. That costs ~1.7x, so only the ranks mpirun
# starts pay it: mpirun execs them through orte_fork_agent. (Not mca_base_env_list: Open MPI refuses
# it beside mpirun -x, which saker launch and the tests use.)
export OMPI_MCA_orte_fork_agent="env ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=0"

# Excluded: label soak (serve_soak), whose pass criterion is rank 0's RSS staying flat over two
# minutes of traffic; ASan's quarantine and allocation stacks grow RSS by design (+400 MB).
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --label-exclude soak
