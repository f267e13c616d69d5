#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace saker {

float log_probabilities(std::span<const float> logits, std::int32_t chosen, std::int32_t n,
                        std::vector<TokenLogprob>& top, std::vector<std::int32_t>& order) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;  // in double: a 65k-term sum of exponentials
  for (const float l : logits) sum += std::exp(static_cast<double>(l - max));
  const double log_z = static_cast<double>(max) + std::log(sum);
  auto logprob = [&](std::int32_t id) {
    return static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(id)]) - log_z);
  };
  top.clear();
  const auto k = static_cast<std::size_t>(std::clamp<std::int64_t>(n, 0, std::ssize(logits)));
  if (k > 0) {
    order.resize(logits.size());
    std::iota(order.begin(), order.end(), 0);
    auto better = [&](std::int32_t a, std::int32_t b) {
      const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
      return la > lb || (la == lb && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      better);
    for (std::size_t i = 0; i < k; ++i) top.push_back({order[i], logprob(order[i])});
  }
  return logprob(chosen);
}

}  // namespace saker
