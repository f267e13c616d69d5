// Prompt lookup (engine/speculative/ngram.h): the longest recurring suffix, at its most recent
// earlier occurrence, proposes what followed it, at most K tokens.
#include <vector>

#include <catch2/catch.hpp>

#include "engine/speculative/ngram.h"

using namespace saker;
using Ids = std::vector<std::int32_t>;

TEST_CASE("prompt lookup proposes what followed the last tokens before", "[speculative]") {
  const NgramOptions k3{3, 4, 1};
  // "2 3" occurred at the start: what followed it is proposed, K tokens at most.
  CHECK(propose_ngram(Ids{1, 2, 3, 4, 5, 9, 2, 3}, k3) == Ids{4, 5, 9});
  CHECK(propose_ngram(Ids{1, 2, 3, 4, 5, 9, 2, 3}, {1, 4, 1}) == Ids{4});
  // The longest suffix wins: "2 3" (then 7 5 3) over "3" alone (then 6 2 3).
  CHECK(propose_ngram(Ids{2, 3, 7, 5, 3, 6, 2, 3}, k3) == Ids{7, 5, 3});
  // Of several occurrences, the most recent.
  CHECK(propose_ngram(Ids{1, 2, 8, 1, 2, 9, 1, 2}, k3) == Ids{9, 1, 2});
  // Near the end fewer than K tokens follow; a periodic tail proposes its period.
  CHECK(propose_ngram(Ids{4, 5, 4}, k3) == Ids{5, 4});
  CHECK(propose_ngram(Ids{6, 6, 6, 6}, k3) == Ids{6});
  // Nothing recurs, or only suffixes shorter than min_n: no proposal.
  CHECK(propose_ngram(Ids{1, 2, 3}, k3).empty());
  CHECK(propose_ngram(Ids{1, 5, 2, 5}, {3, 4, 2}).empty());
  CHECK(propose_ngram(Ids{1, 5, 2, 5}, k3) == Ids{2, 5});
  CHECK(propose_ngram(Ids{}, k3).empty());
  CHECK(propose_ngram(Ids{7}, k3).empty());
  // max_n bounds the suffix looked up: with 1, only the last token is matched.
  CHECK(propose_ngram(Ids{2, 3, 7, 5, 3, 6, 2, 3}, {3, 1, 1}) == Ids{6, 2, 3});
}
