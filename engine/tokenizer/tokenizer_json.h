// tokenizer.json (Hugging Face tokenizers' serialization) → the parts of a Tokenizer. Only what
// BPE tokenizers of the Falcon / GPT-2 kind use is accepted; anything else is refused with the
// file, the JSON path and the reason, rather than silently tokenizing differently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/vocab.h"

namespace saker {

struct TokenizerParts {
  Vocab vocab;
  std::vector<MergeRule> merges;  // in rank order
  std::vector<AddedToken> added;
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // null: each text segment is one piece
};

// `file` names the source in error messages.
TokenizerParts parse_tokenizer_json(const nlohmann::json& j, const std::string& file);

}  // namespace saker
