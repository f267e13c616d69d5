// Token strings and their ids, both ways. Ids may have holes; each id has at most one token.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace saker {

// Hash for heterogeneous (string_view) lookup in string-keyed unordered maps.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Vocab {
 public:
  // Returns an empty string on success, else why the entry cannot be added (a duplicate id or
  // token, a negative id), for the loader to report with the file and JSON path.
  std::string add(std::string token, std::int32_t id);
  void reserve(std::size_t n) { ids_.reserve(n); }

  std::optional<std::int32_t> find(std::string_view token) const {
    const auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  // The token of `id`, or nullptr when no token has that id.
  const std::string* token(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size() || !present_[id]) return nullptr;
    return &tokens_[static_cast<std::size_t>(id)];
  }
  std::size_t size() const { return ids_.size(); }
  std::int32_t id_limit() const { return static_cast<std::int32_t>(tokens_.size()); }

 private:
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids_;
  std::vector<std::string> tokens_;  // by id
  std::vector<bool> present_;
};

}  // namespace saker
