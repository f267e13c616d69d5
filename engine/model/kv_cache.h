// KV storage of every layer as a pool of fixed-size blocks. A sequence reaches its tokens through
// a block table, so the paged cache of the rolling batch uses the same layout and kernels.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/model/falcon/config.h"
#include "kernels/backend.h"

namespace saker {

class KvCache {
 public:
  // Holds num_blocks blocks of block_size tokens for kv_heads heads of every layer.
  KvCache(Backend& backend, const FalconConfig& c, std::int64_t kv_heads, std::int64_t num_blocks,
          std::int64_t block_size);

  KvLayer layer(std::int64_t l) const;
  std::int64_t num_blocks() const { return num_blocks_; }
  std::int64_t block_size() const { return block_size_; }
  std::int64_t capacity_tokens() const { return num_blocks_ * block_size_; }
  std::size_t bytes() const;

  // Blocks needed for `tokens` tokens.
  std::int64_t blocks_for(std::int64_t tokens) const {
    return (tokens + block_size_ - 1) / block_size_;
  }

 private:
  std::int64_t kv_heads_, head_dim_, num_blocks_, block_size_;
  std::vector<std::unique_ptr<Buffer>> k_, v_;  // per layer: [slots][kv_heads][head_dim]
};

}  // namespace saker
