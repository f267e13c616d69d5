// Stop strings over streamed text. A stop string may span tokens, so text that could be the start
// of one is held back until it either completes the stop string (then it and everything after it
// are dropped) or can no longer do so (then it is released).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace saker {

class StopMatcher {
 public:
  StopMatcher() = default;
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends text; returns what is now safe to release (valid until the next call).
  std::string_view push(std::string_view text);
  // Appends text that must not end the sequence (before min_new_tokens): all of it is released,
  // with anything held before.
  std::string_view push_unchecked(std::string_view text);
  // The held-back text, released when the sequence ends for another reason.
  std::string_view flush();
  bool matched() const { return matched_; }
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string held_, out_;
  bool matched_ = false;
};

}  // namespace saker
