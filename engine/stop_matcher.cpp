#include "engine/stop_matcher.h"

#include <algorithm>

namespace saker {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string_view StopMatcher::push(std::string_view text) {
  out_.clear();
  if (matched_) return out_;
  held_ += text;
  // The earliest stop string in what is held. A match cannot begin in released text: that text
  // was released only because no stop string could begin there.
  std::size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    out_.assign(held_, 0, first);
    held_.clear();
    matched_ = true;
    return out_;
  }
  // Hold the longest tail that is a proper prefix of some stop string. Stop strings are valid
  // UTF-8, so such a tail starts on a character boundary of the (valid) text.
  std::size_t keep = 0;
  for (const std::string& s : stops_) {
    for (std::size_t len = std::min(s.size() - 1, held_.size()); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  out_.assign(held_, 0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out_;
}

std::string_view StopMatcher::push_unchecked(std::string_view text) {
  out_.clear();
  if (matched_) return out_;
  out_.swap(held_);
  out_ += text;
  return out_;
}

std::string_view StopMatcher::flush() {
  out_.clear();
  out_.swap(held_);
  return out_;
}

}  // namespace saker
