// The CPU linear kernels at the ~1B benchmark model's shapes, held to the two limits this program
// measures first with the same threads: memory read bandwidth (decode: GB/s of weights streamed,
// `of_bandwidth`) and the FMA peak (prefill: GFLOP/s, `of_fma_peak`).
//
// Each call of a kernel is paired with a plain read of as many bytes, or, from 5 tokens on, FMA
// chains of as many FLOPs (the host's bandwidth and FMA rate drift).
// Decode shapes rotate through enough copies of the weight that each pass reads DRAM, as a
// decode step does (one layer's weights fit this machine's L3; a whole model does not).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/host_memory.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/membw.h"

namespace {

using saker::CpuBackend;
using saker::DType;
using saker::Weight;
using saker::WeightLayout;

CpuBackend& backend() {
  static CpuBackend b(0, 16);
  return b;
}

double bandwidth() {
  static const double bw = saker::cpu::measure_read_bandwidth(backend().pool());
  return bw;
}

// 256 MiB on 2 MiB pages for the interleaved reads, handed out in rotating, aligned slices.
struct ReadBuffer {
  static constexpr std::size_t kBytes = std::size_t{256} << 20;
  saker::cpu::HostMemory mem = saker::cpu::allocate_host_memory(kBytes);
  float* data() const { return reinterpret_cast<float*>(mem.get()); }
  ReadBuffer() { std::fill_n(data(), kBytes / sizeof(float), 1.0f); }
  const float* at(std::size_t i, std::int64_t floats) const {
    const auto slots = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(kBytes / sizeof(float)) / std::max<std::int64_t>(floats, 1));
    return data() + (static_cast<std::int64_t>(i) % slots) * floats;
  }
};

const ReadBuffer& read_buffer() {
  static const ReadBuffer b;
  return b;
}

double fma_peak() {
  static const double peak = saker::cpu::measure_fma_peak(backend().pool());
  return peak;
}

// Packed copies of one random [rows, cols] weight, together at least `min_bytes`.
struct PackedCopies {
  std::vector<std::vector<std::byte>> data;
  std::vector<std::vector<float>> scales;
  std::vector<Weight> weights;
  std::size_t bytes_each = 0;

  // pairs: the bf16 dot-product form (kPanels16Pairs) of a bf16 weight; quads: the w8a8 form
  // (kPanels16Quads, dtype I8).
  PackedCopies(DType dtype, bool pairs, bool quads, std::int64_t rows, std::int64_t cols,
               std::size_t min_bytes) {
    std::vector<std::uint16_t> host(static_cast<std::size_t>(rows * cols));
    std::mt19937 rng(1);
    for (auto& v : host) v = saker::f32_to_bf16(std::normal_distribution<float>(0, 0.02f)(rng));
    const Weight src{DType::BF16, host.data(), rows, cols};
    const std::int64_t panels = saker::cpu::panel_count(rows);
    bytes_each = saker::cpu::packed_bytes(dtype, rows,
                                          pairs   ? 2 * saker::cpu::pair_count(cols)
                                          : quads ? 4 * saker::cpu::quad_count(cols)
                                                  : cols);
    const std::size_t copies = std::max<std::size_t>(1, (min_bytes + bytes_each - 1) / bytes_each);
    for (std::size_t c = 0; c < copies; ++c) {
      data.emplace_back(bytes_each);
      // w8a8: each row's sum of codes after the scales.
      scales.emplace_back(dtype == DType::I8 ? panels * saker::cpu::kPanelRows * (quads ? 2 : 1)
                                             : 0);
      float* sc = dtype == DType::I8 ? scales.back().data() : nullptr;
      const std::int64_t groups = saker::cpu::group_count(rows);
      backend().pool().parallel_for(groups, [&](std::int64_t b, std::int64_t e, unsigned) {
        if (pairs)
          saker::cpu::pack_bf16_pairs(src, data.back().data(), b, e);
        else if (quads)
          saker::cpu::pack_int8_quads(
              src, data.back().data(), sc,
              reinterpret_cast<std::int32_t*>(sc + panels * saker::cpu::kPanelRows), b, e);
        else
          saker::cpu::pack_panels(src, dtype, data.back().data(), sc, b, e);
      });
      weights.push_back({dtype, data.back().data(), rows, cols,
                         pairs   ? WeightLayout::kPanels16Pairs
                         : quads ? WeightLayout::kPanels16Quads
                                 : WeightLayout::kPanels16,
                         sc});
    }
  }
};

