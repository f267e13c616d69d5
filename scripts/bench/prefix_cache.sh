#!/usr/bin/env bash
# Prefix caching off against on, on the shared-prefix workload (each request one of a few long
# system prompts plus its own question), one after the other on the same machine, at the same KV
# budget. Prints both runs' tables and the ratios: TTFT p50 and p99, request throughput, hit rate.
#   scripts/bench/prefix_cache.sh [BUILD_DIR] [MODEL_DIR] [WORKLOAD] [REQUESTS] [extra saker bench flags...]
# The default model is the 26M-parameter random Falcon of scripts/bench/batching.sh (written by
# scripts/make_bench_model.py, which needs torch and transformers).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
model=${2:-bench-models/falcon-tiny-bf16}
workload=${3:-shared-prefix:8:512:64:16}
requests=${4:-64}
shift $(( $# < 4 ? $# : 4 ))
if [ ! -f "$model/config.json" ]; then
  python3 scripts/make_bench_model.py --out "$model" --layers 8 --hidden 512 --heads 8 \
    --kv-heads 2 --vocab 8192 --max-pos 1024
fi
out=${OUT_DIR:-$build/bench-prefix-cache}
mkdir -p "$out"
common=(bench --model "$model" --workload "$workload" --num-requests "$requests" "$@")
echo "== prefix caching off"
"$build/saker" "${common[@]}" --no-enable-prefix-caching --output-json "$out/off.json"
echo "== prefix caching on"
"$build/saker" "${common[@]}" --enable-prefix-caching --output-json "$out/on.json"
python3 - "$out/off.json" "$out/on.json" <<'PY'
import json, sys
off, on = (json.load(open(p)) for p in sys.argv[1:3])
print("\n| | off | on | on / off |\n|---|---|---|---|")
for p in ["p50", "p99"]:
    a, b = off["ttft_ms"][p], on["ttft_ms"][p]
    print(f"| TTFT {p} (ms) | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
a, b = off["request_throughput"], on["request_throughput"]
print(f"| requests/s | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
print(f"| prefix cache hit rate | {off['prefix_cache_hit_rate']:.1%} | {on['prefix_cache_hit_rate']:.1%} | |")
PY
