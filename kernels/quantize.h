// Weight-only quantization of a matrix row (`--dtype int8|fp8`), one scale per output row, shared
// by every backend so that they hold the same codes and scales: scale = max|w| / the code's
// largest magnitude (127 for int8, 448 for fp8 e4m3); code = w / scale rounded to nearest even
// (int8 clamped to +-127; e4m3 saturating, kernels/dtype.h). The row's value at k is then
// scale * widen(code[k]).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"

namespace saker {

// Element k of a row stored as `stored` (F32, BF16 or F16), as fp32.
inline float stored_element(DType stored, const void* row, std::int64_t k) {
  const auto* p = static_cast<const std::uint8_t*>(row);
  if (stored == DType::F32) {
    float v;
    std::memcpy(&v, p + 4 * k, 4);
    return v;
  }
  std::uint16_t h;
  std::memcpy(&h, p + 2 * k, 2);
  return stored == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// Quantizes row `r` (`cols` elements of `stored`) to `code` (I8 or F8E4M3) into out[0, cols);
// returns its scale. A non-finite element is a std::runtime_error naming the row.
inline float quantize_row(DType stored, const void* row, std::int64_t cols, DType code,
                          std::int64_t r, std::uint8_t* out) {
  const bool fp8 = code == DType::F8E4M3;
  // NaN counts as non-finite too (std::max would pass over it).
  float amax = 0.0f;
  bool finite = true;
  for (std::int64_t k = 0; k < cols; ++k) {
    const float v = std::fabs(stored_element(stored, row, k));
    finite = finite && std::isfinite(v);
    amax = std::max(amax, v);
  }
  if (!finite)
    throw std::runtime_error("row " + std::to_string(r) +
                             " holds a non-finite value and cannot be quantized to " +
                             (fp8 ? "fp8" : "int8"));
  const float scale = amax / (fp8 ? kE4m3Max : 127.0f);
  for (std::int64_t k = 0; k < cols; ++k) {
    const float x = scale > 0.0f ? stored_element(stored, row, k) / scale : 0.0f;
    out[k] = fp8 ? f32_to_e4m3(x)  // nearest even, saturating
                 : static_cast<std::uint8_t>(
                       static_cast<std::int8_t>(std::clamp(std::nearbyint(x), -127.0f, 127.0f)));
  }
  return scale;
}

}  // namespace saker
