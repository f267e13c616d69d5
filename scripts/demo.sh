#!/usr/bin/env bash
# The newcomer's first run: build saker, show the real Falcon-40B config's shard plan, then run the
# trained demo model (models/falcon-demo) across 2 MPI ranks: a text prompt, an offline JSONL job,
# and the server answering an OpenAI chat request, a streamed TGI request and a JSON-schema
# request. Every command is printed before it runs.
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

# The demo model: a small Falcon trained on public-domain English (models/falcon-demo/README.md),
# with Falcon-40B's decoder; its 6 query heads in 3 KV groups split 4 + 2 over the 2 ranks.
model=models/falcon-demo
run() {  # prints a command, then runs it
  echo
  echo "== $*"
  "$@"
}
run "$build/saker" info --model "$model" --tp 2
run "${mpi[@]}" "$build/saker" generate --model "$model" --prompt "And God said unto Noah," \
  --max-new-tokens 48 --temperature 0.8 --top-p 0.95 --seed 3

# An offline job: several prompts, each with its own parameters, through the rolling batch.
job="$build/demo-job.jsonl"
cat > "$job" <<'JSONL'
{"id": "greedy", "prompt": "And the LORD said unto Moses,", "parameters": {"max_new_tokens": 32}}
{"id": "sampled", "prompt": "In the beginning", "parameters": {"max_new_tokens": 32, "do_sample": true, "temperature": 0.8, "seed": 7}}
{"id": "chat", "prompt": "User: What is a hacker?\nFalcon:", "parameters": {"max_new_tokens": 64, "do_sample": true, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 2, "stop": ["\nUser:"]}}
JSONL
echo
echo "== cat $job"
cat "$job"
run "${mpi[@]}" "$build/saker" generate --model "$model" --input "$job" --output "$build/demo-results.jsonl"
cat "$build/demo-results.jsonl"

# Serving: the HTTP APIs on rank 0 of 2 ranks. A streaming request's text is printed as it arrives.
port=${SAKER_DEMO_PORT:-8080}
echo
echo "== ${mpi[*]} $build/saker serve --model $model --port $port &"
"${mpi[@]}" "$build/saker" serve --model "$model" --port "$port" > "$build/demo-serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/ping")" = 200 ] && break
  sleep 0.2
done
# Each request is printed as a curl command that can be copied.
post() {  # post PATH BODY [-N]: prints the curl command (on stderr: stdout is the answer), runs it
  echo >&2
  echo "== curl -s ${3:-} localhost:$port$1 -H 'Content-Type: application/json' -d '$2'" >&2
  curl -s ${3:-} "localhost:$port$1" -H 'Content-Type: application/json' -d "$2"
}
post /v1/chat/completions '{"model": "falcon-demo", "messages": [{"role": "user", "content": "What is a hacker?"}], "max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 2, "stop": ["\nUser:"]}' |
  python3 -c 'import json, sys; c = json.load(sys.stdin)["choices"][0]; print(c["message"]["content"].strip(), "(finish:", c["finish_reason"] + ")")'
echo "(a TGI stream, its text printed as it arrives:)"
post /generate_stream '{"inputs": "And the LORD said unto Moses,", "parameters": {"max_new_tokens": 48, "do_sample": true, "temperature": 0.8, "seed": 1, "details": true}}' -N |
  python3 -u -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data:"):
        event = json.loads(line[5:])
        print(event["token"]["text"], end="", flush=True)
        if event["details"]:
            print("\n(finish: %s, %d tokens)" % (event["details"]["finish_reason"], event["details"]["generated_tokens"]))
'
post /v1/completions '{"model": "falcon-demo", "prompt": "A person as JSON:", "max_tokens": 40, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": false}}}}' |
  python3 -c 'import json, sys; c = json.load(sys.stdin)["choices"][0]; print(c["text"], "(finish:", c["finish_reason"] + ")")'
kill -TERM "$server"
wait "$server" || true
trap - EXIT
echo
echo "== server log"
cat "$build/demo-serve.log"
