// Tokenizer throughput on the reference corpus (tests/fixtures/tokenizers/corpus.jsonl) with the
// real Falcon tokenizer: load time, encode MB/s with a warm word cache and on a first pass, decode.
// scripts/bench/tokenizer_bench.sh runs it next to Hugging Face tokenizers.
// Paths: SAKER_TOKENIZER_JSON and SAKER_TOKENIZER_CORPUS override the defaults.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"

namespace {

std::string path_from(const char* env, const char* fallback) {
  const char* v = std::getenv(env);
  return v ? v : std::string(SAKER_SOURCE_DIR) + "/" + fallback;
}

const std::string& tokenizer_path() {
  static const std::string p =
      path_from("SAKER_TOKENIZER_JSON", "../shared/models/falcon-tokenizer/tokenizer.json");
  return p;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> texts = [] {
    std::ifstream in(path_from("SAKER_TOKENIZER_CORPUS", "tests/fixtures/tokenizers/corpus.jsonl"));
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(nlohmann::json::parse(line)["text"]);
    return out;
  }();
  return texts;
}

double corpus_bytes() {
  double n = 0;
  for (const auto& t : corpus()) n += static_cast<double>(t.size());
  return n;
}

const saker::Tokenizer& tokenizer() {
  static const saker::Tokenizer t = saker::Tokenizer::load(tokenizer_path());
  return t;
}

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(saker::Tokenizer::load(tokenizer_path()));
}

// The whole corpus per iteration, one encode per line; the word cache is warm after the first.
void BM_EncodeCorpus(benchmark::State& state) {
  const saker::Tokenizer& tok = tokenizer();
  std::size_t ids = 0;
  for (auto _ : state)
    for (const auto& t : corpus()) ids += tok.encode(t).size();
  benchmark::DoNotOptimize(ids);
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

// One pass over the corpus by a freshly loaded tokenizer: every word misses the cache once.
void BM_EncodeCorpusFirstPass(benchmark::State& state) {
  std::size_t ids = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::optional<saker::Tokenizer> tok(saker::Tokenizer::load(tokenizer_path()));
    state.ResumeTiming();
    for (const auto& t : corpus()) ids += tok->encode(t).size();
    state.PauseTiming();
    tok.reset();
    state.ResumeTiming();
  }
  benchmark::DoNotOptimize(ids);
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

void BM_DecodeCorpus(benchmark::State& state) {
  const saker::Tokenizer& tok = tokenizer();
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& t : corpus()) ids.push_back(tok.encode(t));
  std::size_t bytes = 0;
  for (auto _ : state)
    for (const auto& i : ids) bytes += tok.decode(i).size();
  benchmark::DoNotOptimize(bytes);
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus_bytes()) * state.iterations());
}

}  // namespace

BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeCorpus)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeCorpusFirstPass)->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(BM_DecodeCorpus)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
