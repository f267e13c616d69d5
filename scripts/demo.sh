#!/usr/bin/env bash
# The newcomer's first run: build saker, show the real Falcon-40B config's structure and shard
# plan, then generate from a small Falcon checkpoint across 2 MPI ranks: from token ids (next to
# what transformers generated), from a text prompt, as an offline JSONL job, and served over HTTP
# with a streaming request.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target saker

mpi=(mpirun -np 2)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)

shared=../shared/models
if [ -d "$shared/falcon-40b" ]; then
  echo "== saker info --model $shared/falcon-40b --tp 8"
  "$build/saker" info --model "$shared/falcon-40b" --tp 8
fi

model=tests/fixtures/gqa8x4-bf16-sharded
prompt=$(sed -n 's/.*"prompt_ids": \[\([0-9, ]*\)\].*/\1/p' "$model/reference.json" | sed -n 2p | tr -d ,)
echo
echo "== ${mpi[*]} saker generate --model $model --prompt-ids \"$prompt\" --max-new-tokens 40 --ignore-eos"
"${mpi[@]}" "$build/saker" generate --model "$model" --prompt-ids "$prompt" --max-new-tokens 40 --ignore-eos
echo "(transformers generated: $(sed -n 's/.*"greedy_ids": \[\([0-9, ]*\)\].*/\1/p' "$model/reference.json" | sed -n 2p | tr -d ,))"

# A text prompt needs a tokenizer whose ids fit the tiny model's 384-token vocabulary.
demo="$build/demo-model"
mkdir -p "$demo"
cp "$model"/config.json "$model"/model*.safetensors* "$demo"/
cp tests/fixtures/tokenizers/small384/tokenizer.json "$demo"/
echo
echo "== ${mpi[*]} saker generate --model $demo --prompt \"The falcon flies\" --max-new-tokens 24"
"${mpi[@]}" "$build/saker" generate --model "$demo" --prompt "The falcon flies" --max-new-tokens 24 --ignore-eos

# An offline job: several prompts, each with its own parameters, through the rolling batch.
job="$build/demo-job.jsonl"
cat > "$job" <<'JSONL'
{"id": "a", "prompt": "The falcon flies", "parameters": {"max_new_tokens": 16, "ignore_eos": true}}
{"id": "b", "prompt": "Hello", "parameters": {"max_new_tokens": 8, "do_sample": true, "temperature": 0.8, "seed": 7}}
{"id": "c", "prompt": "One two three", "parameters": {"max_new_tokens": 12, "min_new_tokens": 4, "logprobs": 2}}
JSONL
echo
echo "== ${mpi[*]} saker generate --model $demo --input $job --output $build/demo-results.jsonl"
"${mpi[@]}" "$build/saker" generate --model "$demo" --input "$job" --output "$build/demo-results.jsonl"
cat "$build/demo-results.jsonl"

# Serving: the HTTP APIs on rank 0 of 2 ranks. A streaming request's text is printed as it arrives.
port=${SAKER_DEMO_PORT:-8080}
echo
echo "== ${mpi[*]} saker serve --model $demo --port $port &"
"${mpi[@]}" "$build/saker" serve --model "$demo" --port "$port" > "$build/demo-serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/ping")" = 200 ] && break
  sleep 0.2
done
echo "== curl -N localhost:$port/generate_stream (text as it arrives)"
curl -sN "localhost:$port/generate_stream" -H 'Content-Type: application/json' \
  -d '{"inputs": "The falcon flies", "parameters": {"max_new_tokens": 24, "details": true}}' |
  python3 -u -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data:"):
        event = json.loads(line[5:])
        print(event["token"]["text"], end="", flush=True)
        if event["details"]:
            print("\n(finish: %s, %d tokens)" % (event["details"]["finish_reason"], event["details"]["generated_tokens"]))
'
echo "== curl localhost:$port/v1/completions"
curl -s "localhost:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo-model", "prompt": "Hello", "max_tokens": 8, "temperature": 0}'
echo
echo "== curl localhost:$port/v1/completions with a JSON schema (structured output)"
curl -s "localhost:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo-model", "prompt": "A person:", "max_tokens": 60, "temperature": 0,
       "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema":
         {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
          "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": false}}}}' |
  python3 -c 'import json, sys; c = json.load(sys.stdin)["choices"][0]; print(c["text"], "(finish:", c["finish_reason"] + ")")'
kill -TERM "$server"
wait "$server" || true
trap - EXIT
echo "== server log"
cat "$build/demo-serve.log"
