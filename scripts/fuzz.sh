#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/) with clang, ASan and UBSan in build-fuzz/ and runs
# them. Exits non-zero when a harness crashes, naming the reproducer.
#   scripts/fuzz.sh [SECONDS]   fuzz each harness for SECONDS (default 30) from a scratch copy of
#                               its seeds (tests/fuzz/corpus/<harness>/), so the repo stays small
#   scripts/fuzz.sh --regress   run each harness once over its seeds and
#                               tests/fuzz/regressions/<harness>/ (CI)
# FUZZ_BUILD: the build directory (default build-fuzz); FUZZ_ONLY="a b": only these harnesses.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=fuzz
seconds=30
case "${1:-}" in
  --regress) mode=regress ;;
  "") ;;
  *[!0-9]* | 0)
    echo "usage: scripts/fuzz.sh [SECONDS] | --regress" >&2
    exit 2
    ;;
  *) seconds=$1 ;;
esac
build=${FUZZ_BUILD:-build-fuzz}

harnesses=(http_api ipc chat_template tokenizer tokenizer_json safetensors shard_index
  model_config properties jsonl_job iteration_plan)
[[ -n "${FUZZ_ONLY:-}" ]] && read -r -a harnesses <<<"$FUZZ_ONLY"

# --- build ------------------------------------------------------------------------------------
# shellcheck source=scripts/cmake_tools.sh
source scripts/cmake_tools.sh
# XGrammar offline: reuse the sources another build of this checkout already fetched and patched.
xgrammar=()
if [[ -z "${FETCHCONTENT_SOURCE_DIR_XGRAMMAR:-}" && -d build/_deps/xgrammar-src/cpp ]]; then
  xgrammar=(-DFETCHCONTENT_SOURCE_DIR_XGRAMMAR="$root/build/_deps/xgrammar-src")
fi
# -O1 with asserts on (no NDEBUG): a broken invariant is a finding too.
start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$build" "${generator[@]}" "${launcher[@]}" "${xgrammar[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DSAKER_FUZZ=ON -DSAKER_CUDA=OFF \
  -DSAKER_BUILD_TESTS=OFF -DSAKER_BUILD_BENCHMARKS=OFF >/dev/null
targets=()
for h in "${harnesses[@]}"; do targets+=(--target "fuzz_$h"); done
cmake --build "$build" -j "$(nproc)" "${targets[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"

# --- run --------------------------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:print_stacktrace=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# The corpus copies and the files harnesses write per input (TMPDIR) go to memory when it can:
# on a disk the file-reading harnesses run 20 times slower.
if [[ -d /dev/shm && -w /dev/shm ]]; then scratch=$(mktemp -d -p /dev/shm); else scratch=$(mktemp -d); fi
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tmp"
export TMPDIR="$scratch/tmp"
artifacts="$root/$build/fuzz-artifacts"
failed=()
for h in "${harnesses[@]}"; do
  bin="$build/tests/fuzz/fuzz_$h"
  seeds="tests/fuzz/corpus/$h"
  log="$scratch/$h.log"
  opts=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/$h/")
  case $h in
    http_api | ipc | jsonl_job) dict=request ;;
    model_config | shard_index | safetensors) dict=model_config ;;
    *) dict=$h ;;
  esac
  [[ -f "tests/fuzz/$dict.dict" ]] && opts+=(-dict="tests/fuzz/$dict.dict")
  mkdir -p "$artifacts/$h"
  rc=0
  if [[ $mode == regress ]]; then
    # Each file once, as libFuzzer runs inputs named on its command line.
    inputs=()
    for d in "$seeds" "tests/fuzz/regressions/$h"; do
      [[ -d "$d" ]] && while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$d" -type f -print0)
    done
    "$bin" "${opts[@]}" "${inputs[@]}" >"$log" 2>&1 || rc=$?
    summary="${#inputs[@]} inputs"
  else
    mkdir -p "$scratch/$h"
    [[ -d "$seeds" ]] && cp -r "$seeds/." "$scratch/$h/"
    "$bin" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 "$scratch/$h" \
      >"$log" 2>&1 || rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    summary="${execs:-?} execs, ${cov:-no cov}${done_line:+ | $done_line}"
  fi
  if [[ $rc -ne 0 ]]; then
    failed+=("$h")
    echo "FAIL $h (exit $rc): $summary"
    grep -E '^==[0-9]+==ERROR|runtime error|^SUMMARY|Test unit written to|^Running: |ALARM|Timeout' \
      "$log" | head -20 | sed 's/^/    /'
    cp "$log" "$artifacts/$h/last.log"
    echo "    full log: $artifacts/$h/last.log"
  else
    echo "ok   $h: $summary"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} harness(es) failed: ${failed[*]}" >&2
  exit 1
fi
