#!/usr/bin/env bash
# The newcomer's first run: build saker, show the structure of the real Falcon-40B config, and
# generate from a small Falcon checkpoint (a fixture whose transformers output is on record).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target saker

shared=../shared/models
if [ -d "$shared/falcon-40b" ]; then
  echo "== saker info --model $shared/falcon-40b"
  "$build/saker" info --model "$shared/falcon-40b"
fi
model=tests/fixtures/gqa8x4-bf16-sharded
prompt=$(sed -n 's/.*"prompt_ids": \[\([0-9, ]*\)\].*/\1/p' "$model/reference.json" | sed -n 2p | tr -d ,)
echo
echo "== saker generate --model $model --prompt-ids \"$prompt\" --max-new-tokens 40 --ignore-eos"
"$build/saker" generate --model "$model" --prompt-ids "$prompt" --max-new-tokens 40 --ignore-eos --stats
echo "(transformers generated: $(sed -n 's/.*"greedy_ids": \[\([0-9, ]*\)\].*/\1/p' "$model/reference.json" | sed -n 2p | tr -d ,))"
