#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer_json.h"
#include "engine/tokenizer/utf8.h"

namespace saker {

Tokenizer::Tokenizer(TokenizerParts parts)
    : added_(std::move(parts.added)),
      pre_tokenizer_(std::move(parts.pre_tokenizer)),
      model_(std::move(parts.vocab), parts.merges),
      decoder_(model_.vocab(), added_.tokens()) {
  std::string bytes;
  for (std::int32_t id = 0; id < id_limit(); ++id) {
    bytes.clear();
    decoder_.append_bytes(id, false, bytes);
    max_token_bytes_ = std::max(max_token_bytes_, bytes.size());
  }
}

Tokenizer Tokenizer::from_json_text(std::string_view text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw TokenizerError(source + ": invalid JSON: " + e.what());
  }
  return Tokenizer(parse_tokenizer_json(j, source));
}

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json) {
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!in) throw TokenizerError("cannot read " + tokenizer_json.string());
  std::ostringstream text;
  text << in.rdbuf();
  return from_json_text(text.str(), tokenizer_json.string());
}

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  const auto file = dir / "tokenizer.json";
  if (!std::filesystem::exists(file))
    throw TokenizerError("model directory " + dir.string() + " has no tokenizer.json");
  return load(file);
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::lossy(text);
    text = repaired;
  }
  std::vector<Segment> segments;
  added_.split(text, segments);
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3);
  Pieces pieces;
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    pieces.reset(text.substr(s.begin, s.end - s.begin));
    if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
    model_.encode(pieces, ids);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  return decoder_.decode(ids, skip_special_tokens);
}

std::optional<std::int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& t : added_.tokens())
    if (t.content == token) return t.id;
  return model_.vocab().find(token);
}

std::optional<std::string> Tokenizer::id_to_token(std::int32_t id) const {
  for (const AddedToken& t : added_.tokens())
    if (t.id == id) return t.content;
  if (const std::string* token = model_.vocab().token(id)) return *token;
  return std::nullopt;
}

std::int32_t Tokenizer::id_limit() const {
  std::int32_t limit = model_.vocab().id_limit();
  for (const AddedToken& t : added_.tokens()) limit = std::max(limit, t.id + 1);
  return limit;
}

}  // namespace saker
