#!/usr/bin/env bash
# Where a CPU serving step goes: `saker bench` at batch 1, 4, 16 and 64 (that many requests of
# 128 prompt tokens and 64 output tokens, all at once) on the ~1B benchmark model and the tiny
# one, printing each run's step time, its per-stage profile and its output rate
# (docs/performance.md, "CPU serving at the compute limit").
#
#   scripts/bench/cpu_profile.sh [SAKER_BINARY] [OUT_DIR] [extra saker bench flags...]
#
# SAKER_BINARY defaults to build/saker; pass another build's binary to profile it the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
saker=${1:-build/saker}
out=${2:-bench-results/cpu-profile}
shift $(($# > 2 ? 2 : $#))
mkdir -p "$out"
[ -f bench-models/falcon-1b-bf16/model.safetensors ] ||
  python3 scripts/make_bench_model.py --out bench-models/falcon-1b-bf16
[ -f bench-models/falcon-tiny-bf16/model.safetensors ] ||
  python3 scripts/make_bench_model.py --out bench-models/falcon-tiny-bf16 --layers 8 --hidden 512 \
    --heads 8 --kv-heads 2 --vocab 8192 --max-pos 1024
for model in falcon-1b-bf16 falcon-tiny-bf16; do
  for batch in 1 4 16 64; do
    json=$out/$model-b$batch.json
    echo "== $model, batch $batch"
    "$saker" bench --model "bench-models/$model" --workload fixed:128:64 --num-requests "$batch" \
      --max-rolling-batch-size "$batch" --output-json "$json" "$@" >"$out/$model-b$batch.txt" 2>&1 ||
      { cat "$out/$model-b$batch.txt"; exit 1; }
    python3 - "$json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"  {j['output_throughput']:.1f} output tok/s, {j['step_ms_per_iteration']:.2f} ms per "
      f"iteration, avg batch {j['avg_batch_size']:.1f}, host {100 * j['host_fraction_of_step']:.2f} %")
for s in j.get("profile", [])[:8]:  # builds before the profile existed print none
    print(f"    {s['stage']:<56} {s['ms_per_iteration']:9.3f} ms {100 * s['share_of_step']:6.2f} %")
EOF
  done
done
