#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/) with clang, ASan and UBSan in build-asan/ and runs
# them. Exits non-zero when a harness crashes, naming the reproducer.
#   scripts/fuzz.sh [SECONDS]   fuzz each harness for SECONDS (default 30; CI) from a scratch copy
#                               of its seeds (tests/fuzz/corpus/<harness>/) and reproducers
#                               (tests/fuzz/regressions/<harness>/), so the repo stays small
#   scripts/fuzz.sh --regress   run each harness once over its seeds and reproducers
# FUZZ_BUILD: the build directory (default build-asan, shared with scripts/test_sanitizers.sh);
# FUZZ_ONLY="a b": only these harnesses; FUZZ_JOBS: harnesses run at once (default: the cores).
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
build=${FUZZ_BUILD:-build-asan}

harnesses=(http_api ipc chat_template tokenizer tokenizer_json safetensors shard_index
  model_config properties jsonl_job iteration_plan)
[[ -n "${FUZZ_ONLY:-}" ]] && read -r -a harnesses <<<"$FUZZ_ONLY"

# --- build ------------------------------------------------------------------------------------
# shellcheck source=scripts/cmake_tools.sh
source scripts/cmake_tools.sh
start=$(date +%s)
configure_sanitized "$build"
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

# Runs one harness; prints its one-line verdict (and the finding) to $scratch/<harness>.out and
# fails when it found something.
run_one() {
  local h=$1 bin="$build/tests/fuzz/fuzz_$1" seeds="tests/fuzz/corpus/$1" log="$scratch/$1.log"
  # A unit slower than 25 s is a finding (OSS-Fuzz's limit): ASan at -O1 runs 10x slower than a
  # release build, so legitimately costly inputs (a constraint at its repetition bound) fit.
  local opts=(-timeout=25 -rss_limit_mb=2048 -artifact_prefix="$artifacts/$h/") dict rc=0 summary
  case $h in
    http_api | ipc | jsonl_job) dict=request ;;
    model_config | shard_index | safetensors) dict=model_config ;;
    *) dict=$h ;;
  esac
  [[ -f "tests/fuzz/$dict.dict" ]] && opts+=(-dict="tests/fuzz/$dict.dict")
  mkdir -p "$artifacts/$h"
  if [[ $mode == regress ]]; then
    # Each file once, as libFuzzer runs inputs named on its command line.
    local inputs=() d f
    for d in "$seeds" "tests/fuzz/regressions/$h"; do
      [[ -d "$d" ]] && while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$d" -type f -print0)
    done
    "$bin" "${opts[@]}" "${inputs[@]}" >"$log" 2>&1 || rc=$?
    summary="${#inputs[@]} inputs"
  else
    # The reproducers too: a fuzzing run also replays every finding so far.
    mkdir -p "$scratch/$h"
    [[ -d "$seeds" ]] && cp -r "$seeds/." "$scratch/$h/"
    [[ -d "tests/fuzz/regressions/$h" ]] && cp -r "tests/fuzz/regressions/$h/." "$scratch/$h/"
    "$bin" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 "$scratch/$h" \
      >"$log" 2>&1 || rc=$?
    local done_line cov execs
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    summary="${execs:-?} execs, ${cov:-no cov}${done_line:+ | $done_line}"
  fi
  {
    if [[ $rc -ne 0 ]]; then
      echo "FAIL $h (exit $rc): $summary"
      grep -E '^==[0-9]+==ERROR|runtime error|^SUMMARY|Test unit written to|^Running: |ALARM|Timeout' \
        "$log" | head -20 | sed 's/^/    /'
      cp "$log" "$artifacts/$h/last.log"
      echo "    full log: $artifacts/$h/last.log"
    else
      echo "ok   $h: $summary"
    fi
  } >"$scratch/$h.out"
  return "$rc"
}

# FUZZ_JOBS harnesses at a time (each libFuzzer process is single-threaded).
parallel=${FUZZ_JOBS:-$(nproc)}
declare -A pid_of
failed=()
for h in "${harnesses[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  run_one "$h" &
  pid_of[$h]=$!
done
for h in "${harnesses[@]}"; do
  wait "${pid_of[$h]}" || failed+=("$h")
  cat "$scratch/$h.out"
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} harness(es) failed: ${failed[*]}" >&2
  exit 1
fi
