// The position tables (engine/model/positions.h) against the formulas of docs/falcon.md
// section 2, computed here in double.
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/model/positions.h"
#include "kernels/dtype.h"

using namespace saker;

TEST_CASE("ALiBi slopes follow the published formula, rounded to bf16", "[positions]") {
  for (std::int64_t heads : {1, 4, 6, 8, 12, 32, 71}) {
    const std::vector<float> s = alibi_slopes(heads);
    REQUIRE(s.size() == static_cast<std::size_t>(heads));
    std::int64_t p2 = 1;
    while (p2 * 2 <= heads) p2 *= 2;
    for (std::int64_t h = 0; h < heads; ++h) {
      const double want = h < p2 ? std::pow(2.0, -8.0 * (h + 1) / p2)
                                 : std::pow(2.0, -4.0 * (2 * (h - p2) + 1) / p2);
      REQUIRE(s[h] == round_to_bf16(static_cast<float>(want)));
    }
  }
}

TEST_CASE("the rotary table holds (cos, sin) of pos * theta^(-2d / head_dim)", "[positions]") {
  for (const double theta : {10000.0, 500042.0}) {
    const std::int64_t head_dim = 16, positions = 64, half = head_dim / 2;
    const std::vector<float> t = rotary_table(static_cast<float>(theta), head_dim, positions);
    REQUIRE(t.size() == static_cast<std::size_t>(positions * head_dim));
    for (std::int64_t p = 0; p < positions; ++p)
      for (std::int64_t d = 0; d < half; ++d) {
        const double angle = static_cast<double>(p) * std::pow(theta, -2.0 * d / head_dim);
        // fp32 as transformers computes it: the angle is off by a few ulps of 64 rad at most.
        REQUIRE(t[(p * half + d) * 2] == Approx(std::cos(angle)).margin(2e-5));
        REQUIRE(t[(p * half + d) * 2 + 1] == Approx(std::sin(angle)).margin(2e-5));
      }
  }
}
