// tokenizer.json "pre_tokenizer" → PreTokenizer, one builder per supported type.
#pragma once

#include <memory>

#include "engine/tokenizer/json_node.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace saker {

std::unique_ptr<PreTokenizer> build_pre_tokenizer(const JsonNode& node);

}  // namespace saker
