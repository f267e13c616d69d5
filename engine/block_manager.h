// The paged KV cache's bookkeeping on rank 0: fixed-size blocks, a free list, reference counts
// (sequences share blocks) and a prefix cache of full blocks. Plain data; no MPI, no kernels.
// Block ids index the same pool on every rank (engine/model/kv_cache.h).
//
// Prefix cache: a full block whose tokens are final is identified by a hash chained over its
// parent block's hash and its own token ids (the first block's parent is a root derived from an
// optional per-request salt). A later sequence whose tokens start with the same chain reuses
// those blocks instead of computing them. A cached block nobody references stays cached until
// the pool needs it; then the one whose last reference was dropped longest ago goes first.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace saker {

using BlockTable = std::vector<std::int32_t>;  // block id of each block-size run of positions

class BlockManager {
 public:
  // Chains a block's hash from its parent's hash and its token ids.
  using BlockHasher =
      std::function<std::uint64_t(std::uint64_t parent, std::span<const std::int32_t> tokens)>;

  // `hasher`: testing only (forced collisions); empty: hash_block.
  BlockManager(std::int32_t num_blocks, std::int32_t block_size, BlockHasher hasher = {});

  std::int32_t num_blocks() const { return static_cast<std::int32_t>(refs_.size()); }
  std::int32_t block_size() const { return block_size_; }
  // Blocks an allocation can get now: the free list plus cached blocks no sequence references
  // (those are evicted, least recently used first, when the free list runs dry).
  std::int32_t free_blocks() const {
    return static_cast<std::int32_t>(free_.size() + evictable_.size());
  }
  std::int32_t used_blocks() const { return num_blocks() - free_blocks(); }
  // Blocks in the prefix cache, referenced or not.
  std::int32_t cached_blocks() const { return static_cast<std::int32_t>(by_hash_.size()); }
  std::int32_t ref_count(std::int32_t block) const;

  // Blocks a sequence of `tokens` positions needs.
  std::int32_t blocks_for(std::int64_t tokens) const;

  // Grows `table` until it covers `tokens` positions. When the pool cannot supply the blocks,
  // returns false and changes nothing (the scheduler then preempts or waits).
  bool ensure(BlockTable& table, std::int64_t tokens);
  // Gives back every block of `table` and clears the table. A block losing its last reference
  // returns to the free list, or, when cached, becomes evictable; the table's tail is released
  // first, so a sequence's later blocks are evicted before its earlier ones.
  void release(BlockTable& table);
  // Makes `dst` start with the first `n` blocks of `src`, shared rather than copied.
  void share_prefix(const BlockTable& src, std::int32_t n, BlockTable& dst);

  // --- prefix cache ---
  // The well-defined 64-bit chain (FNV-1a over the parent hash and the token ids, then a
  // splitmix64 finaliser), the same on every platform.
  static std::uint64_t hash_block(std::uint64_t parent, std::span<const std::int32_t> tokens);
  // The first block's parent: distinct salts give disjoint caches; empty: no salt.
  static std::uint64_t root_hash(std::string_view salt);
  std::uint64_t hash(std::uint64_t parent, std::span<const std::int32_t> tokens) const;

  // Appends to the empty `table` the longest run of cached blocks matching `tokens` block by
  // block (at most `max_blocks`), each referenced once more. `hashes` holds the chain of the
  // first blocks of `tokens` already known and is extended as far as the lookup hashes.
  // Returns the number of blocks reused.
  std::int32_t reuse(std::span<const std::int32_t> tokens, std::uint64_t root,
                     std::int32_t max_blocks, std::vector<std::uint64_t>& hashes,
                     BlockTable& table);
  // Enters `block` (referenced, full, its KV computed from `tokens`) into the cache under `hash`
  // with parent `parent`. Nothing happens if it is cached already or another block holds that
  // hash (two sequences computed the same block: the first one stays the cached one).
  void cache(std::int32_t block, std::uint64_t hash, std::uint64_t parent,
             std::span<const std::int32_t> tokens);

 private:
  struct Cached {  // what a cached block was computed from, to make reuse exact
    bool cached = false;
    std::uint64_t hash = 0, parent = 0;
    std::vector<std::int32_t> tokens;
    std::list<std::int32_t>::iterator lru;  // into evictable_, while unreferenced
  };
  std::int32_t take();  // a block for an allocation: the free list first, else evict

  std::int32_t block_size_;
  BlockHasher hasher_;
  std::vector<std::int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<std::int32_t> refs_;
  std::vector<Cached> meta_;
  std::unordered_map<std::uint64_t, std::int32_t> by_hash_;
  std::list<std::int32_t> evictable_;  // cached and unreferenced; front: released longest ago
};

}  // namespace saker
