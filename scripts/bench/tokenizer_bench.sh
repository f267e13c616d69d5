#!/usr/bin/env bash
# Encode throughput of saker's tokenizer next to Hugging Face tokenizers, single-threaded, on the
# same corpus (tests/fixtures/tokenizers/corpus.jsonl) with the real Falcon tokenizer, in one run
# on one machine. Usage: scripts/bench/tokenizer_bench.sh [BUILD_DIR]
# Needs the Python `tokenizers` package (scripts/requirements-fixtures.txt) and Google Benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
cmake --build "$build" --target saker_tokenizer_bench >/dev/null
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
bench="$build/scripts/bench/saker_tokenizer_bench"
python3 - "$bench" <<'PY'
import json, os, statistics, subprocess, sys, time
from tokenizers import Tokenizer

bench = sys.argv[1]
tok_path = "../shared/models/falcon-tokenizer/tokenizer.json"
texts = [json.loads(l)["text"] for l in open("tests/fixtures/tokenizers/corpus.jsonl", encoding="utf-8")]
mb = sum(len(t.encode()) for t in texts) / 1e6

def hf_runs(encode, passes=15):
    encode()  # the first pass fills the word cache, as the C++ warm-up does
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        encode()
        rates.append(mb / (time.perf_counter() - t0))
    return statistics.median(rates)

def hf_first_pass(runs=5):
    rates = []
    for _ in range(runs):
        tok = Tokenizer.from_file(tok_path)
        t0 = time.perf_counter()
        tok.encode_batch(texts)
        rates.append(mb / (time.perf_counter() - t0))
    return statistics.median(rates)

t0 = time.perf_counter()
hf = Tokenizer.from_file(tok_path)
hf_load = time.perf_counter() - t0
hf_batch = hf_runs(lambda: hf.encode_batch(texts))
hf_loop = hf_runs(lambda: [hf.encode(t) for t in texts])
hf_cold = hf_first_pass()

out = subprocess.run([bench, "--benchmark_format=json", "--benchmark_repetitions=5",
                      "--benchmark_report_aggregates_only=true"],
                     check=True, capture_output=True, text=True).stdout
rows = {b["name"]: b for b in json.loads(out)["benchmarks"]}
def med(name, key="bytes_per_second"):
    return rows[f"{name}_median"][key]
saker_warm = med("BM_EncodeCorpus") / 1e6
saker_cold = med("BM_EncodeCorpusFirstPass/iterations:5") / 1e6
saker_load = med("BM_Load", "real_time") / 1e3

print(f"corpus: {len(texts)} strings, {mb:.3f} MB; tokenizers {__import__('tokenizers').__version__}, "
      f"RAYON_NUM_THREADS=1")
print(f"{'':34s} {'saker':>10s} {'HF':>10s} {'ratio':>7s}")
print(f"{'encode, warm cache (MB/s)':34s} {saker_warm:10.2f} {hf_batch:10.2f} {saker_warm / hf_batch:7.2f}"
      "   (HF: encode_batch)")
print(f"{'encode, warm cache (MB/s)':34s} {saker_warm:10.2f} {hf_loop:10.2f} {saker_warm / hf_loop:7.2f}"
      "   (HF: encode loop)")
print(f"{'encode, first pass (MB/s)':34s} {saker_cold:10.2f} {hf_cold:10.2f} {saker_cold / hf_cold:7.2f}"
      "   (fresh tokenizer)")
print(f"{'load tokenizer.json (s)':34s} {saker_load:10.3f} {hf_load:10.3f}")
print(f"decode (saker, MB of text/s): {med('BM_DecodeCorpus') / 1e6:.1f}")
PY
