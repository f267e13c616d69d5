#include "engine/constraints/repetitions.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "engine/constraints/compiler.h"

namespace saker {
namespace {

bool digit(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) != 0;
}

// A number of digits at text[i..], saturated (a count past the limit is refused anyway).
std::int64_t number(std::string_view text, std::size_t& i) {
  std::int64_t n = 0;
  while (i < text.size() && digit(text[i])) {
    n = std::min<std::int64_t>(n * 10 + (text[i] - '0'), std::int64_t{1} << 40);
    ++i;
  }
  return n;
}

// The count of a repetition `{n}`, `{n,}` or `{n,m}` opening at text[i] (the brace), with i
// moved past it; nothing (i unmoved) when the brace opens no repetition.
std::optional<std::int64_t> repetition(std::string_view text, std::size_t& i) {
  std::size_t j = i + 1;
  while (j < text.size() && text[j] == ' ') ++j;
  if (j >= text.size() || !digit(text[j])) return std::nullopt;
  std::int64_t count = number(text, j);
  while (j < text.size() && text[j] == ' ') ++j;
  if (j < text.size() && text[j] == ',') {
    ++j;
    while (j < text.size() && text[j] == ' ') ++j;
    if (j < text.size() && digit(text[j])) count = number(text, j);
    while (j < text.size() && text[j] == ' ') ++j;
  }
  if (j >= text.size() || text[j] != '}') return std::nullopt;
  i = j + 1;
  return count;
}

// Past a character class opening at text[i] ('['): a leading ']' or '^]' is a member.
std::size_t skip_class(std::string_view text, std::size_t i) {
  ++i;
  if (i < text.size() && text[i] == '^') ++i;
  if (i < text.size() && text[i] == ']') ++i;
  while (i < text.size() && text[i] != ']') i += text[i] == '\\' ? 2 : 1;
  return i + 1;
}

// Past an escape at text[i] ('\\'), braces of \p{..}, \x{..}, \u{..}, \N{..} included.
std::size_t skip_escape(std::string_view text, std::size_t i) {
  if (i + 2 < text.size() && text[i + 2] == '{' &&
      std::string_view("pPxuN").find(text[i + 1]) != std::string_view::npos) {
    const std::size_t close = text.find('}', i + 3);
    return close == std::string_view::npos ? text.size() : close + 1;
  }
  return i + 2;
}

}  // namespace

void count_repetitions(std::string_view text, RepetitionSyntax syntax, const std::string& field,
                       std::int64_t& total) {
  const bool grammar = syntax == RepetitionSyntax::kGrammar;
  std::size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\\') {
      i = skip_escape(text, i);
    } else if (c == '[') {
      i = skip_class(text, i);
    } else if (grammar && (c == '"' || c == '\'')) {  // a string literal
      ++i;
      while (i < text.size() && text[i] != c) i += text[i] == '\\' ? 2 : 1;
      ++i;
    } else if (grammar && c == '#') {  // a comment, to the end of its line
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (c == '{') {
      if (const auto n = repetition(text, i)) {
        total += *n;
        if (total > kMaxRepetitions)
          throw ConstraintError(
              field, field + ": its counted repetitions ({n,m}) add up to more than " +
                         std::to_string(kMaxRepetitions) +
                         ", the limit per constraint (each may become automaton states of its "
                         "own; use * or + for long runs)");
      } else {
        ++i;
      }
    } else {
      ++i;
    }
  }
}

}  // namespace saker
