// Prompt lookup, the n-gram proposer of speculative decoding (`--speculative-method ngram`):
// what followed the last time the sequence's final n tokens appeared in its prompt or output.
// Copy-heavy requests (repeat, quote or edit a given text) make such proposals right often, at no
// model cost.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace saker {

struct NgramOptions {
  int max_tokens = 3;  // K: the most tokens proposed
  int max_n = 4;       // the longest suffix looked up (--ngram-max)
  int min_n = 1;       // the shortest suffix worth a proposal
};

// Up to `max_tokens` tokens proposed to follow `tokens` (prompt and output so far): the longest
// suffix of n tokens (max_n down to min_n) that occurs earlier, at its most recent earlier
// occurrence, and the tokens after it. Empty when no suffix recurs.
std::vector<std::int32_t> propose_ngram(std::span<const std::int32_t> tokens,
                                        const NgramOptions& opt);

}  // namespace saker
