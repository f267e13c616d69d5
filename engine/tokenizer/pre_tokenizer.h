// Pre-tokenizers: the steps that cut a text segment into the pieces BPE sees, one class per
// Hugging Face pre-tokenizer type. Each step applies to every piece the previous step produced,
// never across pieces, exactly as tokenizers' PreTokenizedString::split does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/regex.h"

namespace saker {

// A segment's current text and its pieces: non-empty byte ranges of `text`, in order.
struct Pieces {
  std::string text;
  std::vector<Span> spans;

  void reset(std::string_view segment);
  std::string_view view(const Span& s) const { return {text.data() + s.begin, s.end - s.begin}; }
};

// What a split does with the matches of its pattern (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& pieces) const = 0;
};

// Split, and the character-class pre-tokenizers Punctuation and Digits, which are splits on a
// one-character pattern.
class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> pattern, SplitBehavior behavior, bool invert);
  void apply(Pieces& pieces) const override;

 private:
  std::unique_ptr<Regex> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// ByteLevel: an optional leading space per piece, the GPT-2 regex split, then every byte mapped
// to its byte-level symbol.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex);
  void apply(Pieces& pieces) const override;

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null without use_regex
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps);
  void apply(Pieces& pieces) const override;

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Punctuation: each character of general category P*, or ASCII punctuation (Rust's
// is_ascii_punctuation, which adds $ + < = > ^ ` | ~), is a match.
std::unique_ptr<PreTokenizer> make_punctuation(SplitBehavior behavior);
// Digits: numeric characters (\p{N}, Rust's char::is_numeric), each isolated or in runs.
std::unique_ptr<PreTokenizer> make_digits(bool individual_digits);

}  // namespace saker
