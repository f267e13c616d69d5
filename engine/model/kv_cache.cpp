#include "engine/model/kv_cache.h"

#include <stdexcept>
#include <string>

namespace saker {

KvCache::KvCache(Backend& backend, const KvShape& shape, std::int64_t num_blocks,
                 std::int64_t block_size)
    : shape_(shape), num_blocks_(num_blocks), block_size_(block_size) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache needs a positive number of blocks and block size, got " +
                                std::to_string(num_blocks) + " x " + std::to_string(block_size));
  if (!is_kv_dtype(shape.dtype))
    throw std::invalid_argument("a KV cache holds F32, BF16, F16, I8 or F8_E4M3 elements, not " +
                                std::string(dtype_name(shape.dtype)));
  // Buffers count floats: 16- and 8-bit elements take a half or a quarter as many, rounded up.
  const auto elements =
      static_cast<std::size_t>(num_blocks * block_size * shape.kv_heads * shape.head_dim);
  const std::size_t floats =
      (elements * dtype_size(shape.dtype) + sizeof(float) - 1) / sizeof(float);
  for (std::int64_t l = 0; l < shape.layers; ++l) {
    k_.push_back(backend.allocate(floats));
    v_.push_back(backend.allocate(floats));
    if (kv_dtype_has_scales(shape.dtype)) {
      const auto vectors = static_cast<std::size_t>(num_blocks * block_size * shape.kv_heads);
      k_scale_.push_back(backend.allocate(vectors));
      v_scale_.push_back(backend.allocate(vectors));
    }
  }
}

KvLayer KvCache::layer(std::int64_t l) const {
  KvLayer kv{k_[l]->data(),   v_[l]->data(), shape_.kv_heads,
             shape_.head_dim, block_size_,   shape_.dtype};
  if (!k_scale_.empty()) {
    kv.k_scale = k_scale_[l]->data();
    kv.v_scale = v_scale_[l]->data();
  }
  return kv;
}

std::size_t KvCache::bytes() const {
  return static_cast<std::size_t>(num_blocks_ * block_size_) * shape_.bytes_per_token();
}

}  // namespace saker
