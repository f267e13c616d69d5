// Counted repetitions ({n}, {n,}, {n,m}) are what make a regex or a grammar costly to compile:
// XGrammar unrolls many of them (those its counted fast path does not take, such as `.0{n}`) into
// one automaton state per repetition, each with a token mask over the whole vocabulary, and the
// search for the shortest closing walks them: with Falcon's 65k tokens on a 2-core Xeon, 0.35 s
// at 300 repetitions, 2.5 s at 781, minutes at 78791. Their counts are bounded per constraint
// before XGrammar sees the text, so one request cannot hold a thread for long.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace saker {

// The most repetitions all the counted repetitions of one constraint may add up to.
inline constexpr std::int64_t kMaxRepetitions = 256;

enum class RepetitionSyntax { kRegex, kGrammar };

// Adds the counts of `text`'s counted repetitions (each one's upper bound, or its lower bound
// when it has none) to `total`, and throws ConstraintError naming `field` once the total passes
// kMaxRepetitions. Braces inside character classes, strings, comments and escapes do not count.
void count_repetitions(std::string_view text, RepetitionSyntax syntax, const std::string& field,
                       std::int64_t& total);

}  // namespace saker
