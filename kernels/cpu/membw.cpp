#include "kernels/cpu/membw.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/cpu/host_memory.h"
#include "kernels/cpu/linear.h"

namespace saker::cpu {
namespace {

__attribute__((target("avx2"))) float sum_avx2(const float* p, std::int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float l : lanes) s += l;
  for (; i < n; ++i) s += p[i];
  return s;
}

// Chains of FMAs, enough of them to fill both FMA pipes through their latency. Returns a value
// that depends on every chain so that none is optimised away.
constexpr int kChains = 12;

__attribute__((target("avx512f"))) float fma_chains_avx512(std::int64_t iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], m, a);
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2(std::int64_t iters) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], m, a);
  __m256 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[7];
}

float fma_chains_portable(std::int64_t iters) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = static_cast<float>(c);
  for (std::int64_t i = 0; i < iters; ++i)
    for (float& v : acc) v = std::fma(v, 0.999999f, 1e-7f);
  return acc[0] + acc[kChains - 1];
}

int fma_lanes(Isa isa) {
  return isa == Isa::kAvx512 ? 16 : isa == Isa::kAvx2 ? 8 : 1;
}

// `iters` rounds of the chains on every pool thread; returns the FLOPs done.
double run_fma_chains(ThreadPool& pool, std::int64_t iters) {
  const Isa isa = detect_isa();
  float sink[256] = {};
  pool.parallel_for(pool.size(), [&](std::int64_t, std::int64_t, unsigned w) {
    sink[w % 256] += isa == Isa::kAvx512 ? fma_chains_avx512(iters)
                     : isa == Isa::kAvx2 ? fma_chains_avx2(iters)
                                         : fma_chains_portable(iters);
  });
  volatile float keep = sink[0];
  (void)keep;
  return 2.0 * kChains * fma_lanes(isa) * static_cast<double>(iters) * pool.size();
}

}  // namespace

// kChains independent chains of one dot-product instruction, in assembly: with intrinsics GCC 12
// broke the chains (it reloaded each accumulator's first value every iteration), which timed
// the instruction's throughput without its latency, twice the real rate for vpdpbusd.
#define SAKER_DOT_CHAINS(name, insn, isa)                                                          \
  __attribute__((target(isa))) float name(std::int64_t iters) {                                    \
    asm volatile(                                                                                  \
        "vpternlogd $0xff, %%zmm30, %%zmm30, %%zmm30\n\t"                                          \
        "vpsrld $2, %%zmm30, %%zmm31\n\t"                                                          \
        "1:\n\t" insn " %%zmm30, %%zmm31, %%zmm0\n\t" insn " %%zmm30, %%zmm31, %%zmm1\n\t" insn    \
        " %%zmm30, %%zmm31, %%zmm2\n\t" insn " %%zmm30, %%zmm31, %%zmm3\n\t" insn                  \
        " %%zmm30, %%zmm31, %%zmm4\n\t" insn " %%zmm30, %%zmm31, %%zmm5\n\t" insn                  \
        " %%zmm30, %%zmm31, %%zmm6\n\t" insn " %%zmm30, %%zmm31, %%zmm7\n\t" insn                  \
        " %%zmm30, %%zmm31, %%zmm8\n\t" insn " %%zmm30, %%zmm31, %%zmm9\n\t" insn                  \
        " %%zmm30, %%zmm31, %%zmm10\n\t" insn                                                      \
        " %%zmm30, %%zmm31, %%zmm11\n\t"                                                           \
        "dec %0\n\t"                                                                               \
        "jnz 1b"                                                                                   \
        : "+r"(iters)                                                                              \
        :                                                                                          \
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
          "xmm11", "xmm30", "xmm31", "cc");                                                        \
    return 0.0f;                                                                                   \
  }
static_assert(kChains == 12, "the assembly below runs 12 chains");
SAKER_DOT_CHAINS(dot_chains, "vdpbf16ps", "avx512f,avx512bf16")
SAKER_DOT_CHAINS(int8_chains, "vpdpbusd", "avx512f,avx512vnni")
#undef SAKER_DOT_CHAINS

