#!/usr/bin/env bash
# The CPU backend against this machine's limits: the kernel benchmarks (GB/s against the read
# bandwidth, GFLOP/s against the FMA peak, both measured by the same program), then `saker bench`
# on the ~1B benchmark model in bf16 and int8: decode at batch 1, 8 and 32 and a 512-token prefill,
# each against the floor it implies. Prints a Markdown table (docs/performance.md).
#
#   scripts/bench/cpu.sh [BUILD_DIR] [OUT_DIR]     # defaults: build, bench-results/cpu
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-bench-results/cpu}
model=bench-models/falcon-1b-bf16
mkdir -p "$out"

[ -f "$model/model.safetensors" ] || python3 scripts/make_bench_model.py --out "$model"

"$build/scripts/bench/saker_kernel_bench" --benchmark_out="$out/kernels.json" \
  --benchmark_out_format=json >"$out/kernels.txt"

run() {  # name, then saker bench flags
  local name=$1
  shift
  "$build/saker" bench --model "$model" --output-json "$out/$name.json" "$@" >"$out/$name.txt"
}
for dtype in auto int8; do
  run "$dtype-b1" --dtype "$dtype" --workload fixed:32:64 --num-requests 4 --max-concurrency 1
  run "$dtype-b8" --dtype "$dtype" --workload fixed:32:64 --num-requests 8 \
    --max-rolling-batch-size 8
  run "$dtype-b32" --dtype "$dtype" --workload fixed:32:64 --num-requests 32 \
    --max-rolling-batch-size 32
  run "$dtype-prefill" --dtype "$dtype" --workload fixed:512:1 --num-requests 3 \
    --max-concurrency 1 --max-rolling-batch-prefill-tokens 512
done

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
k = json.load(open(f"{out}/kernels.json"))
print(f"kernels ({k['context']['host_name']}, {k['context']['num_cpus']} CPUs, {k['context']['date']}):\n")
print("| benchmark | per call | GB/s | of bandwidth | GFLOP/s | of FMA peak |")
print("|---|---|---|---|---|---|")
extra = []
for b in k["benchmarks"]:
    if b["name"].startswith("BM_ReadBandwidth"):
        print(f"| read bandwidth | | {b['GB/s']:.1f} | 1.00 | | |")
    elif b["name"].startswith("BM_FmaPeak"):
        print(f"| FMA peak ({b.get('label', '')}) | | | | {b['GFLOP/s']:.1f} | 1.00 |")
    elif b["name"].startswith("BM_Linear"):
        n = b["name"].replace("BM_Linear/", "").replace("/real_time", "")
        us = b["GFLOP/s"] and 2 * eval(n.split("/")[0].split(":")[1]) * eval(n.split("/")[1].split(":")[1]) \
            * eval(n.split("/")[2].split(":")[1]) / b["GFLOP/s"] / 1e3
        print(f"| linear {n} {b.get('label', '')} | {us:.0f} us | {b['GB/s']:.1f} | "
              f"{b['of_bandwidth']:.2f} | {b['GFLOP/s']:.1f} | {b['of_fma_peak']:.2f} |")
    else:
        extra.append(b)
if extra:
    print("\n| other kernel benchmarks | time | counters |")
    print("|---|---|---|")
    for b in extra:
        c = ", ".join(f"{key} {v:.3g}" for key, v in b.items()
                      if isinstance(v, float) and key not in ("real_time", "cpu_time", "iterations"))
        print(f"| {b['name']} {b.get('label', '')} | {b['real_time']:.0f} {b['time_unit']} | {c} |")
print("\nsaker bench, ~1B model:\n")
print("| weights | run | bandwidth | FMA peak | result | floor | share of floor | paired with each step: p50 (p10-p90) |")
print("|---|---|---|---|---|---|---|---|")
def paired(j, key):
    p = j.get(key, {})
    if not p.get("count"):
        return ""
    return f"{100 * p['p50']:.1f} % ({100 * p['p10']:.0f}-{100 * p['p90']:.0f} %, {p['count']} steps)"
for dtype in ("auto", "int8"):
    w = "bf16" if dtype == "auto" else "int8"
    for b in (1, 8, 32):
        j = json.load(open(f"{out}/{dtype}-b{b}.json"))
        tps = j["avg_batch_size"] * 1e3 / j["tpot_ms"]["p50"]
        floor = j["avg_batch_size"] * 1e3 / j["decode_step_floor_ms"]
        print(f"| {w} | decode, batch {j['avg_batch_size']:.1f} | {j['memory_bandwidth_gbps']:.1f} GB/s "
              f"| {j['fma_peak_gflops']:.0f} GFLOP/s | {tps:.1f} tok/s ({j['tpot_ms']['p50']:.1f} ms/step) "
              f"| {floor:.1f} tok/s | {100 * j['tpot_fraction_of_step_floor']:.0f} % | "
              f"{paired(j, 'decode_step_fraction_of_paired_floor')} |")
    j = json.load(open(f"{out}/{dtype}-prefill.json"))
    floor = j["fma_peak_gflops"] * 1e9 / j["prefill_flops_per_token"]
    print(f"| {w} | prefill, 512 tokens | {j['memory_bandwidth_gbps']:.1f} GB/s | "
          f"{j['fma_peak_gflops']:.0f} GFLOP/s | {j['prefill_tokens_per_s']:.1f} tok/s | {floor:.1f} tok/s | "
          f"{100 * j['prefill_fraction_of_fma_peak']:.0f} % | {paired(j, 'prefill_step_fraction_of_paired_peak')} |")
EOF
