#include "engine/speculative/ngram.h"

#include <algorithm>

namespace saker {

std::vector<std::int32_t> propose_ngram(std::span<const std::int32_t> tokens,
                                        const NgramOptions& opt) {
  const auto len = static_cast<std::ptrdiff_t>(tokens.size());
  for (int n = std::min<std::ptrdiff_t>(opt.max_n, len - 1); n >= std::max(opt.min_n, 1); --n) {
    const auto suffix = tokens.subspan(static_cast<std::size_t>(len - n));
    // The most recent earlier occurrence: recent context is the likeliest to be copied again.
    for (std::ptrdiff_t at = len - n - 1; at >= 0; --at) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + at)) continue;
      const std::ptrdiff_t from = at + n;
      const std::ptrdiff_t to = std::min(len, from + opt.max_tokens);
      return {tokens.begin() + from, tokens.begin() + to};
    }
  }
  return {};
}

}  // namespace saker
