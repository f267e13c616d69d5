#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/logit_summary.h"

namespace saker {

float log_probabilities(std::span<const float> logits, std::int32_t chosen, std::int32_t n,
                        std::vector<TokenLogprob>& top, std::vector<std::int32_t>& order) {
  const float max = *std::max_element(logits.begin(), logits.end());
  const double log_z = log_sum_exp(logits, max);  // shared with the logit summaries
  auto logprob = [&](std::int32_t id) {
    return static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(id)]) - log_z);
  };
  top.clear();
  const auto k = static_cast<std::size_t>(std::clamp<std::int64_t>(n, 0, std::ssize(logits)));
  if (k > 0) {
    order.resize(logits.size());
    std::iota(order.begin(), order.end(), 0);
    auto better = [&](std::int32_t a, std::int32_t b) {
      const float la = logits[static_cast<std::size_t>(a)],
                  lb = logits[static_cast<std::size_t>(b)];
      return la > lb || (la == lb && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      better);
    for (std::size_t i = 0; i < k; ++i) top.push_back({order[i], logprob(order[i])});
  }
  return logprob(chosen);
}

float log_probabilities(const LogitSummary& s, float chosen_logit, std::int32_t n,
                        std::vector<TokenLogprob>& top) {
  top.clear();
  const std::int32_t k = std::clamp(n, 0, s.count);
  for (std::int32_t i = 0; i < k; ++i) top.push_back({s.top_ids[i], s.logprob(s.top_logits[i])});
  return s.logprob(chosen_logit);
}

}  // namespace saker
