#!/usr/bin/env bash
# Issue 23's GPU run, for one lent card (about 8 minutes): the sharded CUDA path at tp 2 and 4
# on ONE GPU (ranks share it, collectives staged through the host: --comm mpi) against tp 1 on
# the fixtures, then the Falcon-40B shape (../shared/models/falcon-40b/config.json, random
# weights made on the device): decode at batch 1, 8, 32, 64 and prefill of 2048 tokens at tp 1
# (bf16 needs about 84 GB: an H200), and tp 2 sharing the card through `saker bench`, which
# shows a step with its all-reduces. Results in OUT (default gpu-40b/).
#
#   scripts/bench/gpu40b.sh --prebuilt DIR [--out DIR]     (DIR: scripts/bench/gpu_pack.sh's)
#
# Prepared here without a GPU (docs/gpu-runs.md). First the GPU tests of --dtype int8|fp8 on the
# CUDA backend. The 40B shape runs in bf16 only (random weights are made for stored dtypes; tp 1
# needs the memory: on an 80 GB card it is skipped and said so).
set -uo pipefail
out="gpu-40b"
# shellcheck source=scripts/bench/gpu_prebuilt.sh
source "$(dirname "$0")/gpu_prebuilt.sh"
mpi=(mpirun --allow-run-as-root --oversubscribe)
command -v mpirun >/dev/null || { echo "gpu40b.sh: mpirun is needed (tp on one card)" >&2; exit 1; }
echo "== saker issue-23 GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
status=0

echo "== GPU tests of --dtype int8 and fp8 (the CPU backend's codes, scales and logits)"
SAKER_FIXTURES_DIR=$root/tests/fixtures timeout 200 "$bin/saker_gpu_tests" \
  "cuda int8 and fp8 weights*" "cuda model: --dtype int8 and fp8*" 2>&1 | tail -20 | tee "$out/int8_fp8_tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== tp 2 and 4 on one card (--comm mpi) against tp 1, greedy tokens"
for fx in mqa7-bf16 gqa8x4-bf16-sharded rw-alibi-fp32; do
  dir=$root/tests/fixtures/$fx
  ids=$(python3 -c "import json; print(' '.join(map(str, json.load(open('$dir/reference.json'))['cases'][1]['prompt_ids'])))")
  args=(generate --model "$dir" --prompt-ids "$ids" --max-new-tokens 24 --ignore-eos --device cuda --comm mpi)
  one=$(timeout 120 "${mpi[@]}" -np 1 "$bin/saker" "${args[@]}" 2>&1)
  for np in 2 4; do
    got=$(timeout 120 "${mpi[@]}" -np "$np" "$bin/saker" "${args[@]}" 2>&1)
    verdict=$([ "$got" = "$one" ] && echo "same as tp 1" || { status=1; echo "DIFFERS from tp 1"; })
    echo "$fx tp $np: $verdict"; [ "$got" = "$one" ] || { echo "  tp 1: $one"; echo "  tp $np: $got"; }
  done
done 2>&1 | tee "$out/tp_one_card.log"
grep -q DIFFERS "$out/tp_one_card.log" && status=1

cfg=${SAKER_SHARED:-$root/../shared}/models/falcon-40b/config.json
if [ "${mem_mib:-0}" -ge 100000 ]; then
  echo "== Falcon-40B shape, bf16, tp 1: decode and prefill"
  timeout 400 "$bin/saker_gpu_bench" --config "$cfg" --quick --batches 1,8,32,64 --kv-cache-dtype bf16 \
    --prefill-tokens 2048 --out "$out/40b-tp1" 2>&1 | tee "$out/40b-tp1.log" || status=1
else
  echo "== Falcon-40B shape, bf16, tp 1: skipped, ${mem_mib:-?} MiB is under the ~84 GB of weights"
fi

echo "== Falcon-40B shape, tp 2 sharing the card (--comm mpi): saker bench"
work=${TMPDIR:-/tmp}/saker-falcon40b-sparse
"$bin/saker_gpu_bench" --checkpoint-only --config "$cfg" --workdir "$work" >/dev/null || status=1
if [ "${mem_mib:-0}" -ge 100000 ]; then
  for c in 1 8; do
    timeout 300 "${mpi[@]}" -np 2 "$bin/saker" bench --model "$work" --device cuda --random-weights \
      --comm mpi --workload fixed:512:64 --num-requests $((c < 4 ? 4 : c)) --max-concurrency "$c" \
      --output-json "$out/40b-tp2-c$c.json" 2>&1 | tee "$out/40b-tp2-c$c.log" || status=1
  done
else
  echo "skipped: two halves of 84 GB do not fit one ${mem_mib:-?} MiB card"
fi
rm -rf "$work"
echo "== done (status $status); logs in $out"
exit "$status"
