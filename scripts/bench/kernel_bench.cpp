// Weight-streaming matrix-vector products at decode shapes, in GB/s of weights read, against the
// memory read bandwidth that this program measures first with the same threads.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/membw.h"

namespace {

using saker::CpuBackend;
using saker::DType;
using saker::Weight;

CpuBackend& backend() {
  static CpuBackend b(0, 16);
  return b;
}

double bandwidth() {
  static const double bw = saker::cpu::measure_read_bandwidth(backend().pool());
  return bw;
}

// Linear [rows, cols] in bf16 for `tokens` tokens (args: rows, cols, tokens).
void BM_LinearBf16(benchmark::State& state) {
  const auto rows = state.range(0), cols = state.range(1), tokens = state.range(2);
  std::vector<std::uint16_t> w(static_cast<std::size_t>(rows * cols));
  std::mt19937 rng(1);
  for (auto& v : w) v = saker::f32_to_bf16(std::normal_distribution<float>(0, 0.02f)(rng));
  std::vector<float> x(static_cast<std::size_t>(tokens * cols), 0.5f),
      y(static_cast<std::size_t>(tokens * rows));
  const Weight wt{DType::BF16, w.data(), rows, cols};
  for (auto _ : state) {
    backend().linear(x.data(), tokens, wt, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(w.size() * 2);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.counters["GB/s"] =
      benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_bandwidth"] =
      benchmark::Counter(bytes / bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * cols * tokens / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) state.counters["GB/s"] = bandwidth() / 1e9;
}

}  // namespace

BENCHMARK(BM_ReadBandwidth)->Iterations(1);
// The ~1B benchmark model's shapes: qkv [3072, 2048], dense [2048, 2048], MLP [8192, 2048] and
// [2048, 8192], lm_head [65024, 2048]; batch 1 (decode) and 8.
BENCHMARK(BM_LinearBf16)
    ->Args({3072, 2048, 1})
    ->Args({8192, 2048, 1})
    ->Args({2048, 8192, 1})
    ->Args({65024, 2048, 1})
    ->Args({8192, 2048, 8})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK_MAIN();
