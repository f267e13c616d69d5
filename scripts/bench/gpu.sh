#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one command: builds (unless --prebuilt), runs the GPU tests,
# checks `saker generate --device cuda` against `--device cpu`, and runs the benchmark (bandwidth,
# cuBLASLt GEMM rate, Falcon-7B-shaped prefill and decode at batch 1, 8, 32, 64 against the
# weight-bytes / bandwidth floor). Every stage runs even when an earlier one fails; the results
# table is printed last and written to OUT (default gpu-results/).
#
#   scripts/bench/gpu.sh [--prebuilt DIR] [--out DIR] [--skip-tests] [-- saker_gpu_bench args]
#
# Time limits (seconds): GPU_TEST_TIMEOUT (300), GPU_CLI_TIMEOUT (60 per run), GPU_BENCH_TIMEOUT (300).
# --prebuilt DIR: the output of scripts/bench/gpu_pack.sh (bin/, lib/), for a machine without the
# build dependencies. CUDA's own libraries (cudart, cuBLASLt, NCCL) are taken from the machine:
# /usr/local/cuda and, for NCCL, the nvidia-nccl wheel of a Python environment when there is one.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
prebuilt="" out="gpu-results" skip_tests=0
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --skip-tests) skip_tests=1; shift ;;
    --) shift; bench_args=("$@"); break ;;
    *) echo "usage: $0 [--prebuilt DIR] [--out DIR] [--skip-tests] [-- bench args]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
echo "== saker GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv

# --- CUDA libraries --------------------------------------------------------------------------------
libdirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  [ -d "$d" ] && libdirs+=("$d")
done
for py in /opt/torch/.venv/bin/python3 python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  for mod in nccl cublas cuda_runtime; do
    d=$("$py" -c "import os, nvidia.$mod as m; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null) || continue
    [ -d "$d" ] && libdirs+=("$d")
  done
done
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl/lib; do [ -d "$d" ] && libdirs+=("$d"); done

# --- programs -----------------------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  bin=$prebuilt/bin
  libdirs=("$prebuilt/lib" "${libdirs[@]}")
  tests=$bin/saker_gpu_tests bench=$bin/saker_gpu_bench saker=$bin/saker
else
  build=${SAKER_BUILD_DIR:-build-cuda}
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  echo "== building in $build"
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSAKER_CUDA=ON &&
    cmake --build "$build" --parallel "$(nproc)" --target saker_gpu_tests saker_gpu_bench saker ||
    { echo "gpu.sh: the build failed" >&2; exit 1; }
  tests=$build/tests/gpu/saker_gpu_tests bench=$build/scripts/bench/saker_gpu_bench saker=$build/saker
fi
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for exe in "$tests" "$bench" "$saker"; do
  [ -x "$exe" ] || continue
  missing=$(ldd "$exe" | grep "not found" || true)
  [ -n "$missing" ] && echo "WARNING: $exe: unresolved libraries:" && echo "$missing"
done

status_tests="not run" status_cli="not run" status_bench="not run"

# --- tests ----------------------------------------------------------------------------------------------
if [ "$skip_tests" = 0 ]; then
  echo "== GPU tests (every kernel vs the CPU backend; the model on tests/fixtures)"
  SAKER_FIXTURES_DIR=$root/tests/fixtures timeout "${GPU_TEST_TIMEOUT:-300}" "$tests" --durations yes 2>&1 | tee "$out/gpu_tests.log"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status_tests=passed ;;
    77) status_tests="skipped (no GPU visible)" ;;
    *) status_tests="FAILED (exit $rc)" ;;
  esac
fi

# --- saker generate on both devices ---------------------------------------------------------------------
if [ -x "$saker" ]; then
  echo "== saker generate --device cuda vs --device cpu"
  status_cli=passed
  for fx in mqa7-bf16 gqa8x2-fp32 rw-alibi-fp32; do
    dir=$root/tests/fixtures/$fx
    ids=$(python3 -c "import json; print(' '.join(map(str, json.load(open('$dir/reference.json'))['cases'][2]['prompt_ids'])))" 2>/dev/null) || ids="1 2 3 4 5"
    want=$(python3 -c "import json; print(' '.join(map(str, json.load(open('$dir/reference.json'))['cases'][2]['greedy_ids'][:24])))" 2>/dev/null) || want=""
    gpu_out=$(timeout "${GPU_CLI_TIMEOUT:-60}" "$saker" generate --model "$dir" --prompt-ids "$ids" --max-new-tokens 24 --ignore-eos --device cuda 2>&1)
    cpu_out=$(timeout "${GPU_CLI_TIMEOUT:-60}" "$saker" generate --model "$dir" --prompt-ids "$ids" --max-new-tokens 24 --ignore-eos --device cpu 2>&1)
    verdict=$([ "$gpu_out" = "$cpu_out" ] && echo "same as cpu" || echo "DIFFERS from cpu")
    [ -n "$want" ] && verdict="$verdict, $([ "$gpu_out" = "$want" ] && echo "same as transformers" || echo "DIFFERS from transformers")"
    echo "$fx: cuda: $gpu_out"
    echo "$fx: cpu:  $cpu_out"
    echo "$fx: $verdict"
    [[ "$verdict" == *DIFFERS* ]] && status_cli="FAILED"
  done 2>&1 | tee "$out/cli.log"
  grep -q DIFFERS "$out/cli.log" && status_cli=FAILED
fi

# --- benchmark --------------------------------------------------------------------------------------------
echo "== benchmark"
timeout "${GPU_BENCH_TIMEOUT:-300}" "$bench" --out "$out" "${bench_args[@]}" 2>&1 | tee "$out/gpu_bench.log"
rc=${PIPESTATUS[0]}
status_bench=$([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")

echo
echo "== summary"
echo "GPU tests:            $status_tests   (log: $out/gpu_tests.log)"
echo "saker generate cli:   $status_cli"
echo "benchmark:            $status_bench   (log: $out/gpu_bench.log)"
[ -f "$out/gpu_bench.md" ] && { echo; cat "$out/gpu_bench.md"; }
[[ "$status_tests" == passed || "$status_tests" == "not run" ]] && [ "$status_bench" = passed ] && [ "$status_cli" != FAILED ]
