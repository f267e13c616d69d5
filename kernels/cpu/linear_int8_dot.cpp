// int8 dot-product linear layers (WeightLayout::kPanels16Quads, `--dtype w8a8`, cpu/linear.h):
// the packing, the per-token quantization of the inputs, and the vpdpbusd tiles with their scalar
// reference. The blocking over tokens, k and threads is linear_panels' (linear.cpp).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/linear_tile.h"
#include "kernels/quantize.h"

namespace saker::cpu {
namespace detail {
namespace {

// The epilogue of one output: exact integer sum, less the offset of the unsigned codes, scaled.
inline float finish(std::int32_t sum, std::int32_t row_sum, float x_scale, float w_scale,
                    const float* bias) {
  const float v = static_cast<float>(sum - 128 * row_sum) * (x_scale * w_scale);
  return bias ? v + *bias : v;
}

// Codes of one token's columns [0, cols): four to a float, the padding 128 (zero).
void quads_scalar(const float* x, std::int64_t cols, float inv, float* out) {
  for (std::int64_t i = 0; i < cols; i += 4) {
    std::uint32_t quad = 0;
    for (std::int64_t j = 0; j < 4; ++j) {
      std::uint32_t code = 128;
      if (i + j < cols && inv > 0.0f) {
        const float q = std::clamp(std::nearbyint(x[i + j] * inv), -127.0f, 127.0f);
        code = static_cast<std::uint32_t>(static_cast<std::int32_t>(q) + 128);
      }
      quad |= code << (8 * j);
    }
    std::memcpy(out + i / 4, &quad, sizeof quad);
  }
}

SAKER_AVX512_DOT void quads_avx512(const float* x, std::int64_t cols, float inv, float* out) {
  // vcvtps2dq rounds to nearest even (the default rounding mode), as nearbyint does.
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f),
               hi = _mm512_set1_ps(127.0f);
  std::int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    const __m512 q = _mm512_min_ps(
        _mm512_max_ps(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                      lo),
        hi);
    const __m512i codes = _mm512_add_epi32(_mm512_cvtps_epi32(q), _mm512_set1_epi32(128));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i / 4), _mm512_cvtepi32_epi8(codes));
  }
  quads_scalar(x + i, cols - i, inv, out + i / 4);
}

// max |x| over a row, and whether every element is finite.
struct Range {
  float max = 0.0f;
  bool finite = true;
};

Range range_scalar(const float* x, std::int64_t cols) {
  Range r;
  for (std::int64_t k = 0; k < cols; ++k) {
    r.max = std::max(r.max, std::fabs(x[k]));
    r.finite = r.finite && std::isfinite(x[k]);
  }
  return r;
}

SAKER_AVX512_DOT Range range_avx512(const float* x, std::int64_t cols) {
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  const __m512 largest = _mm512_set1_ps(3.4028235e38f);
  std::int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    bad |= _mm512_cmp_ps_mask(a, largest, _CMP_NLE_UQ);  // infinite or NaN
    m = _mm512_max_ps(m, a);
  }
  Range r = range_scalar(x + i, cols - i);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, m);
  for (float v : lanes) r.max = std::max(r.max, v);
  r.finite = r.finite && bad == 0;
  return r;
}

}  // namespace

void tile_int8_dot_portable(const TileArgs& a, int mr, int np) {
  for (int t = 0; t < mr; ++t)
    for (std::int64_t i = 0; i < std::min<std::int64_t>(a.valid, np * P); ++i) {
      const std::byte* lane = a.w + (i / P) * a.panel_step + 4 * (i % P);
      float* out = a.y + t * a.ldy + i;
      std::int32_t sum = a.first ? 0 : std::bit_cast<std::int32_t>(*out);
      for (std::int64_t k = a.k0; k < a.k1; ++k) {
        const auto xq = std::bit_cast<std::uint32_t>(a.x[t * a.ldx + (k - a.k0) * a.ldk]);
        for (int j = 0; j < 4; ++j)
          sum += static_cast<std::int32_t>((xq >> (8 * j)) & 0xffu) *
                 static_cast<std::int32_t>(static_cast<std::int8_t>(lane[k * a.k_step + j]));
      }
      *out = a.last ? finish(sum, a.row_sums[i], a.x_scales[t], a.scales[i],
                             a.bias ? a.bias + i : nullptr)
                    : std::bit_cast<float>(sum);
    }
}

}  // namespace detail

void pack_int8_quads(const Weight& host, void* dst, float* scales, std::int32_t* row_sums,
                     std::int64_t group_begin, std::int64_t group_end) {
  const std::int64_t K = host.cols, N = host.rows, panels = panel_count(N);
  // 255 * 127 * cols must fit the 32-bit sums.
  if (K > 66000)
    throw std::invalid_argument("w8a8: " + std::to_string(K) +
                                " columns overflow the int8 dot products' 32-bit sums");
  const std::int64_t KQ = quad_count(K);
  const auto* src = static_cast<const std::byte*>(host.data);
  const std::size_t in_es = dtype_size(host.dtype);
  std::vector<std::uint8_t> codes;
  for (std::int64_t g = group_begin; g < group_end; ++g) {
    const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
    auto* group = static_cast<std::int8_t*>(dst) + g * kGroupRows * 4 * KQ;
    for (std::int64_t j = 0; j < gn * kPanelRows; ++j) {
      const std::int64_t r = g * kGroupRows + j;
      codes.assign(static_cast<std::size_t>(4 * KQ), 0);
      scales[r] = r < N ? quantize_row(host.dtype, src + static_cast<std::size_t>(r * K) * in_es, K,
                                       DType::I8, r, codes.data())
                        : 0.0f;
      std::int32_t sum = 0;
      for (std::int64_t k = 0; k < 4 * KQ; ++k) {
        const auto c = static_cast<std::int8_t>(codes[static_cast<std::size_t>(k)]);
        group[((k / 4) * gn * kPanelRows + j) * 4 + k % 4] = c;
        sum += c;
      }
      row_sums[r] = sum;
    }
  }
}

void to_int8_quads(const float* x, std::int64_t n, std::int64_t cols, float* out, float* scale) {
  const std::int64_t KQ = quad_count(cols);
  const bool vector = has_avx512_vnni();
  for (std::int64_t t = 0; t < n; ++t) {
    const float* row = x + t * cols;
    const detail::Range r =
        vector ? detail::range_avx512(row, cols) : detail::range_scalar(row, cols);
    // A NaN or infinite input makes the scale NaN, and every output of the token NaN.
    scale[t] = !r.finite ? NAN : r.max / 127.0f;
    const float inv = r.max > 0.0f && r.finite ? 127.0f / r.max : 0.0f;
    if (vector)
      detail::quads_avx512(row, cols, inv, out + t * KQ);
    else
      detail::quads_scalar(row, cols, inv, out + t * KQ);
  }
}

}  // namespace saker::cpu
