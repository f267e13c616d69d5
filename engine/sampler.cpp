#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace saker {

std::int32_t argmax(std::span<const float> logits) {
  return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void require(bool ok, const char* name, float value, const char* range) {
  if (ok) return;
  char got[32];
  std::snprintf(got, sizeof got, "%g", static_cast<double>(value));
  throw std::invalid_argument(std::string(name) + " must be " + range + ", got " + got);
}

}  // namespace

double uniform_at(std::uint64_t seed, std::int64_t position) {
  const std::uint64_t h = splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(position)));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0, "temperature", temperature, ">= 0");
  require(top_k >= 0, "top_k", static_cast<float>(top_k), ">= 0 (0 disables it)");
  require(top_p > 0 && top_p <= 1, "top_p", top_p, "in (0, 1]");
  require(typical_p > 0 && typical_p <= 1, "typical_p", typical_p, "in (0, 1]");
  require(min_p >= 0 && min_p <= 1, "min_p", min_p, "in [0, 1]");
  require(std::isfinite(repetition_penalty) && repetition_penalty > 0, "repetition_penalty",
          repetition_penalty, "> 0");
  require(presence_penalty >= -2 && presence_penalty <= 2, "presence_penalty", presence_penalty,
          "in [-2, 2]");
  require(frequency_penalty >= -2 && frequency_penalty <= 2, "frequency_penalty", frequency_penalty,
          "in [-2, 2]");
}

Sampler::Sampler(std::int64_t vocab)
    : order_(static_cast<std::size_t>(vocab)),
      probs_(static_cast<std::size_t>(vocab)),
      counts_(static_cast<std::size_t>(vocab), 0),
      mask_(static_cast<std::size_t>(vocab), 0) {}

void Sampler::apply_penalties(std::span<float> logits, const SamplingParams& p,
                              std::span<const std::int32_t> prompt,
                              std::span<const std::int32_t> generated) {
  if (p.repetition_penalty != 1.0f) {
    // HF: every token already in the sequence, once.
    touched_.assign(prompt.begin(), prompt.end());
    touched_.insert(touched_.end(), generated.begin(), generated.end());
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (const auto id : touched_) {
      float& l = logits[static_cast<std::size_t>(id)];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (const auto id : generated) ++counts_[static_cast<std::size_t>(id)];
    for (const auto id : generated) {
      std::int32_t& c = counts_[static_cast<std::size_t>(id)];
      if (c == 0) continue;  // already applied for this id
      logits[static_cast<std::size_t>(id)] -=
          p.presence_penalty + p.frequency_penalty * static_cast<float>(c);
      c = 0;
    }
  }
}

std::int32_t Sampler::sort_candidates(std::span<const float> logits, const SamplingParams& p) {
  // Candidates best first; ties keep the lower id, so the order is a function of the logits.
  const auto n = static_cast<std::int32_t>(logits.size());
  std::iota(order_.begin(), order_.end(), 0);
  const std::int32_t keep = p.top_k > 0 ? std::min(p.top_k, n) : n;
  auto better = [&](std::int32_t a, std::int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), better);
  sorted_.resize(static_cast<std::size_t>(keep));
  for (std::int32_t i = 0; i < keep; ++i) sorted_[i] = logits[order_[i]];
  return keep;
}

std::int32_t Sampler::sample(std::span<float> logits, const SamplingParams& p,
                             std::span<const std::int32_t> prompt,
                             std::span<const std::int32_t> generated, std::int64_t position) {
  apply_penalties(logits, p, prompt, generated);
  if (p.greedy())
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                     logits.begin());

  const std::int32_t keep = sort_candidates(logits, p);
  return pick({order_.data(), static_cast<std::size_t>(keep)}, sorted_, p, position);
}

std::int32_t Sampler::sample_top(std::span<const std::int32_t> ids, std::span<const float> sorted,
                                 const SamplingParams& p, std::int64_t position) {
  if (p.greedy()) return ids[0];
  const auto keep = static_cast<std::int32_t>(
      std::min<std::int64_t>(p.top_k > 0 ? p.top_k : std::ssize(ids), std::ssize(ids)));
  return pick(ids.first(static_cast<std::size_t>(keep)), sorted, p, position);
}

