// The ByteLevel decoder: ids → token strings → the bytes their characters stand for, then one
// lossy UTF-8 conversion of all the bytes together (tokenizers' decoders::ByteLevel).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/vocab.h"

namespace saker {

class ByteLevelDecoder {
 public:
  // Added tokens take precedence over the vocabulary for the same id, as in tokenizers.
  ByteLevelDecoder(const Vocab& vocab, const std::vector<AddedToken>& added);

  // Appends the bytes of one id: nothing for an unknown id, or for a special token when skipped.
  // A token whose characters are not all byte symbols (an added token with a space in it, say)
  // contributes its own UTF-8 bytes.
  void append_bytes(std::int32_t id, bool skip_special_tokens, std::string& out) const;

  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const;

 private:
  std::vector<std::string> bytes_;  // by id
  std::vector<bool> special_;
};

}  // namespace saker
