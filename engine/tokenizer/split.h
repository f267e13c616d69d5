// The delimiter behaviours of tokenizers' NormalizedString::split, on one piece.
#pragma once

#include <vector>

#include "engine/tokenizer/pre_tokenizer.h"

namespace saker {

// A part of a piece and whether the pattern matched it.
struct Part {
  Span span;
  bool is_match;
};

// Cuts [0, size) at the given matches (in order, non-overlapping, possibly empty) into parts
// covering all of it, matches and gaps alike. An empty piece is one non-matching empty part.
void parts_from_matches(std::size_t size, const std::vector<Span>& matches, std::vector<Part>& out);

// The pieces the behaviour keeps, in order, empty ones dropped; offsets relative to the piece.
void apply_behavior(const std::vector<Part>& parts, SplitBehavior behavior,
                    std::vector<Span>& pieces);

}  // namespace saker