std::int32_t Sampler::filter(std::span<const float> sorted, const SamplingParams& p,
                             std::int32_t keep) {
  // Softmax at the temperature over the kept candidates, in double for a stable sum.
  const double max_l = sorted[0];
  double z = 0;
  for (std::int32_t i = 0; i < keep; ++i) {
    probs_[i] = static_cast<float>(std::exp((sorted[i] - max_l) / p.temperature));
    z += probs_[i];
  }
  for (std::int32_t i = 0; i < keep; ++i) probs_[i] = static_cast<float>(probs_[i] / z);

  if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double mass = 0;
    std::int32_t i = 0;
    while (i < keep && mass < p.top_p) mass += probs_[i++];
    keep = std::max(1, i);
  }
  if (p.typical_p < 1.0f) {
    // Locally typical sampling: keep the tokens whose surprise is closest to the entropy, until
    // their mass reaches typical_p.
    double entropy = 0;
    for (std::int32_t i = 0; i < keep; ++i)
      if (probs_[i] > 0) entropy -= probs_[i] * std::log(static_cast<double>(probs_[i]));
    std::vector<std::int32_t>& idx = touched_;
    idx.resize(static_cast<std::size_t>(keep));
    std::iota(idx.begin(), idx.end(), 0);
    auto distance = [&](std::int32_t i) {
      return std::fabs(-std::log(std::max(static_cast<double>(probs_[i]), 1e-300)) - entropy);
    };
    std::stable_sort(idx.begin(), idx.end(),
                     [&](std::int32_t a, std::int32_t b) { return distance(a) < distance(b); });
    double mass = 0;
    std::int32_t m = 0;
    while (m < keep && mass < p.typical_p) mass += probs_[idx[static_cast<std::size_t>(m++)]];
    std::fill_n(mask_.begin(), keep, 0);
    for (std::int32_t i = 0; i < m; ++i)
      mask_[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)])] = 1;
    for (std::int32_t i = 0; i < keep; ++i)
      if (!mask_[static_cast<std::size_t>(i)]) probs_[i] = 0;
  }
  if (p.min_p > 0.0f) {
    const float floor = p.min_p * probs_[0];
    for (std::int32_t i = 0; i < keep; ++i)
      if (probs_[i] < floor) probs_[i] = 0;
  }
  return keep;
}

std::int32_t Sampler::pick(std::span<const std::int32_t> ids, std::span<const float> sorted,
                           const SamplingParams& p, std::int64_t position) {
  const std::int32_t keep = filter(sorted, p, static_cast<std::int32_t>(ids.size()));
  const std::int32_t* order = ids.data();
  double total = 0;
  for (std::int32_t i = 0; i < keep; ++i) total += probs_[i];
  const double u = uniform_at(p.seed, position) * total;
  double acc = 0;
  for (std::int32_t i = 0; i < keep; ++i) {
    acc += probs_[i];
    if (u < acc) return order[i];
  }
  for (std::int32_t i = keep - 1; i >= 0; --i)  // rounding at the very top of the range
    if (probs_[i] > 0) return order[i];
  return order[0];
}

void Sampler::distribution(std::span<const float> logits, const SamplingParams& p,
                           std::span<float> probs) {
  std::fill(probs.begin(), probs.end(), 0.0f);
  if (p.greedy()) {
    probs[static_cast<std::size_t>(argmax(logits))] = 1.0f;
    return;
  }
  const std::int32_t keep = filter(sorted_, p, sort_candidates(logits, p));
  double total = 0;
  for (std::int32_t i = 0; i < keep; ++i) total += probs_[i];
  for (std::int32_t i = 0; i < keep; ++i)
    probs[static_cast<std::size_t>(order_[i])] = static_cast<float>(probs_[i] / total);
}

std::int32_t draw(std::span<const float> probs, double u) {
  double total = 0;
  for (const float x : probs) total += x;
  u *= total;
  double acc = 0;
  std::int32_t last = -1;
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    acc += probs[i];
    last = static_cast<std::int32_t>(i);
    if (u < acc) return last;
  }
  return last;  // rounding at the very top of the range (-1: all zero)
}

}  // namespace saker