// Best of `repeats` runs of `chains` (iters x kChains instructions of `flops` each) per thread.
double chain_peak(ThreadPool& pool, int repeats, float (*chains)(std::int64_t), double flops) {
  const std::int64_t iters = 20'000'000;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    float sink[256] = {};
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(pool.size(), [&](std::int64_t, std::int64_t, unsigned w) {
      sink[w % 256] += chains(iters);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    volatile float keep = sink[0];
    (void)keep;
    best = std::max(best, flops * kChains * static_cast<double>(iters) * pool.size() / s);
  }
  return best;
}

double measure_bf16_dot_peak(ThreadPool& pool, int repeats) {
  return has_avx512_bf16() ? chain_peak(pool, repeats, dot_chains, 64.0) : 0.0;
}

double measure_int8_dot_peak(ThreadPool& pool, int repeats) {
  return has_avx512_vnni() ? chain_peak(pool, repeats, int8_chains, 128.0) : 0.0;
}

double measure_fma_peak(ThreadPool& pool, int repeats) {
  const Isa isa = detect_isa();
  const std::int64_t iters = isa == Isa::kPortable ? 2'000'000 : 20'000'000 / fma_lanes(isa) * 8;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const double flops = run_fma_chains(pool, iters);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops / s);
  }
  return best;
}

double fma_pass(ThreadPool& pool, double flops) {
  const double per_iter = 2.0 * kChains * fma_lanes(detect_isa()) * pool.size();
  return run_fma_chains(pool, std::max<std::int64_t>(1, std::llround(flops / per_iter)));
}

float read_pass(ThreadPool& pool, const float* p, std::int64_t n) {
  const std::span<const float> one(p, static_cast<std::size_t>(n));
  return read_pass(pool, std::span<const std::span<const float>>(&one, 1));
}

float read_pass(ThreadPool& pool, std::span<const std::span<const float>> buffers) {
  const bool avx2 = detect_isa() >= Isa::kAvx2;
  float sink[256] = {};
  const auto workers = static_cast<std::int64_t>(pool.size());
  pool.parallel_for(workers, [&](std::int64_t, std::int64_t, unsigned w) {
    for (const std::span<const float> buf : buffers) {
      // 16-float (64-byte) aligned shares, as measure_read_bandwidth first touches them.
      const auto lines = static_cast<std::int64_t>(buf.size() + 15) / 16;
      const std::int64_t b =
          std::min<std::int64_t>(static_cast<std::int64_t>(buf.size()), lines * w / workers * 16);
      const std::int64_t e = std::min<std::int64_t>(static_cast<std::int64_t>(buf.size()),
                                                    lines * (w + 1) / workers * 16);
      const float* p = buf.data();
      sink[w % 256] += avx2 ? sum_avx2(p + b, e - b) : std::accumulate(p + b, p + e, 0.0f);
    }
  });
  return std::accumulate(std::begin(sink), std::end(sink), 0.0f);
}

double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes, int repeats) {
  // On 2 MiB pages, as the packed weights are: with 4 KiB pages the TLB misses and the
  // prefetchers' stops at page boundaries would understate what the kernels can stream.
  const HostMemory buf = allocate_host_memory(bytes);
  auto* base = reinterpret_cast<float*>(buf.get());
  const auto n = static_cast<std::int64_t>(bytes / sizeof(float));
  // Touch every page from the thread that will read it (first-touch placement).
  pool.parallel_for_grain(n, 16, [&](std::int64_t b, std::int64_t e, unsigned) {
    std::fill(base + b, base + e, 1.0f);
  });
  float sink = 0;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    sink += read_pass(pool, base, n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n) * sizeof(float) / s);
  }
  volatile float keep = sink;
  (void)keep;
  return best;
}

}  // namespace saker::cpu
