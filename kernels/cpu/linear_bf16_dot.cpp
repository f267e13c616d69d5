// bf16 dot-product linear layers (WeightLayout::kPanels16Pairs, cpu/linear.h): the packing, the
// rounding of the inputs, and the vdpbf16ps tiles with their scalar reference. The blocking over
// tokens, k and threads is linear_panels' (linear.cpp).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "kernels/cpu/linear_tile.h"
#include "kernels/dtype.h"

namespace saker::cpu {
namespace detail {
namespace {

// vdpbf16ps reads bf16 subnormals as zero (DAZ) and flushes subnormal fp32 results (FTZ).
constexpr std::uint16_t daz(std::uint16_t b) {
  return (b & 0x7f80u) == 0 ? static_cast<std::uint16_t>(b & 0x8000u) : b;
}

inline float ftz(float v) {
  return std::fabs(v) < 0x1p-126f ? std::copysign(0.0f, v) : v;
}

// acc + w1 x1 + w0 x0 for one 32-bit lane of bf16 pairs, as vdpbf16ps computes it: the odd
// element's product first, each step one rounding (bf16 products are exact in fp32).
inline float dot_pair(float acc, std::uint32_t w, std::uint32_t x) {
  const auto hi = [](std::uint32_t v) { return bf16_to_f32(static_cast<std::uint16_t>(v >> 16)); };
  const auto lo = [](std::uint32_t v) { return bf16_to_f32(static_cast<std::uint16_t>(v)); };
  acc = ftz(std::fma(hi(w), hi(x), acc));
  return ftz(std::fma(lo(w), lo(x), acc));
}

// Columns [begin, count) of one row (begin even); the missing partner of an odd count is zero.
void pairs_scalar(const float* x, std::int64_t begin, std::int64_t count, float* out) {
  for (std::int64_t i = begin; i < count; i += 2) {
    const std::uint32_t lo = daz(f32_to_bf16(x[i]));
    const std::uint32_t hi = i + 1 < count ? daz(f32_to_bf16(x[i + 1])) : 0u;
    const std::uint32_t pair = lo | hi << 16;
    std::memcpy(out + i / 2, &pair, sizeof pair);
  }
}

SAKER_AVX512_DOT void pairs_avx512(const float* x, std::int64_t count, float* out) {
  // Round to nearest even, quiet NaN, flush subnormals, then keep each element's top half:
  // vpmovdw packs 16 of them, consecutive columns, so two make one 32-bit pair.
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i exp_mask = _mm512_set1_epi32(0x7f800000), sign = _mm512_set1_epi32(INT32_MIN);
  std::int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
    __m512i r = _mm512_add_epi32(
        u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    const __mmask16 sub =
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(r, exp_mask), _mm512_setzero_si512());
    r = _mm512_mask_and_epi32(r, sub, r, sign);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  }
  pairs_scalar(x, i, count, out);
}

}  // namespace

void tile_bf16_dot_portable(const TileArgs& a, int mr, int np) {
  for (int t = 0; t < mr; ++t)
    for (std::int64_t i = 0; i < std::min<std::int64_t>(a.valid, np * P); ++i) {
      const std::byte* lane = a.w + (i / P) * a.panel_step + 4 * (i % P);
      float* out = a.y + t * a.ldy + i;
      float acc = a.first ? 0.0f : *out;
      for (std::int64_t k = a.k0; k < a.k1; ++k) {
        std::uint32_t w = 0;
        std::memcpy(&w, lane + k * a.k_step, 4);
        acc = dot_pair(acc, w, std::bit_cast<std::uint32_t>(a.x[t * a.ldx + (k - a.k0) * a.ldk]));
      }
      if (a.last && a.bias) acc = acc + a.bias[i];
      *out = acc;
    }
}

}  // namespace detail

void pack_bf16_pairs(const Weight& host, void* dst, std::int64_t group_begin,
                     std::int64_t group_end) {
  const std::int64_t K = host.cols, N = host.rows, panels = panel_count(N);
  const std::int64_t KP = pair_count(K);
  const auto* src = static_cast<const std::uint16_t*>(host.data);
  for (std::int64_t g = group_begin; g < group_end; ++g) {
    const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
    auto* group = static_cast<std::uint16_t*>(dst) + g * kGroupRows * 2 * KP;
    for (std::int64_t j = 0; j < gn * kPanelRows; ++j) {
      const std::int64_t r = g * kGroupRows + j;
      for (std::int64_t k = 0; k < 2 * KP; ++k)
        group[((k / 2) * gn * kPanelRows + j) * 2 + k % 2] =
            r < N && k < K ? detail::daz(src[r * K + k]) : std::uint16_t{0};
    }
  }
}

void to_bf16_pairs(const float* x, std::int64_t n, std::int64_t cols, float* out) {
  const std::int64_t KP = pair_count(cols);
  const bool vector = has_avx512_bf16();
  for (std::int64_t t = 0; t < n; ++t) {
    float* row = out + t * KP;  // each float holds a pair's bits
    if (vector)
      detail::pairs_avx512(x + t * cols, cols, row);
    else
      detail::pairs_scalar(x + t * cols, 0, cols, row);
  }
}

}  // namespace saker::cpu
