// Requests the speculative-decoding tests share: copy-heavy prompts (a random phrase three
// times, so prompt lookup has something to find), even ids sampled with their id as the seed,
// odd ones greedy, eos ignored, one log-probability alternative each.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/request.h"

namespace saker::test {

inline std::vector<BatchRequest> copy_requests(std::int64_t vocab, int n, std::uint32_t seed,
                                               std::int64_t max_new_tokens,
                                               bool varied_phrases = false) {
  std::mt19937 rng(seed);
  std::vector<BatchRequest> out;
  for (std::uint64_t id = 1; id <= static_cast<std::uint64_t>(n); ++id) {
    BatchRequest r;
    r.id = id;
    std::vector<std::int32_t> phrase(varied_phrases ? 3 + id % 3 : 5);
    for (auto& t : phrase) t = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
    for (int rep = 0; rep < 3; ++rep) r.prompt.insert(r.prompt.end(), phrase.begin(), phrase.end());
    r.max_new_tokens = max_new_tokens;
    r.ignore_eos = true;
    r.logprobs = 1;
    if (id % 2 == 0) {
      r.sampling.temperature = 1.0f;
      r.sampling.seed = id;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace saker::test
