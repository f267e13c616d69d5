#include "engine/tokenizer/tokenizer_json.h"

#include <algorithm>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/json_node.h"
#include "engine/tokenizer/pre_tokenizer_json.h"

namespace saker {
namespace {

// Components that would change ids or text in ways this tokenizer does not implement.
void refuse_unsupported(const JsonNode& root) {
  if (auto n = root.optional_field("normalizer"))
    n->fail("unsupported normalizer (type '" + n->field("type").string() +
            "'); only tokenizers without a normalizer are supported");
  for (const char* key : {"truncation", "padding"})
    if (auto n = root.optional_field(key)) n->fail("not supported; it must be null");
  if (auto n = root.optional_field("post_processor")) {
    // ByteLevel post-processing only trims offsets; anything else would add tokens.
    const std::string type = n->field("type").string();
    if (type != "ByteLevel") n->fail("unsupported type '" + type + "'");
  }
  const auto decoder = root.optional_field("decoder");
  if (!decoder) root.fail("missing field 'decoder'; only the ByteLevel decoder is supported");
  const std::string type = decoder->field("type").string();
  if (type != "ByteLevel") decoder->fail("unsupported type '" + type + "'");
}

void refuse_unsupported_bpe_options(const JsonNode& model) {
  const std::string type = model.field("type").string();
  if (type != "BPE") model.fail("unsupported model type '" + type + "'; only BPE is supported");
  if (auto n = model.optional_field("dropout")) n->fail("BPE dropout is not supported");
  if (auto n = model.optional_field("unk_token")) n->fail("an unknown token is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto n = model.optional_field(key))
      if (!n->string().empty()) n->fail("not supported; it must be null or empty");
  for (const char* key : {"byte_fallback", "ignore_merges"})
    if (model.boolean_or(key, false)) model.field(key).fail("not supported; it must be false");
}

// Ids index tables: a bound keeps a corrupt id from asking for gigabytes. Real vocabularies have
// at most a few hundred thousand tokens.
constexpr std::int64_t kMaxId = 1 << 24;

Vocab read_vocab(const JsonNode& model) {
  const JsonNode vocab = model.field("vocab");
  Vocab out;
  out.reserve(vocab.object().size());
  // 65k entries: a JsonNode (and its path string) is made only for an entry that is wrong.
  for (const auto& [token, id] : vocab.object().items()) {
    const std::int64_t v = id.is_number_integer() ? id.get<std::int64_t>() : -1;
    if (v < 0 || v >= kMaxId)
      vocab.member(token, id).fail("expected an integer id in [0, " + std::to_string(kMaxId) +
                                   "), got " + id.dump());
    if (const std::string why = out.add(token, static_cast<std::int32_t>(v)); !why.empty())
      vocab.member(token, id).fail(why);
  }
  return out;
}

// "left right" (a single space between them) or ["left", "right"].
std::pair<std::string_view, std::string_view> merge_pair(const JsonNode& merges, std::size_t i) {
  const nlohmann::json& m = merges.value()[i];
  if (m.is_array()) {
    if (m.size() != 2 || !m[0].is_string() || !m[1].is_string())
      merges.element(i).fail("expected two tokens, got " + m.dump());
    return {m[0].get_ref<const std::string&>(), m[1].get_ref<const std::string&>()};
  }
  if (!m.is_string()) merges.element(i).string();  // fails, naming what it got
  const std::string_view s = m.get_ref<const std::string&>();
  const std::size_t space = s.find(' ');
  if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
    merges.element(i).fail("expected \"left right\" with exactly one space, got '" +
                           std::string(s) + "'");
  return {s.substr(0, space), s.substr(space + 1)};
}

std::vector<MergeRule> read_merges(const JsonNode& model, const Vocab& vocab) {
  const JsonNode merges = model.field("merges");
  std::vector<MergeRule> out;
  out.reserve(merges.array().size());
  std::string joined;
  for (std::size_t i = 0; i < merges.array().size(); ++i) {
    const auto [left, right] = merge_pair(merges, i);
    const auto id = [&](std::string_view token, const char* what) {
      const auto found = vocab.find(token);
      if (!found)
        merges.element(i).fail(std::string(what) + " '" + std::string(token) +
                               "' is not in model.vocab");
      return *found;
    };
    joined.assign(left);
    joined += right;
    out.push_back({id(left, "token"), id(right, "token"), id(joined, "merged token")});
  }
  return out;
}

// The id tokenizers gives a new added token: its vocabulary id, else the next free one.
std::int32_t expected_added_id(const std::string& content, const Vocab& vocab,
                               const std::vector<AddedToken>& so_far) {
  if (const auto id = vocab.find(content)) return *id;
  const auto size = static_cast<std::int32_t>(vocab.size());
  if (so_far.empty()) return size;
  std::int32_t max = 0;
  for (const AddedToken& t : so_far) max = std::max(max, t.id);
  return max >= size ? max + 1 : size;
}

std::vector<AddedToken> read_added_tokens(const JsonNode& root, const Vocab& vocab) {
  std::vector<AddedToken> out;
  const auto list = root.optional_field("added_tokens");
  if (!list) return out;
  for (std::size_t i = 0; i < list->array().size(); ++i) {
    const JsonNode n = list->element(i);
    AddedToken t;
    const std::int64_t id = n.field("id").integer();
    t.content = n.field("content").string();
    t.special = n.boolean_or("special", false);
    t.single_word = n.boolean_or("single_word", false);
    t.lstrip = n.boolean_or("lstrip", false);
    t.rstrip = n.boolean_or("rstrip", false);
    t.normalized = n.boolean_or("normalized", !t.special);
    if (t.content.empty()) n.field("content").fail("an added token cannot be empty");
    for (const AddedToken& other : out)
      if (other.content == t.content) n.fail("token '" + t.content + "' is listed twice");
    const std::int32_t expected = expected_added_id(t.content, vocab, out);
    if (id != expected)
      n.field("id").fail("id " + std::to_string(id) + " of '" + t.content +
                         "' is not the id tokenizers gives it (" + std::to_string(expected) + ")");
    t.id = expected;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

TokenizerParts parse_tokenizer_json(const nlohmann::json& j, const std::string& file) {
  const JsonNode root(j, "", file);
  root.object();
  refuse_unsupported(root);
  const JsonNode model = root.field("model");
  refuse_unsupported_bpe_options(model);
  TokenizerParts parts;
  parts.vocab = read_vocab(model);
  parts.merges = read_merges(model, parts.vocab);
  parts.added = read_added_tokens(root, parts.vocab);
  if (auto pre = root.optional_field("pre_tokenizer"))
    parts.pre_tokenizer = build_pre_tokenizer(*pre);
  return parts;
}

}  // namespace saker
