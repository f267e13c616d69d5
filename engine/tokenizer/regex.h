// PCRE2 (UTF, Unicode properties, JIT) behind RAII handles. Patterns are compiled once and shared;
// each thread matches with its own Matcher, which owns the match data.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;

namespace saker {

// A match or a gap between matches: bytes [begin, end) of the subject.
struct Span {
  std::size_t begin = 0, end = 0;
};

class Regex {
 public:
  // kOniguruma: a pattern written for Oniguruma, as Hugging Face tokenizers runs Split patterns;
  // \s and \S are given Oniguruma's meaning (White_Space; PCRE2's \s also matches U+180E) and
  // \h / \H (a hex digit there, horizontal space here) are refused.
  enum class Syntax { kPattern, kLiteral, kOniguruma };

  // Throws std::invalid_argument with PCRE2's message and offset when the pattern is invalid.
  explicit Regex(std::string_view pattern, Syntax syntax = Syntax::kPattern);

  const std::string& pattern() const { return pattern_; }

  class Matcher;
  Matcher matcher() const;

 private:
  struct CodeFree {
    void operator()(pcre2_real_code_8* p) const;
  };
  std::string pattern_;
  std::unique_ptr<pcre2_real_code_8, CodeFree> code_;
};

class Regex::Matcher {
 public:
  // The first match starting at or after `from`, searching the whole subject (lookbehind sees
  // what precedes `from`). Subjects must be valid UTF-8: they are not checked again.
  bool search(std::string_view subject, std::size_t from, Span& match);

  // Every match, left to right, as the Rust regex / onig crates iterate them (what Hugging Face
  // tokenizers uses): an empty match right after the previous match is skipped.
  void find_all(std::string_view subject, std::vector<Span>& matches);

 private:
  friend class Regex;
  struct DataFree {
    void operator()(pcre2_real_match_data_8* p) const;
  };
  explicit Matcher(const pcre2_real_code_8* code);
  const pcre2_real_code_8* code_;
  std::unique_ptr<pcre2_real_match_data_8, DataFree> data_;
};

// Escapes s for use as a literal inside a larger pattern.
std::string regex_escape(std::string_view s);

}  // namespace saker
