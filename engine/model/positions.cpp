#include "engine/model/positions.h"

#include <cmath>

#include "kernels/dtype.h"

namespace saker {

std::vector<float> rotary_table(float theta, std::int64_t head_dim, std::int64_t positions) {
  const std::int64_t half = head_dim / 2;
  std::vector<float> cos_sin(static_cast<std::size_t>(positions * half * 2));
  for (std::int64_t d = 0; d < half; ++d) {
    const float exponent = static_cast<float>(2 * d) / static_cast<float>(head_dim);
    const float inv_freq = 1.0f / std::pow(theta, exponent);
    for (std::int64_t p = 0; p < positions; ++p) {
      const float angle = static_cast<float>(p) * inv_freq;
      cos_sin[static_cast<std::size_t>((p * half + d) * 2)] = std::cos(angle);
      cos_sin[static_cast<std::size_t>((p * half + d) * 2 + 1)] = std::sin(angle);
    }
  }
  return cos_sin;
}

std::vector<float> alibi_slopes(std::int64_t heads) {
  // n' = 2^floor(log2 nh); slope_h = 2^(-8(h+1)/n'); extra heads 2^(-4(2k+1)/n').
  std::vector<float> slopes(static_cast<std::size_t>(heads));
  std::int64_t p2 = 1;
  while (p2 * 2 <= heads) p2 *= 2;
  const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(p2)) - 3)));
  for (std::int64_t h = 0; h < p2; ++h)
    slopes[h] = static_cast<float>(std::pow(static_cast<float>(base), static_cast<float>(h + 1)));
  const double extra = std::pow(2.0, -std::pow(2.0, -(std::log2(2.0 * p2) - 3)));
  for (std::int64_t k = 0; p2 + k < heads; ++k)
    slopes[p2 + k] =
        static_cast<float>(std::pow(static_cast<float>(extra), static_cast<float>(2 * k + 1)));
  for (float& s : slopes) s = round_to_bf16(s);
  return slopes;
}

}  // namespace saker
