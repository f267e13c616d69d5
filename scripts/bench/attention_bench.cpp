// Decode attention over the paged KV cache at the ~1B benchmark model's shape (32 query heads,
// 8 KV heads, head_dim 64, blocks of 16), in GB/s of keys and values read and tokens/s; and GELU
// in elements/s, per ISA, next to the scalar std::erf loop it replaced.
//
// Each pass reads another layer's KV cache from a set larger than the L3, so keys and values come
// from DRAM as in a decode step (every other layer's weights and cache pass through in between).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"

namespace {

using saker::CpuBackend;
namespace cpu = saker::cpu;

constexpr std::int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 64, kBlock = 16;
constexpr std::int64_t kMaxContext = 2048;

CpuBackend& attention_backend() {
  static CpuBackend b(0, kMaxContext);
  return b;
}

// Labels a benchmark with its ISA, or skips it where this processor lacks the ISA.
bool use_isa(benchmark::State& state, std::int64_t arg) {
  const auto isa = static_cast<cpu::Isa>(arg);
  const auto all = cpu::supported_isas();
  if (std::find(all.begin(), all.end(), isa) == all.end()) {
    state.SkipWithError("ISA not supported here");
    return false;
  }
  state.SetLabel(std::string(cpu::isa_name(isa)));
  return true;
}

// `batch` sequences of `context` positions each, with blocks handed out in shuffled order as a
// long-running block manager does, in as many layers as make the set larger than the L3. The
// cache holds `dtype` elements (and, for the 8-bit forms, a scale per token per KV head).
struct DecodeRig {
  std::int64_t layers, layer_floats, layer_scales;
  saker::DType dtype;
  std::unique_ptr<saker::Buffer> k, v, ks, vs;  // from the backend, as the engine's KV cache
  std::vector<float> qkv;
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<saker::TokenPlace> places;
  saker::AttentionShape shape{kHeads, kKvHeads, kHeadDim, nullptr};

  DecodeRig(CpuBackend& backend, std::int64_t batch, std::int64_t context, saker::DType t)
      : dtype(t) {
    const std::int64_t per_seq = (context + kBlock - 1) / kBlock, blocks = batch * per_seq;
    const std::int64_t elements = blocks * kBlock * kKvHeads * kHeadDim;
    layer_floats = (elements * static_cast<std::int64_t>(saker::dtype_size(t)) + 3) / 4;
    layer_scales = saker::kv_dtype_has_scales(t) ? blocks * kBlock * kKvHeads : 0;
    const std::int64_t set_floats = std::int64_t{128} << 20 >> 2;  // 128 MiB of K and V
    layers = std::max<std::int64_t>(1, (set_floats + 2 * layer_floats - 1) / (2 * layer_floats));
    k = backend.allocate(static_cast<std::size_t>(layers * layer_floats));
    v = backend.allocate(k->size());
    ks = backend.allocate(
        static_cast<std::size_t>(std::max<std::int64_t>(1, layers * layer_scales)));
    vs = backend.allocate(ks->size());
    std::uint32_t s = 1;  // a cheap generator: hundreds of MiB to fill
    auto next = [&s] {
      return static_cast<float>((s = s * 1664525u + 1013904223u) >> 8) * 0x1p-24f;
    };
    for (auto* a : {k.get(), v.get()}) {
      if (t == saker::DType::F32) {
        for (std::size_t i = 0; i < a->size(); ++i) a->data()[i] = next();
      } else {  // codes of values in [0, 1): two 16-bit or four 8-bit elements a float
        auto* bytes = reinterpret_cast<std::uint8_t*>(a->data());
        for (std::size_t i = 0; i < a->size() * 4; i += saker::dtype_size(t)) {
          const float x = next();
          if (t == saker::DType::BF16 || t == saker::DType::F16) {
            const std::uint16_t h =
                t == saker::DType::BF16 ? saker::f32_to_bf16(x) : saker::f32_to_f16(x);
            std::memcpy(bytes + i, &h, 2);
          } else {
            bytes[i] = t == saker::DType::I8 ? static_cast<std::uint8_t>(x * 127.0f)
                                             : saker::f32_to_e4m3(x * 448.0f);
          }
        }
      }
    }
    for (auto* a : {ks.get(), vs.get()}) std::fill_n(a->data(), a->size(), 1.0f / 127.0f);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(7));
    for (std::int64_t b = 0; b < batch; ++b)
      tables.emplace_back(ids.begin() + b * per_seq, ids.begin() + (b + 1) * per_seq);
    for (std::int64_t b = 0; b < batch; ++b)
      places.push_back({static_cast<std::int32_t>(context - 1), tables[b].data()});
    qkv.assign(static_cast<std::size_t>(batch * (kHeads + 2 * kKvHeads) * kHeadDim), 0.01f);
  }
  saker::KvLayer kv(std::int64_t layer) {
    const bool scaled = layer_scales > 0;
    return {k->data() + layer * layer_floats,
            v->data() + layer * layer_floats,
            kKvHeads,
            kHeadDim,
            kBlock,
            dtype,
            scaled ? ks->data() + layer * layer_scales : nullptr,
            scaled ? vs->data() + layer * layer_scales : nullptr};
  }
  // Bytes of keys, values and scales one step reads.
  double bytes_read(std::int64_t batch, std::int64_t context) const {
    const double per_token =
        2.0 * kKvHeads *
        (kHeadDim * static_cast<double>(saker::dtype_size(dtype)) + (layer_scales > 0 ? 4.0 : 0.0));
    return per_token * static_cast<double>(batch * context);
  }
};

