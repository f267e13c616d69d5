#include "kernels/cpu/membw.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <vector>

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

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes, int repeats) {
  const auto n = static_cast<std::int64_t>(bytes / sizeof(float));
  std::vector<float> buf(static_cast<std::size_t>(n) + 8);
  // 32-byte aligned start for the aligned loads.
  auto* base = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(buf.data()) + 31) &
                                        ~std::uintptr_t{31});
  // Touch every page from the thread that will read it (first-touch placement).
  pool.parallel_for_grain(
      n, 8, [&](std::int64_t b, std::int64_t e, unsigned) { std::fill(base + b, base + e, 1.0f); });
  const bool avx2 = detect_isa() == Isa::kAvx2;
  std::vector<float> sink(pool.size());
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for_grain(n, 8, [&](std::int64_t b, std::int64_t e, unsigned w) {
      sink[w] += avx2 ? sum_avx2(base + b, e - b) : std::accumulate(base + b, base + e, 0.0f);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n) * sizeof(float) / s);
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}

}  // namespace saker::cpu
