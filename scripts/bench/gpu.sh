#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one command: builds (unless --prebuilt), runs the GPU tests,
# checks `saker generate --device cuda` against `--device cpu`, runs the benchmark (bandwidth,
# cuBLASLt GEMM rate, Falcon-7B-shaped prefill of 2048 tokens and decode at batch 1 to 256 against
# max(weight bytes / bandwidth, weight FLOPs / cuBLASLt rate), batch-invariant and not, and every
# linear path on every shape), then serves as users measure: `saker bench --device cuda` on the
# Falcon-7B shape (random weights made on the device) with the mixed workload and fixed:1024:256
# at concurrency 1 to 256, rolling, and dynamic batching at 64. Every stage runs even when an
# earlier one fails; the results are printed last and written to OUT (default gpu-results/).
#
#   scripts/bench/gpu.sh [--prebuilt DIR] [--out DIR] [--skip-tests] [--skip-serving]
#                        [-- saker_gpu_bench args]
#
# Time limits (seconds): GPU_TEST_TIMEOUT (300), GPU_CLI_TIMEOUT (60 per run), GPU_BENCH_TIMEOUT
# (300), GPU_SERVE_TIMEOUT (240, all serving runs together; the runs left when it is spent are
# skipped and said so).
# --prebuilt DIR: the output of scripts/bench/gpu_pack.sh (bin/, lib/), for a machine without the
# build dependencies. CUDA's own libraries (cudart, cuBLASLt, NCCL) are taken from the machine:
# /usr/local/cuda and, for NCCL, the nvidia-nccl wheel of a Python environment when there is one.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
prebuilt="" out="gpu-results" skip_tests=0 skip_serving=0
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --skip-tests) skip_tests=1; shift ;;
    --skip-serving) skip_serving=1; shift ;;
    --) shift; bench_args=("$@"); break ;;
    *) echo "usage: $0 [--prebuilt DIR] [--out DIR] [--skip-tests] [--skip-serving] [-- bench args]" >&2; exit 2 ;;
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

status_tests="not run" status_cli="not run" status_bench="not run" status_serve="not run"

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
# Long contexts (flash-decoding's case): decode only, by default and without batch invariance,
# at 2048 keys (Falcon-7B's context) and 8192 (newer Falcon configs), on the same shape.
for ctx in "2048 1,8,64 2048" "8192 1,8,32 8256"; do
  read -r context batches positions <<< "$ctx"
  timeout "${GPU_BENCH_TIMEOUT:-300}" "$bench" --quick --context "$context" --batches "$batches" \
    --max-positions "$positions" --out "$out/context$context" 2>&1 | tee "$out/gpu_bench_context$context.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status_bench="FAILED (context $context)"
done

# --- serving, as users measure ------------------------------------------------------------------
if [ "$skip_serving" = 0 ] && [ -x "$saker" ]; then
  echo "== serving: saker bench --device cuda, Falcon-7B shape, random weights made on the device"
  work=${TMPDIR:-/tmp}/saker-falcon7b-serving
  mkdir -p "$out/serving"
  status_serve=passed
  if ! "$bench" --checkpoint-only --workdir "$work" > "$out/serving/checkpoint.log" 2>&1; then
    status_serve="FAILED (the sparse checkpoint: $out/serving/checkpoint.log)"
  else
    deadline=$(( $(date +%s) + ${GPU_SERVE_TIMEOUT:-240} ))
    runs=()
    for wl in mixed fixed:1024:256; do
      for c in 1 8 32 64 128 256; do runs+=("$wl rolling $c"); done
      runs+=("$wl dynamic 64")
    done
    for run in "${runs[@]}"; do
      read -r wl batching c <<< "$run"
      left=$(( deadline - $(date +%s) ))
      if [ "$left" -le 15 ]; then echo "serving: GPU_SERVE_TIMEOUT spent, skipped: $run"; status_serve="partial (time)"; continue; fi
      n=$(( c < 8 ? 8 : c ))  # one wave of requests (8 at least)
      name="${wl//:/-}_${batching}_c$c"
      flags=(--max-rolling-batch-size 256)
      [ "$batching" = dynamic ] && flags=(--batching dynamic --batch-size "$c")
      if ! timeout "$left" "$saker" bench --model "$work" --device cuda --random-weights \
          --workload "$wl" --num-requests "$n" --max-concurrency "$c" \
          --max-rolling-batch-prefill-tokens 2048 "${flags[@]}" \
          --output-json "$out/serving/$name.json" > "$out/serving/$name.log" 2>&1; then
        echo "serving: $run FAILED (log: $out/serving/$name.log)"; tail -5 "$out/serving/$name.log"
        status_serve=FAILED
      fi
    done
    python3 - "$out/serving" > "$out/serving.md" <<'PY'
import glob, json, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    j = json.load(open(f))
    rows.append((j["workload"], j["batching"], j["max_concurrency"], j))
rows.sort(key=lambda r: (r[0], r[1] != "rolling", r[2]))
print("| workload | batching | concurrency | output tokens/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms "
      "| avg batch | host share of a step | p50 TPOT / read floor |")
print("|---|---|---|---|---|---|---|---|---|")
for wl, b, c, j in rows:
    print(f"| {wl} | {b} | {c} | {j['output_throughput']:.0f} | {j['ttft_ms']['p50']:.0f} / "
          f"{j['ttft_ms']['p99']:.0f} | {j['tpot_ms']['p50']:.2f} / {j['tpot_ms']['p99']:.2f} | "
          f"{j['avg_batch_size']:.1f} | {100 * j['host_fraction_of_step']:.1f} % "
          f"({j['host_ms_per_iteration']:.2f} ms) | {100 * j['tpot_fraction_of_floor']:.0f} % |")
PY
    cat "$out/serving.md"
  fi
  rm -rf "$work"
fi

echo
echo "== summary"
echo "GPU tests:            $status_tests   (log: $out/gpu_tests.log)"
echo "saker generate cli:   $status_cli"
echo "benchmark:            $status_bench   (log: $out/gpu_bench.log)"
echo "serving:              $status_serve   (logs: $out/serving/)"
[ -f "$out/gpu_bench.md" ] && { echo; cat "$out/gpu_bench.md"; }
for ctx in 2048 8192; do [ -f "$out/context$ctx/gpu_bench.md" ] && { echo; cat "$out/context$ctx/gpu_bench.md"; }; done
[ -f "$out/serving.md" ] && { echo; cat "$out/serving.md"; }
[[ "$status_tests" == passed || "$status_tests" == "not run" ]] && [ "$status_bench" = passed ] && [ "$status_cli" != FAILED ] && [[ "$status_serve" != FAILED* ]]
