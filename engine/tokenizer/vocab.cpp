#include "engine/tokenizer/vocab.h"

namespace saker {

std::string Vocab::add(std::string token, std::int32_t id) {
  if (id < 0) return "id " + std::to_string(id) + " is negative";
  const auto index = static_cast<std::size_t>(id);
  if (index < tokens_.size() && present_[index])
    return "id " + std::to_string(id) + " is used by both '" + tokens_[index] + "' and '" + token +
           "'";
  if (!ids_.try_emplace(token, id).second) return "token '" + token + "' appears twice";
  if (index >= tokens_.size()) {
    tokens_.resize(index + 1);
    present_.resize(index + 1, false);
  }
  tokens_[index] = std::move(token);
  present_[index] = true;
  return {};
}

}  // namespace saker
