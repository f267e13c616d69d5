// KV storage of every layer as a pool of fixed-size blocks. A sequence reaches its tokens through
// a block table, so the paged cache of the rolling batch uses the same layout and kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"

namespace saker {

// What one rank's pool holds per token: K and V of kv_heads heads of head_dim elements of dtype
// (F32, BF16, F16, I8 or F8E4M3), per layer; the 8-bit forms add an fp32 scale per head vector.
struct KvShape {
  std::int64_t layers = 0;
  std::int64_t kv_heads = 0;  // this rank's
  std::int64_t head_dim = 0;
  DType dtype = DType::F32;
  std::size_t bytes_per_token() const {
    const std::size_t scales = kv_dtype_has_scales(dtype) ? sizeof(float) : 0;
    return static_cast<std::size_t>(2 * layers * kv_heads) *
           (static_cast<std::size_t>(head_dim) * dtype_size(dtype) + scales);
  }
};

class KvCache {
 public:
  // Holds num_blocks blocks of block_size tokens of `shape`.
  KvCache(Backend& backend, const KvShape& shape, std::int64_t num_blocks, std::int64_t block_size);

  KvLayer layer(std::int64_t l) const;
  std::int64_t num_blocks() const { return num_blocks_; }
  std::int64_t block_size() const { return block_size_; }
  std::int64_t capacity_tokens() const { return num_blocks_ * block_size_; }
  std::size_t bytes() const;
  DType dtype() const { return shape_.dtype; }

  // Blocks needed for `tokens` tokens.
  std::int64_t blocks_for(std::int64_t tokens) const {
    return (tokens + block_size_ - 1) / block_size_;
  }

 private:
  KvShape shape_;
  std::int64_t num_blocks_, block_size_;
  std::vector<std::unique_ptr<Buffer>> k_, v_;  // per layer: [slots][kv_heads][head_dim] of dtype
  // Per layer, 8-bit dtypes only: [slots][kv_heads] fp32 scales of K and of V.
  std::vector<std::unique_ptr<Buffer>> k_scale_, v_scale_;
};

}  // namespace saker
