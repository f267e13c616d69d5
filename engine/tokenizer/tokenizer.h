// A Hugging Face byte-level BPE tokenizer loaded from tokenizer.json, giving the same ids and
// text as the `tokenizers` library (docs/tokenizer.md): Falcon's, and GPT-2-style ones.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/error.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace saker {

struct TokenizerParts;

class Tokenizer {
 public:
  // Throws TokenizerError naming the file and the JSON path of what is wrong or unsupported.
  static Tokenizer load(const std::filesystem::path& tokenizer_json);
  // DIR/tokenizer.json.
  static Tokenizer from_model_dir(const std::filesystem::path& dir);
  static Tokenizer from_json_text(std::string_view json, const std::string& source);

  // Text → ids. Bytes that are not valid UTF-8 are replaced by U+FFFD first, one per maximal
  // ill-formed subsequence (as Rust's String::from_utf8_lossy does).
  std::vector<std::int32_t> encode(std::string_view text) const;

  // Ids → text. Unknown ids are ignored, as tokenizers does.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;
  // The raw bytes one id contributes to a decode (see StreamingDetokenizer).
  void append_token_bytes(std::int32_t id, bool skip_special_tokens, std::string& out) const {
    decoder_.append_bytes(id, skip_special_tokens, out);
  }

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(std::int32_t id) const;
  // One past the largest id of the vocabulary and the added tokens.
  std::int32_t id_limit() const;
  const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }
  // The most bytes one token decodes to: a text of B bytes encodes to at least B / this many
  // tokens (byte-level BPE, no normalizer), so a prompt far over a limit can be refused unread.
  std::size_t max_token_bytes() const { return max_token_bytes_; }

 private:
  explicit Tokenizer(TokenizerParts parts);

  AddedVocabulary added_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  BpeModel model_;
  ByteLevelDecoder decoder_;
  std::size_t max_token_bytes_ = 0;
};

}  // namespace saker
