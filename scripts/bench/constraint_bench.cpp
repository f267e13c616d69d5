// Structured outputs' cost on rank 0 (docs/structured-outputs.md): the token mask of a constrained
// row per decode step with the real Falcon tokenizer (65024 ids), for rows one at a time and a
// batch of 16 constrained rows (what a step at batch 16 adds), at points inside a JSON document
// where many or few tokens are allowed; and the compile time of every schema of the test suite,
// each in a fresh compiler (no cache).
#include <benchmark/benchmark.h>

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

// Arg: the schema's index in the suite; each iteration a fresh compiler (no cache).
void BM_CompileSchema(benchmark::State& state) {
  const auto s = suite()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(s["name"].get<std::string>());
  const Constraint c{Constraint::Kind::kJsonSchema, s["schema"].dump(), {}, "bench"};
  for (auto _ : state) {
    state.PauseTiming();
    auto compiler =
        std::make_unique<ConstraintCompiler>(tokenizer(), kVocab, std::vector<std::int64_t>{11});
    state.ResumeTiming();
    benchmark::DoNotOptimize(compiler->compile(c));
    state.PauseTiming();
    compiler.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_CompileSchema)->DenseRange(0, 41)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