// Linear [rows, cols] for `tokens` tokens (args: rows, cols, tokens, kind: 0 bf16 with fp32
// FMAs, 1 int8, 2 bf16 dot products, 3 w8a8).
void BM_Linear(benchmark::State& state) {
  const auto rows = state.range(0), cols = state.range(1), tokens = state.range(2);
  const bool pairs = state.range(3) == 2, quads = state.range(3) == 3;
  const DType dtype = state.range(3) == 1 || quads ? DType::I8 : DType::BF16;
  // 256 MiB of copies: eight times the L3, so each pass streams from DRAM.
  const PackedCopies w(dtype, pairs, quads, rows, cols, std::size_t{256} << 20);
  std::vector<float> x(static_cast<std::size_t>(tokens * cols), 0.5f),
      y(static_cast<std::size_t>(tokens * rows));
  // This host's bandwidth drifts (a shared machine), so every call of the kernel is followed by
  // a plain read of as many bytes (its own 2 MiB pages, rotating over 256 MiB as the weights
  // do): the two times, summed over the run, give the kernel's share of what the memory
  // delivered meanwhile.
  // Likewise a call of more than 4 tokens (arithmetic-bound) is followed by FMA chains of as
  // many FLOPs: this host's FMA rate also drops for seconds at a time (a busy neighbour).
  const double bytes = saker::weight_bytes(w.weights[0]);
  const double flops = 2.0 * static_cast<double>(rows * cols * tokens);
  const bool compute_bound = tokens > 4;
  const auto floats = static_cast<std::int64_t>(bytes / sizeof(float)) / 16 * 16;
  const ReadBuffer& rb = read_buffer();
  double t_kernel = 0, t_ref = 0, ref_flops = 0;
  float sink = 0;
  std::size_t i = 0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    const auto t0 = clock::now();
    backend().linear(x.data(), tokens, w.weights[i % w.weights.size()], nullptr, y.data());
    const auto t1 = clock::now();
    if (compute_bound)
      ref_flops += saker::cpu::fma_pass(backend().pool(), flops);
    else
      sink += saker::cpu::read_pass(backend().pool(), rb.at(i, floats), floats);
    const auto t2 = clock::now();
    t_kernel += std::chrono::duration<double>(t1 - t0).count();
    t_ref += std::chrono::duration<double>(t2 - t1).count();
    ++i;
    benchmark::DoNotOptimize(y.data());
  }
  benchmark::DoNotOptimize(sink);
  const double calls = static_cast<double>(state.iterations());
  const double per_call = t_kernel / calls;
  state.counters["GB/s"] = bytes / per_call / 1e9;
  state.counters["GFLOP/s"] = flops / per_call / 1e9;
  if (compute_bound) {
    state.counters["fma_GFLOP/s"] = ref_flops / t_ref / 1e9;
    state.counters["of_fma_peak"] = flops * calls / t_kernel / (ref_flops / t_ref);
    state.counters["of_bandwidth"] = bytes / per_call / bandwidth();
  } else {
    state.counters["read_GB/s"] = bytes * calls / t_ref / 1e9;
    state.counters["of_bandwidth"] = t_ref / t_kernel;
    state.counters["of_fma_peak"] = flops / per_call / fma_peak();
  }
  state.SetLabel(quads ? "w8a8" : dtype == DType::I8 ? "int8" : pairs ? "bf16 dot" : "bf16");
}

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) state.counters["GB/s"] = bandwidth() / 1e9;
}

void BM_FmaPeak(benchmark::State& state) {
  for (auto _ : state) state.counters["GFLOP/s"] = fma_peak() / 1e9;
  state.SetLabel(std::string(saker::cpu::isa_name(saker::cpu::detect_isa())));
}

}  // namespace

BENCHMARK(BM_ReadBandwidth)->Iterations(1);
BENCHMARK(BM_FmaPeak)->Iterations(1);
// The ~1B benchmark model: qkv [3072, 2048], dense [2048, 2048], MLP [8192, 2048] and
// [2048, 8192], lm_head [65024, 2048]. Decode at batch 1, 8, 16 and 32; prefill chunks of 256
// tokens; kind 2 the same with bf16 dot products.
BENCHMARK(BM_Linear)
    ->ArgNames({"rows", "cols", "tokens", "kind"})
    ->Args({3072, 2048, 1, 0})
    ->Args({2048, 2048, 1, 0})
    ->Args({8192, 2048, 1, 0})
    ->Args({2048, 8192, 1, 0})
    ->Args({65024, 2048, 1, 0})
    ->Args({8192, 2048, 1, 1})
    ->Args({65024, 2048, 1, 1})
    ->Args({8192, 2048, 8, 0})
    ->Args({8192, 2048, 8, 1})
    ->Args({8192, 2048, 32, 0})
    ->Args({8192, 2048, 32, 1})
    ->Args({8192, 2048, 16, 0})
    ->Args({8192, 2048, 1, 2})
    ->Args({65024, 2048, 1, 2})
    ->Args({8192, 2048, 8, 2})
    ->Args({8192, 2048, 16, 2})
    ->Args({8192, 2048, 32, 2})
    ->Args({8192, 2048, 256, 2})
    ->Args({2048, 8192, 256, 2})
    ->Args({8192, 2048, 1, 3})
    ->Args({8192, 2048, 16, 3})
    ->Args({8192, 2048, 256, 3})
    ->Args({8192, 2048, 256, 0})
    ->Args({2048, 8192, 256, 0})
    ->Args({8192, 2048, 256, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK_MAIN();
