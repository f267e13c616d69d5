// A JSON value with its path in the file, so that every error names the file and the field:
// "tokenizer.json: pre_tokenizer.pretokenizers[3]: unsupported type 'Metaspace'".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace saker {

class JsonNode {
 public:
  JsonNode(const nlohmann::json& value, std::string path, const std::string& file)
      : value_(&value), path_(std::move(path)), file_(&file) {}

  const nlohmann::json& value() const { return *value_; }
  const std::string& path() const { return path_; }

  // A required field; null counts as missing.
  JsonNode field(std::string_view key) const;
  // A field that may be absent or null.
  std::optional<JsonNode> optional_field(std::string_view key) const;
  JsonNode element(std::size_t index) const;
  JsonNode member(const std::string& key, const nlohmann::json& value) const;

  std::string string() const;
  bool boolean() const;
  bool boolean_or(std::string_view key, bool fallback) const;  // an optional boolean field
  std::int64_t integer() const;
  const nlohmann::json& array() const;
  const nlohmann::json& object() const;

  [[noreturn]] void fail(const std::string& what) const;

 private:
  std::string child_path(std::string_view key) const;

  const nlohmann::json* value_;
  std::string path_;
  const std::string* file_;
};

}  // namespace saker
