// Structured outputs' cost on rank 0 (docs/structured-outputs.md): the token mask of a constrained
// row per decode step with the real Falcon tokenizer (65024 ids), for rows one at a time and a
// batch of 16 constrained rows (what a step at batch 16 adds), at points inside a JSON document
// where many or few tokens are allowed; and the compile time of every schema of the test suite,
// each in a fresh compiler (no cache).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/constraints/compiler.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

using saker::Constraint;
using saker::ConstraintCompiler;
using saker::ConstraintMatcher;
constexpr std::int64_t kVocab = 65024;

const saker::Tokenizer& tokenizer() {
  static const saker::Tokenizer t = saker::Tokenizer::load(
      std::string(SAKER_SOURCE_DIR) + "/../shared/models/falcon-tokenizer/tokenizer.json");
  return t;
}

nlohmann::ordered_json suite() {
  std::ifstream in(std::string(SAKER_SOURCE_DIR) + "/tests/fixtures/structured/schemas.json");
  return nlohmann::ordered_json::parse(in);
}

Constraint product_schema() {
  for (const auto& e : suite())
    if (e["name"] == "product")
      return {Constraint::Kind::kJsonSchema, e["schema"].dump(), {}, "bench"};
  return {};
}

// Args: rows per step (1 or 16), and where the rows stand: 0 inside a free string (most tokens
// allowed), 1 after a key (few allowed).
void BM_MaskStep(benchmark::State& state) {
  static const ConstraintCompiler compiler(tokenizer(), kVocab, {11});
  const auto rows = state.range(0);
  const std::string prefix = state.range(1) == 0
                                 ? R"({"sku": "ABC-1234", "price": 1, "stock": 2, "tags": [")"
                                 : R"({"sku": "ABC-1234", "price")";
  const auto compiled = compiler.compile(product_schema());
  std::vector<ConstraintMatcher> matchers;
  for (std::int64_t r = 0; r < rows; ++r) {
    matchers.emplace_back(compiled);
    for (const std::int32_t t : tokenizer().encode(prefix)) matchers.back().accept(t);
  }
  std::vector<float> logits(static_cast<std::size_t>(kVocab * rows), 0.0f);
  std::int64_t allowed = 0;
  for (auto _ : state)
    for (std::int64_t r = 0; r < rows; ++r)
      allowed = matchers[static_cast<std::size_t>(r)].mask(
          std::span(logits).subspan(static_cast<std::size_t>(r * kVocab), kVocab));
  state.counters["allowed"] = static_cast<double>(allowed);
  state.counters["us_per_row"] = benchmark::Counter(
      static_cast<double>(rows) * 1e-6,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_MaskStep)
    ->ArgNames({"rows", "state"})
    ->ArgsProduct({{1, 16}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

// One constrained row decoding a whole answer, token by token (mask, greedy choice, advance),
// from fixed pseudo-random logits. Arg: 0 without a budget; n > 0 with max_tokens n (the budget
// rule: a closing search after every token). us_per_token compares the two.
void BM_ConstrainedDecode(benchmark::State& state) {
  static const ConstraintCompiler compiler(tokenizer(), kVocab, {11});
  const auto compiled = compiler.compile(product_schema());
  const std::int64_t budget = state.range(0);
  const std::int64_t steps = budget > 0 ? budget : 256;
  std::vector<std::vector<float>> rows(static_cast<std::size_t>(steps));
  std::uint64_t x = 88172645463325252ull;
  for (auto& row : rows) {
    row.resize(static_cast<std::size_t>(kVocab));
    for (float& v : row) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = static_cast<float>(x >> 40) * 0x1p-24f * 8.0f;
    }
  }
  std::vector<float> logits;
  std::int64_t tokens = 0;
  for (auto _ : state) {
    ConstraintMatcher m(compiled);
    for (std::int64_t step = 0; step < steps && !m.terminated(); ++step) {
      logits = rows[static_cast<std::size_t>(step)];
      const std::int64_t left = budget > 0 ? budget - step : ConstraintMatcher::kUnbounded;
      m.mask(logits, left);
      const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
      m.advance(static_cast<std::int32_t>(best), left);
      ++tokens;
    }
  }
  state.counters["us_per_token"] =
      benchmark::Counter(static_cast<double>(tokens) * 1e-6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["tokens"] = static_cast<double>(tokens) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_ConstrainedDecode)
    ->ArgName("max_tokens")
    ->Arg(0)
    ->Arg(24)
    ->Arg(64)
    ->Arg(256)
    ->Unit(benchmark::kMillisecond);

// Args: the schema's index in the suite, and whether the budget rule's shortest answer is found
// too (what validation does on a schema's first request); each iteration a fresh compiler.
void BM_CompileSchema(benchmark::State& state) {
  const auto s = suite()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(s["name"].get<std::string>());
  const Constraint c{Constraint::Kind::kJsonSchema, s["schema"].dump(), {}, "bench"};
  for (auto _ : state) {
    state.PauseTiming();
    auto compiler =
        std::make_unique<ConstraintCompiler>(tokenizer(), kVocab, std::vector<std::int64_t>{11});
    state.ResumeTiming();
    const auto compiled = compiler->compile(c);
    // The budget rule's shortest answer, found once per compiled schema (at validation).
    if (state.range(1)) benchmark::DoNotOptimize(saker::tokens_to_close(*compiled));
    state.PauseTiming();
    compiler.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_CompileSchema)
    ->ArgNames({"schema", "with_shortest"})
    ->ArgsProduct({benchmark::CreateDenseRange(0, 41, 1), {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