// Args: batch, context, ISA, KV dtype (saker::DType's value: 0 fp32, 1 fp16, 2 bf16, 3 int8,
// 4 fp8_e4m3).
void BM_DecodeAttention(benchmark::State& state) {
  const auto batch = state.range(0), context = state.range(1);
  if (!use_isa(state, state.range(2))) return;
  const auto dtype = static_cast<saker::DType>(state.range(3));
  state.SetLabel(std::string(cpu::isa_name(static_cast<cpu::Isa>(state.range(2)))) + " KV " +
                 std::string(saker::dtype_name(dtype)));
  CpuBackend& backend = attention_backend();
  backend.force_isa(static_cast<cpu::Isa>(state.range(2)));
  DecodeRig rig(backend, batch, context, dtype);
  std::vector<float> out(static_cast<std::size_t>(batch * kHeads * kHeadDim));
  std::int64_t layer = 0;
  for (auto _ : state) {
    backend.attention(rig.qkv.data(), rig.places, rig.shape, rig.kv(layer), out.data());
    benchmark::DoNotOptimize(out.data());
    layer = (layer + 1) % rig.layers;
  }
  backend.force_isa(cpu::detect_isa());
  state.counters["KV_GB/s"] = benchmark::Counter(rig.bytes_read(batch, context) / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

// GELU over the MLP activations of 8 tokens (8 x 8192), one thread. Each pass starts from the same
// inputs (a copy, included in the time), as repeated GELU would drive them to subnormals.
constexpr std::int64_t kGeluElements = 8 * 8192;

std::vector<float> gelu_inputs() {
  std::vector<float> x(kGeluElements);
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (auto& v : x) v = d(rng);
  return x;
}

void count_elements(benchmark::State& state) {
  state.counters["elements/s"] = benchmark::Counter(static_cast<double>(kGeluElements),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

// Args: ISA.
void BM_Gelu(benchmark::State& state) {
  if (!use_isa(state, state.range(0))) return;
  const auto isa = static_cast<cpu::Isa>(state.range(0));
  const auto x = gelu_inputs();
  std::vector<float> y(x.size());
  for (auto _ : state) {
    std::copy(x.begin(), x.end(), y.begin());
    cpu::gelu_range(y.data(), 0, kGeluElements, isa);
    benchmark::DoNotOptimize(y.data());
  }
  count_elements(state);
}

// The kernel before vectorisation: std::erf per element.
void BM_GeluScalarErf(benchmark::State& state) {
  const auto x = gelu_inputs();
  std::vector<float> y(x.size());
  for (auto _ : state) {
    std::copy(x.begin(), x.end(), y.begin());
    for (auto& v : y) v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752440f));
    benchmark::DoNotOptimize(y.data());
  }
  count_elements(state);
}

}  // namespace

BENCHMARK(BM_DecodeAttention)
    ->ArgNames({"batch", "context", "isa", "kv"})
    ->ArgsProduct({{1, 8, 32}, {512, 2048}, {2}, {0}})
    ->Args({8, 512, 1, 0})
    ->Args({8, 512, 0, 0})
    // Each KV dtype at a long context, where attention reads the most.
    ->ArgsProduct({{8}, {2048}, {2}, {1, 2, 3, 4}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_Gelu)->ArgNames({"isa"})->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GeluScalarErf)->Unit(benchmark::kMicrosecond);
