// A compact summary of one logits row: what greedy decoding, log-probabilities and top-k sampling
// (k <= kSummaryTopK) need, so that a device backend hands back a few hundred bytes per sequence
// instead of the whole vocabulary. summarize_logits() is the host implementation (the CPU
// backend's, and the scalar reference of the CUDA kernel). Rows are assumed free of NaN.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

namespace saker {

constexpr int kSummaryTopK = 64;

// Plain data: a device backend writes it in its own memory and it is copied back byte for byte.
struct LogitSummary {
  double log_z = 0;         // log(sum exp(l)) computed as max + log(sum exp(l - max)), in double
  float max = 0;            // the row's largest logit (= logits[argmax])
  std::int32_t argmax = 0;  // first index of the largest logit (torch.argmax's tie rule)
  std::int32_t count = 0;   // entries of top: min(kSummaryTopK, vocab)
  std::int32_t pad_ = 0;    // keeps the arrays 8-byte aligned and the layout fixed
  std::int32_t top_ids[kSummaryTopK] = {};
  float top_logits[kSummaryTopK] = {};  // descending; lower id first on ties

  // log_softmax of a logit of this row, rounded as engine/logprobs computes it.
  float logprob(float logit) const {
    return static_cast<float>(static_cast<double>(logit) - log_z);
  }
};
static_assert(sizeof(LogitSummary) % sizeof(double) == 0);

// Floats of backend memory that hold `rows` summaries (Buffers are sized in floats).
constexpr std::size_t logit_summary_floats(std::int64_t rows) {
  return static_cast<std::size_t>(rows) * (sizeof(LogitSummary) / sizeof(float));
}

// log(sum exp(row)), the way engine/logprobs has always computed it: a float max, float
// differences, their exponentials summed in double (a 65k-term sum).
inline double log_sum_exp(std::span<const float> row, float max) {
  double sum = 0;
  for (const float l : row) sum += std::exp(static_cast<double>(l - max));
  return static_cast<double>(max) + std::log(sum);
}

// Fills `out` from `row`; `order` is scratch space.
inline void summarize_logits(std::span<const float> row, LogitSummary& out,
                             std::vector<std::int32_t>& order) {
  const auto first_max = std::max_element(row.begin(), row.end());  // first on ties
  out.argmax = static_cast<std::int32_t>(first_max - row.begin());
  out.max = *first_max;
  out.log_z = log_sum_exp(row, out.max);
  const auto k = std::min<std::size_t>(kSummaryTopK, row.size());
  order.resize(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::int32_t a, std::int32_t b) {
                      const float la = row[static_cast<std::size_t>(a)];
                      const float lb = row[static_cast<std::size_t>(b)];
                      return la > lb || (la == lb && a < b);
                    });
  out.count = static_cast<std::int32_t>(k);
  for (std::size_t i = 0; i < k; ++i) {
    out.top_ids[i] = order[i];
    out.top_logits[i] = row[static_cast<std::size_t>(order[i])];
  }
}

}  // namespace saker
