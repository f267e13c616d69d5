// The paged KV cache's bookkeeping on rank 0: fixed-size blocks, a free list, and reference counts
// (so sequences can later share a prompt prefix). Plain data; no MPI, no kernels. Block ids index
// the same pool on every rank (engine/model/kv_cache.h).
#pragma once

#include <cstdint>
#include <vector>

namespace saker {

using BlockTable = std::vector<std::int32_t>;  // block id of each block-size run of positions

class BlockManager {
 public:
  BlockManager(std::int32_t num_blocks, std::int32_t block_size);

  std::int32_t num_blocks() const { return static_cast<std::int32_t>(refs_.size()); }
  std::int32_t block_size() const { return block_size_; }
  std::int32_t free_blocks() const { return static_cast<std::int32_t>(free_.size()); }
  std::int32_t used_blocks() const { return num_blocks() - free_blocks(); }
  std::int32_t ref_count(std::int32_t block) const;

  // Blocks a sequence of `tokens` positions needs.
  std::int32_t blocks_for(std::int64_t tokens) const;

  // Grows `table` until it covers `tokens` positions. When the pool cannot supply the blocks,
  // returns false and changes nothing (the scheduler then preempts or waits).
  bool ensure(BlockTable& table, std::int64_t tokens);
  // Gives back every block of `table` (a shared block returns to the free list with its last
  // reference) and clears the table.
  void release(BlockTable& table);
  // Makes `dst` start with the first `n` blocks of `src`, shared rather than copied.
  void share_prefix(const BlockTable& src, std::int32_t n, BlockTable& dst);

 private:
  std::int32_t block_size_;
  std::vector<std::int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<std::int32_t> refs_;
};

}  // namespace saker
