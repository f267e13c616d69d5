#include "kernels/cpu/linear.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace saker::cpu {
namespace {

constexpr int kRowBlock = 4;  // rows streamed together: 8 accumulators keep both FMA ports busy

inline float load_scalar(DType d, const void* row, std::int64_t k) {
  switch (d) {
    case DType::F32:
      return static_cast<const float*>(row)[k];
    case DType::BF16:
      return bf16_to_f32(static_cast<const std::uint16_t*>(row)[k]);
    case DType::F16:
      return f16_to_f32(static_cast<const std::uint16_t*>(row)[k]);
  }
  return 0.0f;
}

// --- portable kernel: the AVX2 kernel's arithmetic, lane by lane --------------------------------

// Which element of a 16-wide block each accumulator lane takes. The bf16 kernel widens with
// unpacks, which work within 128-bit halves: its low vector holds elements 0-3 and 8-11.
struct LaneMap {
  int lo[8], hi[8];
};
constexpr LaneMap kLinearLanes{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}};
constexpr LaneMap kUnpackLanes{{0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}};

template <int NR>
void dot_rows_portable(DType d, const void* const* rows, const float* x, std::int64_t K,
                       float* out) {
  const LaneMap& m = d == DType::BF16 ? kUnpackLanes : kLinearLanes;
  float acc0[NR][8] = {};
  float acc1[NR][8] = {};
  std::int64_t k = 0;
  for (; k + 16 <= K; k += 16)
    for (int r = 0; r < NR; ++r)
      for (int l = 0; l < 8; ++l) {
        const std::int64_t a = k + m.lo[l], b = k + m.hi[l];
        acc0[r][l] = std::fma(load_scalar(d, rows[r], a), x[a], acc0[r][l]);
        acc1[r][l] = std::fma(load_scalar(d, rows[r], b), x[b], acc1[r][l]);
      }
  for (int r = 0; r < NR; ++r) {
    float v[8];
    for (int l = 0; l < 8; ++l) v[l] = acc0[r][l] + acc1[r][l];
    // Same tree as hsum256 below: 128-bit halves, then pairs, then the last two.
    float q[4];
    for (int l = 0; l < 4; ++l) q[l] = v[l] + v[l + 4];
    const float p0 = q[0] + q[2];
    const float p1 = q[1] + q[3];
    float sum = p0 + p1;
    for (std::int64_t t = k; t < K; ++t) sum += load_scalar(d, rows[r], t) * x[t];
    out[r] = sum;
  }
}

// --- AVX2 kernel ---------------------------------------------------------------------------------

#define SAKER_AVX2 __attribute__((target("avx2,fma,f16c")))

SAKER_AVX2 inline float hsum256(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));  // [q0+q2, q1+q3, ..]
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

template <DType D>
SAKER_AVX2 inline void load16(const void* row, std::int64_t k, __m256& lo, __m256& hi) {
  if constexpr (D == DType::F32) {
    lo = _mm256_loadu_ps(static_cast<const float*>(row) + k);
    hi = _mm256_loadu_ps(static_cast<const float*>(row) + k + 8);
  } else if constexpr (D == DType::BF16) {
    // bf16 is the top half of an fp32: interleaving zeros below each element widens it in one
    // instruction per 8 (kUnpackLanes gives the resulting element order).
    const __m256i raw = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(row) + k));
    lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), raw));
    hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), raw));
  } else {
    const auto* p = static_cast<const std::uint16_t*>(row) + k;
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
}

// `next` (may be null): rows the caller streams next. A 2048-wide bf16 row is exactly one 4 KiB
// page and the hardware prefetcher stops at page boundaries, so the next block's lines are
// requested by hand while this block is computed. Prefetches change no arithmetic.
template <DType D, int NR>
SAKER_AVX2 void dot_rows_avx2(const void* const* rows, const void* const* next, const float* x,
                              std::int64_t K, float* out) {
  constexpr auto kSize = static_cast<std::int64_t>(dtype_size(D));
  __m256 acc0[NR], acc1[NR];
  for (int r = 0; r < NR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    if (next && (k * kSize) % 64 == 0)
      for (int r = 0; r < NR; ++r)
        _mm_prefetch(static_cast<const char*>(next[r]) + k * kSize, _MM_HINT_T0);
    __m256 x0 = _mm256_loadu_ps(x + k);
    __m256 x1 = _mm256_loadu_ps(x + k + 8);
    if constexpr (D == DType::BF16) {  // match the unpacked weights' order (kUnpackLanes)
      const __m256 a = x0;
      x0 = _mm256_permute2f128_ps(a, x1, 0x20);
      x1 = _mm256_permute2f128_ps(a, x1, 0x31);
    }
    for (int r = 0; r < NR; ++r) {
      __m256 lo, hi;
      load16<D>(rows[r], k, lo, hi);
      acc0[r] = _mm256_fmadd_ps(lo, x0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(hi, x1, acc1[r]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    float sum = hsum256(_mm256_add_ps(acc0[r], acc1[r]));
    for (std::int64_t t = k; t < K; ++t) sum += load_scalar(D, rows[r], t) * x[t];
    out[r] = sum;
  }
}

template <int NR>
void dot_rows(Isa isa, DType d, const void* const* rows, const void* const* next, const float* x,
              std::int64_t K, float* out) {
  if (isa == Isa::kAvx2) {
    switch (d) {
      case DType::F32:
        return dot_rows_avx2<DType::F32, NR>(rows, next, x, K, out);
      case DType::BF16:
        return dot_rows_avx2<DType::BF16, NR>(rows, next, x, K, out);
      case DType::F16:
        return dot_rows_avx2<DType::F16, NR>(rows, next, x, K, out);
    }
  }
  dot_rows_portable<NR>(d, rows, x, K, out);
}

}  // namespace

Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kPortable;
}

void linear_rows(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                 float* y, std::int64_t row_begin, std::int64_t row_end) {
  const std::int64_t K = w.cols;
  const std::int64_t N = w.rows;
  const std::size_t row_bytes = static_cast<std::size_t>(K) * dtype_size(w.dtype);
  const auto* base = static_cast<const std::byte*>(w.data);
  const void* rows[kRowBlock];
  const void* next[kRowBlock];
  float out[kRowBlock];
  std::int64_t r = row_begin;
  // Row blocks outermost: a block's weights stay in L1 while every token reuses them.
  for (; r + kRowBlock <= row_end; r += kRowBlock) {
    const bool has_next = r + 2 * kRowBlock <= row_end;
    for (int i = 0; i < kRowBlock; ++i) {
      rows[i] = base + static_cast<std::size_t>(r + i) * row_bytes;
      next[i] = base + static_cast<std::size_t>(r + kRowBlock + i) * row_bytes;
    }
    for (std::int64_t t = 0; t < n; ++t) {
      // Only the first token's pass needs to fetch ahead; later tokens find the block in L1.
      dot_rows<kRowBlock>(isa, w.dtype, rows, t == 0 && has_next ? next : nullptr, x + t * K, K,
                          out);
      for (int i = 0; i < kRowBlock; ++i) y[t * N + r + i] = bias ? out[i] + bias[r + i] : out[i];
    }
  }
  for (; r < row_end; ++r) {
    rows[0] = base + static_cast<std::size_t>(r) * row_bytes;
    for (std::int64_t t = 0; t < n; ++t) {
      dot_rows<1>(isa, w.dtype, rows, nullptr, x + t * K, K, out);
      y[t * N + r] = bias ? out[0] + bias[r] : out[0];
    }
  }
}

}  // namespace saker::cpu
