// A bounded cache of BPE results per pre-tokenized piece: natural text repeats its words, and a
// cache hit replaces the whole merge loop with one hash lookup.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace saker {

class WordCache {
 public:
  static constexpr std::size_t kCapacity = 16384;  // words; the cache is emptied when full
  static constexpr std::size_t kMaxWordBytes = 128;

  // A locked view for one encode call. When another thread holds the cache the view is empty
  // and the call works without it, rather than waiting.
  class Session {
   public:
    explicit Session(WordCache& cache) : cache_(cache), lock_(cache.mutex_, std::try_to_lock) {}
    const std::vector<std::int32_t>* find(std::string_view word) const;
    void insert(std::string_view word, const std::int32_t* ids, std::size_t count);

   private:
    WordCache& cache_;
    std::unique_lock<std::mutex> lock_;
  };

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> words_;
};

}  // namespace saker
