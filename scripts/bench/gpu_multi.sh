#!/usr/bin/env bash
# For the day a machine with several GPUs is lent (not run yet: docs/gpu-runs.md). Tensor
# parallelism over NCCL, one rank per GPU: greedy tokens at tp 2, 4 and 8 (as many as the GPUs
# allow) against tp 1 on three fixtures, then the Falcon-40B shape at tp = every GPU with random
# bf16 weights made on the devices: `saker bench` at concurrency 1, 8 and 64 (step time with its
# all-reduces, output tokens/s, TTFT and TPOT). Results in OUT (default gpu-multi/).
#
#   scripts/bench/gpu_multi.sh --prebuilt DIR [--out DIR]     (DIR: scripts/bench/gpu_pack.sh's)
set -uo pipefail
out="gpu-multi"
# shellcheck source=scripts/bench/gpu_prebuilt.sh
source "$(dirname "$0")/gpu_prebuilt.sh"
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
[ "$gpus" -ge 2 ] || { echo "gpu_multi.sh: $gpus GPU(s) visible; this run needs 2 or more" >&2; exit 1; }
mpi=(mpirun --allow-run-as-root --oversubscribe)
echo "== saker multi-GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ), $gpus GPUs"
nvidia-smi topo -m 2>/dev/null | tee "$out/topology.txt"
status=0

echo "== tp 2, 4, 8 over NCCL against tp 1, greedy tokens"
for fx in mqa7-bf16 gqa8x4-bf16-sharded rw-alibi-fp32; do
  dir=$root/tests/fixtures/$fx
  ids=$(python3 -c "import json; print(' '.join(map(str, json.load(open('$dir/reference.json'))['cases'][1]['prompt_ids'])))")
  args=(generate --model "$dir" --prompt-ids "$ids" --max-new-tokens 24 --ignore-eos --device cuda --comm nccl)
  one=$(timeout 120 "${mpi[@]}" -np 1 "$bin/saker" "${args[@]}" 2>&1)
  for np in 2 4 8; do
    [ "$np" -le "$gpus" ] || continue
    got=$(timeout 120 "${mpi[@]}" -np "$np" "$bin/saker" "${args[@]}" 2>&1)
    echo "$fx tp $np: $([ "$got" = "$one" ] && echo "same as tp 1" || echo "DIFFERS from tp 1: $got (tp 1: $one)")"
  done
done 2>&1 | tee "$out/tp_nccl.log"
grep -q DIFFERS "$out/tp_nccl.log" && status=1

echo "== Falcon-40B shape at tp $gpus over NCCL (random bf16 weights)"
work=${TMPDIR:-/tmp}/saker-falcon40b-sparse
cfg=${SAKER_SHARED:-$root/../shared}/models/falcon-40b/config.json
"$bin/saker_gpu_bench" --checkpoint-only --config "$cfg" --workdir "$work" >/dev/null || status=1
for c in 1 8 64; do
  timeout 400 "${mpi[@]}" -np "$gpus" "$bin/saker" bench --model "$work" --device cuda \
    --random-weights --comm nccl --workload fixed:1024:128 --num-requests $((c < 8 ? 8 : c)) \
    --max-concurrency "$c" --output-json "$out/40b-tp$gpus-c$c.json" 2>&1 | tee "$out/40b-tp$gpus-c$c.log" || status=1
done
rm -rf "$work"
echo "== done (status $status); logs in $out"
exit "$status"
