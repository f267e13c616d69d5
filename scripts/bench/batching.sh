#!/usr/bin/env bash
# Rolling against dynamic batching on the seed article's mixed workload, at the same maximum batch
# size, one after the other on the same machine. Prints both runs' tables and the ratios.
#   scripts/bench/batching.sh [BUILD_DIR] [MODEL_DIR] [REQUESTS] [MAX_BATCH] [extra saker bench flags...]
# The default model is a 26M-parameter random Falcon written by scripts/make_bench_model.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
model=${2:-bench-models/falcon-tiny-bf16}
requests=${3:-32}
batch=${4:-8}
shift $(( $# < 4 ? $# : 4 ))
if [ ! -f "$model/config.json" ]; then
  python3 scripts/make_bench_model.py --out "$model" --layers 8 --hidden 512 --heads 8 \
    --kv-heads 2 --vocab 8192 --max-pos 1024
fi
out=${OUT_DIR:-$build/bench-batching}
mkdir -p "$out"
common=(bench --model "$model" --workload mixed --num-requests "$requests" --request-rate inf "$@")
echo "== rolling"
"$build/saker" "${common[@]}" --batching rolling --max-rolling-batch-size "$batch" \
  --output-json "$out/rolling.json"
echo "== dynamic"
"$build/saker" "${common[@]}" --batching dynamic --batch-size "$batch" \
  --output-json "$out/dynamic.json"
python3 - "$out/rolling.json" "$out/dynamic.json" <<'PY'
import json, sys
r, d = (json.load(open(p)) for p in sys.argv[1:3])
print("\n| | rolling | dynamic | rolling / dynamic |\n|---|---|---|---|")
for key, name in [("output_throughput", "output tokens/s"), ("request_throughput", "requests/s")]:
    print(f"| {name} | {r[key]:.1f} | {d[key]:.1f} | {r[key] / d[key]:.2f}x |")
for key in ["ttft_ms", "tpot_ms", "e2el_ms"]:
    print(f"| p50 {key} | {r[key]['p50']:.0f} | {d[key]['p50']:.0f} | {r[key]['p50'] / d[key]['p50']:.2f}x |")
print(f"| iterations | {r['iterations']} | {d['iterations']} | |")
print(f"| avg batch | {r['avg_batch_size']:.2f} | {d['avg_batch_size']:.2f} | |")
PY
