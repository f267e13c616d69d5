#include "engine/tokenizer/decoder.h"

#include <algorithm>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"

namespace saker {
namespace {

std::string token_bytes(const std::string& token) {
  std::string out;
  if (!byte_level::append_bytes(token, out)) out = token;
  return out;
}

}  // namespace

ByteLevelDecoder::ByteLevelDecoder(const Vocab& vocab, const std::vector<AddedToken>& added) {
  std::int32_t limit = vocab.id_limit();
  for (const AddedToken& t : added) limit = std::max(limit, t.id + 1);
  bytes_.resize(static_cast<std::size_t>(limit));
  special_.resize(static_cast<std::size_t>(limit), false);
  for (std::int32_t id = 0; id < vocab.id_limit(); ++id)
    if (const std::string* token = vocab.token(id))
      bytes_[static_cast<std::size_t>(id)] = token_bytes(*token);
  for (const AddedToken& t : added) {
    bytes_[static_cast<std::size_t>(t.id)] = token_bytes(t.content);
    special_[static_cast<std::size_t>(t.id)] = t.special;
  }
}

void ByteLevelDecoder::append_bytes(std::int32_t id, bool skip_special_tokens,
                                    std::string& out) const {
  if (id < 0 || static_cast<std::size_t>(id) >= bytes_.size()) return;
  const auto index = static_cast<std::size_t>(id);
  if (skip_special_tokens && special_[index]) return;
  out += bytes_[index];
}

std::string ByteLevelDecoder::decode(std::span<const std::int32_t> ids,
                                     bool skip_special_tokens) const {
  std::string bytes;
  for (const std::int32_t id : ids) append_bytes(id, skip_special_tokens, bytes);
  return utf8::lossy(bytes);
}

}  // namespace saker
