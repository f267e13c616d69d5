#include "engine/tokenizer/split.h"

#include <algorithm>

namespace saker {

void parts_from_matches(std::size_t size, const std::vector<Span>& matches,
                        std::vector<Part>& out) {
  out.clear();
  if (size == 0) {
    out.push_back({{0, 0}, false});
    return;
  }
  std::size_t prev = 0;
  for (const Span& m : matches) {
    if (prev != m.begin) out.push_back({{prev, m.begin}, false});
    out.push_back({m, true});
    prev = m.end;
  }
  if (prev != size) out.push_back({{prev, size}, false});
}

namespace {

// Contiguous: consecutive parts of the same kind become one piece.
void contiguous(const std::vector<Part>& parts, std::vector<Span>& out) {
  bool previous_match = false;
  for (const Part& p : parts) {
    if (p.is_match == previous_match && !out.empty())
      out.back().end = p.span.end;
    else
      out.push_back(p.span);
    previous_match = p.is_match;
  }
}

// MergedWithPrevious: a match joins the piece before it (unless that was a match too).
void merged_with_previous(const std::vector<Part>& parts, std::vector<Span>& out) {
  bool previous_match = false;
  for (const Part& p : parts) {
    if (p.is_match && !previous_match && !out.empty())
      out.back().end = p.span.end;
    else
      out.push_back(p.span);
    previous_match = p.is_match;
  }
}

// MergedWithNext: the mirror image, folding from the end.
void merged_with_next(const std::vector<Part>& parts, std::vector<Span>& out) {
  bool previous_match = false;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (it->is_match && !previous_match && !out.empty())
      out.back().begin = it->span.begin;
    else
      out.push_back(it->span);
    previous_match = it->is_match;
  }
  std::reverse(out.begin(), out.end());
}

}  // namespace

void apply_behavior(const std::vector<Part>& parts, SplitBehavior behavior,
                    std::vector<Span>& pieces) {
  pieces.clear();
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) pieces.push_back(p.span);
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts)
        if (!p.is_match) pieces.push_back(p.span);
      break;
    case SplitBehavior::kContiguous:
      contiguous(parts, pieces);
      break;
    case SplitBehavior::kMergedWithPrevious:
      merged_with_previous(parts, pieces);
      break;
    case SplitBehavior::kMergedWithNext:
      merged_with_next(parts, pieces);
      break;
  }
  std::erase_if(pieces, [](const Span& s) { return s.begin == s.end; });
}

}  // namespace saker
