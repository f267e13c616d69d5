#include "engine/tokenizer/word_cache.h"

namespace saker {

const std::vector<std::int32_t>* WordCache::Session::find(std::string_view word) const {
  if (!lock_.owns_lock()) return nullptr;
  const auto it = cache_.words_.find(word);
  return it == cache_.words_.end() ? nullptr : &it->second;
}

void WordCache::Session::insert(std::string_view word, const std::int32_t* ids, std::size_t count) {
  if (!lock_.owns_lock() || word.size() > kMaxWordBytes) return;
  if (cache_.words_.size() >= kCapacity) cache_.words_.clear();
  cache_.words_.emplace(word, std::vector<std::int32_t>(ids, ids + count));
}

}  // namespace saker
