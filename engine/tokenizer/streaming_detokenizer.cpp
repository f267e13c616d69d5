#include "engine/tokenizer/streaming_detokenizer.h"

#include "engine/tokenizer/utf8.h"

namespace saker {

std::string StreamingDetokenizer::push(std::int32_t id) {
  tokenizer_.append_token_bytes(id, skip_special_tokens_, pending_);
  // Lossy decoding restarts after every character and every replaced subsequence, so cutting
  // just before a trailing unfinished character gives the same text as decoding everything.
  const std::size_t ready = utf8::stable_prefix(pending_);
  std::string out = utf8::lossy(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = utf8::lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace saker
