#include "engine/block_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace saker {
namespace {

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

std::uint64_t fnv_bytes(std::uint64_t h, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    h ^= (v >> (8 * i)) & 0xffU;
    h *= kFnvPrime;
  }
  return h;
}

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

BlockManager::BlockManager(std::int32_t num_blocks, std::int32_t block_size, BlockHasher hasher)
    : block_size_(block_size), hasher_(std::move(hasher)) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("a KV pool needs a positive number of blocks and block size, got " +
                                std::to_string(num_blocks) + " blocks of " +
                                std::to_string(block_size));
  refs_.assign(static_cast<std::size_t>(num_blocks), 0);
  meta_.resize(static_cast<std::size_t>(num_blocks));
  free_.reserve(static_cast<std::size_t>(num_blocks));
  // Block 0 on top: a fresh pool hands out blocks in order.
  for (std::int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::int32_t BlockManager::ref_count(std::int32_t block) const {
  return refs_.at(static_cast<std::size_t>(block));
}

std::int32_t BlockManager::blocks_for(std::int64_t tokens) const {
  return static_cast<std::int32_t>((tokens + block_size_ - 1) / block_size_);
}

std::int32_t BlockManager::take() {
  if (!free_.empty()) {
    const std::int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  const std::int32_t b = evictable_.front();
  evictable_.pop_front();
  Cached& m = meta_[static_cast<std::size_t>(b)];
  by_hash_.erase(m.hash);
  m = Cached{};
  return b;
}

bool BlockManager::ensure(BlockTable& table, std::int64_t tokens) {
  const std::int32_t need = blocks_for(tokens) - static_cast<std::int32_t>(table.size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (std::int32_t i = 0; i < need; ++i) {
    const std::int32_t b = take();
    refs_[static_cast<std::size_t>(b)] = 1;
    table.push_back(b);
  }
  return true;
}

void BlockManager::release(BlockTable& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    const std::int32_t b = *it;
    std::int32_t& r = refs_.at(static_cast<std::size_t>(b));
    if (r <= 0) throw std::logic_error("KV block " + std::to_string(b) + " released while free");
    if (--r > 0) continue;
    Cached& m = meta_[static_cast<std::size_t>(b)];
    if (m.cached)
      m.lru = evictable_.insert(evictable_.end(), b);
    else
      free_.push_back(b);
  }
  table.clear();
}

void BlockManager::share_prefix(const BlockTable& src, std::int32_t n, BlockTable& dst) {
  if (n < 0 || n > static_cast<std::int32_t>(src.size()))
    throw std::out_of_range("cannot share " + std::to_string(n) + " blocks of a table of " +
                            std::to_string(src.size()));
  if (!dst.empty()) throw std::logic_error("a shared prefix must start an empty block table");
  for (std::int32_t i = 0; i < n; ++i) {
    ++refs_.at(static_cast<std::size_t>(src[static_cast<std::size_t>(i)]));
    dst.push_back(src[static_cast<std::size_t>(i)]);
  }
}

std::uint64_t BlockManager::hash_block(std::uint64_t parent, std::span<const std::int32_t> tokens) {
  std::uint64_t h = fnv_bytes(kFnvOffset, parent, 8);
  for (const std::int32_t t : tokens) h = fnv_bytes(h, static_cast<std::uint32_t>(t), 4);
  return splitmix(h);
}

std::uint64_t BlockManager::root_hash(std::string_view salt) {
  if (salt.empty()) return 0;
  std::uint64_t h = kFnvOffset;
  for (const char c : salt) h = fnv_bytes(h, static_cast<unsigned char>(c), 1);
  // Never 0, the unsalted root.
  return splitmix(h) | 1;
}

std::uint64_t BlockManager::hash(std::uint64_t parent, std::span<const std::int32_t> tokens) const {
  return hasher_ ? hasher_(parent, tokens) : hash_block(parent, tokens);
}

std::int32_t BlockManager::reuse(std::span<const std::int32_t> tokens, std::uint64_t root,
                                 std::int32_t max_blocks, std::vector<std::uint64_t>& hashes,
                                 BlockTable& table) {
  if (!table.empty()) throw std::logic_error("reused blocks must start an empty block table");
  const auto bs = static_cast<std::size_t>(block_size_);
  const std::int32_t full = static_cast<std::int32_t>(tokens.size() / bs);
  const std::int32_t limit = std::min(full, max_blocks);
  std::uint64_t parent = root;
  for (std::int32_t i = 0; i < limit; ++i) {
    const auto chunk = tokens.subspan(static_cast<std::size_t>(i) * bs, bs);
    if (static_cast<std::size_t>(i) == hashes.size()) hashes.push_back(hash(parent, chunk));
    const std::uint64_t h = hashes[static_cast<std::size_t>(i)];
    const auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const std::int32_t b = it->second;
    Cached& m = meta_[static_cast<std::size_t>(b)];
    // A hash collision must not hand out another prefix's KV: the block's parent and tokens must
    // be the ones asked for.
    if (m.parent != parent ||
        !std::equal(chunk.begin(), chunk.end(), m.tokens.begin(), m.tokens.end()))
      break;
    if (refs_[static_cast<std::size_t>(b)]++ == 0) evictable_.erase(m.lru);
    table.push_back(b);
    parent = h;
  }
  return static_cast<std::int32_t>(table.size());
}

void BlockManager::cache(std::int32_t block, std::uint64_t hash, std::uint64_t parent,
                         std::span<const std::int32_t> tokens) {
  if (static_cast<std::int32_t>(tokens.size()) != block_size_)
    throw std::invalid_argument("only a full block can be cached");
  Cached& m = meta_.at(static_cast<std::size_t>(block));
  if (refs_[static_cast<std::size_t>(block)] <= 0)
    throw std::logic_error("KV block " + std::to_string(block) + " cached while free");
  if (m.cached || by_hash_.count(hash)) return;
  m.cached = true;
  m.hash = hash;
  m.parent = parent;
  m.tokens.assign(tokens.begin(), tokens.end());
  by_hash_.emplace(hash, block);
}

}  // namespace saker
