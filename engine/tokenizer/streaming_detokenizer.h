// Detokenizes one id at a time for streamed output. Contract: every string push() returns is
// valid UTF-8 made of whole characters, and the concatenation of all of them plus flush() is
// exactly Tokenizer::decode of all the ids pushed. A character whose bytes are split across
// tokens is held back until its last byte arrives; bytes that can no longer become valid are
// emitted at once as U+FFFD, as the full decode would show them.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace saker {

class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // The text this id completes (often empty while a character is unfinished).
  std::string push(std::int32_t id);
  // The rest: an unfinished character becomes U+FFFD. The detokenizer is empty afterwards.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes not emitted yet: at most one unfinished character
};

}  // namespace saker
