// Choosing the next token on rank 0 from one sequence's logits. Randomness comes from the
// request's seed and the token's position alone (a counter-based hash, no shared stream), so a
// seeded request draws the same tokens whatever else is in the batch and on every run.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace saker {

// Index of the largest value; the first one on ties (as torch.argmax).
std::int32_t argmax(std::span<const float> logits);

struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy
  std::int32_t top_k = 0;           // 0: off
  float top_p = 1.0f;               // (0, 1]
  float typical_p = 1.0f;           // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; HF's: on prompt and generated tokens
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI's: on generated tokens
  float frequency_penalty = 0.0f;   // [-2, 2]
  std::uint64_t seed = 0;

  // Throws std::invalid_argument naming the parameter, its value and the allowed range.
  void validate() const;
  bool greedy() const { return temperature == 0.0f || top_k == 1; }
  // Greedy on the model's own logits: nothing to do but take the argmax.
  bool plain_greedy() const {
    return greedy() && repetition_penalty == 1.0f && presence_penalty == 0.0f &&
           frequency_penalty == 0.0f;
  }
};

class Sampler {
 public:
  explicit Sampler(std::int64_t vocab);

  // Picks a token from `logits` (modified in place). `prompt` and `generated` feed the
  // penalties; `position` is the new token's position in its sequence.
  std::int32_t sample(std::span<float> logits, const SamplingParams& p,
                      std::span<const std::int32_t> prompt, std::span<const std::int32_t> generated,
                      std::int64_t position);
  // The same choice from the best candidates alone: `ids` best first (lower id first on ties)
  // with their raw logits `sorted`, for parameters without penalties whose candidates all lie
  // among them (top_k in [1, ids.size()], or greedy). Gives exactly sample()'s token for the
  // full row, since sample() works on this same prefix after sorting.
  std::int32_t sample_top(std::span<const std::int32_t> ids, std::span<const float> sorted,
                          const SamplingParams& p, std::int64_t position);
  // The distribution sample() draws from for `logits` (no penalties): temperature, top_k,
  // top_p, typical_p and min_p applied, normalised, dense over the vocabulary. Greedy: all
  // mass on the argmax. (Speculative sampling compares the target's and the draft's.)
  void distribution(std::span<const float> logits, const SamplingParams& p, std::span<float> probs);

 private:
  // The best min(top_k, vocab) candidates into order_ (ids) and sorted_ (logits), best first,
  // lower id first on ties; returns how many.
  std::int32_t sort_candidates(std::span<const float> logits, const SamplingParams& p);
  // The kept candidates' probabilities into probs_ (not renormalised after the filters, which
  // zero some); returns how many of the first `keep` candidates remain.
  std::int32_t filter(std::span<const float> sorted, const SamplingParams& p, std::int32_t keep);
  // Draws among the sorted candidates (softmax at the temperature, top_p, typical_p, min_p).
  std::int32_t pick(std::span<const std::int32_t> ids, std::span<const float> sorted,
                    const SamplingParams& p, std::int64_t position);
  void apply_penalties(std::span<float> logits, const SamplingParams& p,
                       std::span<const std::int32_t> prompt,
                       std::span<const std::int32_t> generated);

  std::vector<std::int32_t> order_;  // candidate ids, best first
  std::vector<float> probs_;
  std::vector<float> sorted_;  // the kept candidates' logits
  std::vector<std::int32_t> counts_;
  std::vector<std::int32_t> touched_;
  std::vector<std::uint8_t> mask_;
};

inline SamplingParams greedy_sampling() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

// A uniform number in [0, 1) from (seed, position) alone.
double uniform_at(std::uint64_t seed, std::int64_t position);

// The token at `u` (in [0, 1)) of the cumulative distribution of `probs` (unnormalised, >= 0);
// -1 when every entry is zero.
std::int32_t draw(std::span<const float> probs, double u);

}  // namespace saker
