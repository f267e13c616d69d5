#include "engine/tokenizer/bpe.h"

#include <queue>

#include "engine/tokenizer/utf8.h"

namespace saker {
namespace {

std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

struct Symbol {
  std::int32_t id;
  std::int32_t prev, next;  // neighbours still alive, -1 at the ends
  bool alive;
};

// A possible merge of the symbol at `pos` with its right neighbour.
struct Candidate {
  std::int32_t rank, pos, result;
  // Reversed so that std::priority_queue pops the lowest rank, then the leftmost position.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(Vocab vocab, const std::vector<MergeRule>& merges)
    : vocab_(std::move(vocab)), cache_(std::make_unique<WordCache>()) {
  rules_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const MergeRule& m = merges[rank];
    rules_[pair_key(m.left, m.right)] = {static_cast<std::int32_t>(rank), m.result};
  }
}

const BpeModel::Rule* BpeModel::find_rule(std::int32_t left, std::int32_t right) const {
  const auto it = rules_.find(pair_key(left, right));
  return it == rules_.end() ? nullptr : &it->second;
}

void BpeModel::encode(const Pieces& pieces, std::vector<std::int32_t>& ids) const {
  WordCache::Session cache(*cache_);
  for (const Span& span : pieces.spans) {
    const std::string_view word = pieces.view(span);
    if (const auto* hit = cache.find(word)) {
      ids.insert(ids.end(), hit->begin(), hit->end());
      continue;
    }
    const std::size_t first = ids.size();
    merge_word(word, ids);
    cache.insert(word, ids.data() + first, ids.size() - first);
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<std::int32_t>& ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t n = utf8::char_length(word, i);
    if (const auto id = vocab_.find(word.substr(i, n))) {
      const auto index = static_cast<std::int32_t>(symbols.size());
      symbols.push_back({*id, index - 1, index + 1, true});
    }
    i += n;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate> queue;
  const auto consider = [&](std::int32_t pos) {
    const std::int32_t next = symbols[static_cast<std::size_t>(pos)].next;
    if (next < 0) return;
    if (const Rule* r = find_rule(symbols[static_cast<std::size_t>(pos)].id,
                                  symbols[static_cast<std::size_t>(next)].id))
      queue.push({r->rank, pos, r->result});
  };
  for (std::int32_t pos = 0; pos + 1 < static_cast<std::int32_t>(symbols.size()); ++pos)
    consider(pos);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& s = symbols[static_cast<std::size_t>(top.pos)];
    if (!s.alive || s.next < 0) continue;
    Symbol& right = symbols[static_cast<std::size_t>(s.next)];
    // A stale candidate: one of the two symbols has changed since it was queued.
    const Rule* r = find_rule(s.id, right.id);
    if (!r || r->result != top.result) continue;
    s.id = top.result;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) symbols[static_cast<std::size_t>(s.next)].prev = top.pos;
    if (s.prev >= 0) consider(s.prev);
    consider(top.pos);
  }
  for (std::int32_t pos = 0; pos >= 0; pos = symbols[static_cast<std::size_t>(pos)].next)
    ids.push_back(symbols[static_cast<std::size_t>(pos)].id);
}

}  // namespace saker
