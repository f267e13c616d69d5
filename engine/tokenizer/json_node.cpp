#include "engine/tokenizer/json_node.h"

#include "engine/tokenizer/error.h"

namespace saker {
namespace {

// A value as it appears in the file, shortened: a whole vocabulary does not belong in a message.
std::string excerpt(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

std::string JsonNode::child_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

JsonNode JsonNode::field(std::string_view key) const {
  if (auto f = optional_field(key)) return *f;
  if (!value_->is_object()) fail("expected an object, got " + excerpt(*value_));
  fail("missing field '" + std::string(key) + "'");
}

std::optional<JsonNode> JsonNode::optional_field(std::string_view key) const {
  if (!value_->is_object()) fail("expected an object, got " + excerpt(*value_));
  const auto it = value_->find(std::string(key));
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return JsonNode(*it, child_path(key), *file_);
}

JsonNode JsonNode::element(std::size_t index) const {
  return JsonNode(array().at(index), path_ + "[" + std::to_string(index) + "]", *file_);
}

JsonNode JsonNode::member(const std::string& key, const nlohmann::json& value) const {
  return JsonNode(value, path_ + "['" + key + "']", *file_);
}

std::string JsonNode::string() const {
  if (!value_->is_string()) fail("expected a string, got " + excerpt(*value_));
  return value_->get<std::string>();
}

bool JsonNode::boolean() const {
  if (!value_->is_boolean()) fail("expected true or false, got " + excerpt(*value_));
  return value_->get<bool>();
}

bool JsonNode::boolean_or(std::string_view key, bool fallback) const {
  const auto f = optional_field(key);
  return f ? f->boolean() : fallback;
}

std::int64_t JsonNode::integer() const {
  if (!value_->is_number_integer()) fail("expected an integer, got " + excerpt(*value_));
  return value_->get<std::int64_t>();
}

const nlohmann::json& JsonNode::array() const {
  if (!value_->is_array()) fail("expected an array, got " + excerpt(*value_));
  return *value_;
}

const nlohmann::json& JsonNode::object() const {
  if (!value_->is_object()) fail("expected an object, got " + excerpt(*value_));
  return *value_;
}

void JsonNode::fail(const std::string& what) const {
  throw TokenizerError(*file_ + ": " + (path_.empty() ? "" : path_ + ": ") + what);
}

}  // namespace saker
