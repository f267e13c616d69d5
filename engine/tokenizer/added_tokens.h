// Added tokens (tokenizer.json "added_tokens"): literal strings matched in the raw text before any
// pre-tokenization, leftmost-longest, each mapping straight to its id.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/regex.h"

namespace saker {

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  bool single_word = false;  // only where no word character touches it on either side
  bool lstrip = false;       // also takes the whitespace just before it
  bool rstrip = false;       // also takes the whitespace just after it
  bool normalized = false;   // matched in normalized text (there is no normalizer: same text)
  bool special = false;      // dropped by decode when skipping special tokens
};

// A run of text that is either plain (id < 0) or one added token.
struct Segment {
  std::size_t begin = 0, end = 0;
  std::int32_t id = -1;
};

class AddedVocabulary {
 public:
  explicit AddedVocabulary(std::vector<AddedToken> tokens);
  ~AddedVocabulary();
  AddedVocabulary(AddedVocabulary&&) noexcept;
  AddedVocabulary& operator=(AddedVocabulary&&) noexcept;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Splits text into plain segments and added tokens. As in tokenizers, tokens that are not
  // `normalized` are found first in the whole text, then `normalized` ones within each remaining
  // plain segment; each pass matches leftmost-longest.
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  struct Pass;
  class CharTest;
  static std::unique_ptr<Pass> make_pass(const std::vector<AddedToken>& tokens, bool normalized);
  void split_pass(const Pass& pass, std::string_view text, std::size_t offset,
                  std::vector<Segment>& out) const;
  // The token's span once single_word, lstrip and rstrip are applied; false when single_word
  // rules the match out. `done` is where the text still unclaimed starts.
  bool adjust(const AddedToken& token, std::string_view text, std::size_t done, Span& span) const;

  std::vector<AddedToken> tokens_;
  std::unique_ptr<Pass> raw_, normalized_;  // null when no token is of that kind
  std::unique_ptr<Regex> word_char_, space_char_;
};

}  // namespace saker
