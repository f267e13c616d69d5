// Finishing within the budget (docs/structured-outputs.md, "The budget rule"): a short byte
// string that completes a constraint from the matcher's state, and its fewest-token spelling.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace xgrammar {
class GrammarMatcher;
}

namespace saker {

// The vocabulary's tokens by their bytes (special tokens, which decode to nothing, left out).
class Speller {
 public:
  explicit Speller(const std::vector<std::string>& decoded);
  // The fewest tokens whose bytes concatenate to `bytes` (empty optional: no spelling).
  std::optional<std::vector<std::int32_t>> spell(std::string_view bytes) const;

 private:
  std::unordered_map<std::string, std::int32_t> ids_;
  std::size_t longest_ = 0;
};

// A byte string after which the matcher's grammar is complete (may end), found by a depth-first
// search that tries closing bytes first ('"', '}', ']', '0', ...) and takes forced stretches
// whole; the matcher ends where it started. The first closing found is short, though not always
// the shortest; `shortest` then replaces its choices one at a time by other bytes, completing
// greedily, while that shortens it (until `max_steps` matcher calls are spent). Empty optional
// when no closing of at most `max_bytes` bytes was found.
std::optional<std::string> find_closing(xgrammar::GrammarMatcher& m, int max_steps = 4096,
                                        std::size_t max_bytes = 512, bool shortest = false);

}  // namespace saker
