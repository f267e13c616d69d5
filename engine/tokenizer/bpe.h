// The BPE model: a piece's characters become vocabulary symbols (characters missing from the
// vocabulary are dropped: there is no unk token), then adjacent symbols merge, lowest merge rank
// first and leftmost on ties, exactly as tokenizers' Word::merge_all does.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/vocab.h"
#include "engine/tokenizer/word_cache.h"

namespace saker {

// "left right" → result, all as ids; its rank is its position in the merge list.
struct MergeRule {
  std::int32_t left, right, result;
};

class BpeModel {
 public:
  // A pair listed twice keeps its last rank, as the HashMap tokenizers builds from the list does.
  BpeModel(Vocab vocab, const std::vector<MergeRule>& merges);

  const Vocab& vocab() const { return vocab_; }

  // Appends the ids of every piece, in order.
  void encode(const Pieces& pieces, std::vector<std::int32_t>& ids) const;

  // Appends the ids of one piece, without the cache.
  void merge_word(std::string_view word, std::vector<std::int32_t>& ids) const;

 private:
  struct Rule {
    std::int32_t rank, result;
  };
  const Rule* find_rule(std::int32_t left, std::int32_t right) const;

  Vocab vocab_;
  std::unordered_map<std::uint64_t, Rule> rules_;
  std::unique_ptr<WordCache> cache_;  // shared by const encodes; it locks itself
};

}  // namespace saker
