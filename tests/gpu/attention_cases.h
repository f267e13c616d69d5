// Attention-kernel test inputs shared by the CUDA kernel tests: batches of token places over
// shuffled KV blocks, attention shapes, and a backend without fused or dependent launches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace saker::gpu_test {

// Token places for `lengths` sequences, each with its own shuffled blocks of `block_size`:
// sequence i contributes the tokens at positions [starts[i], lengths[i]).
struct Batch {
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<TokenPlace> places;
  std::int64_t blocks = 0;
};

inline Batch make_batch(const std::vector<std::int32_t>& starts,
                        const std::vector<std::int32_t>& lengths, std::int64_t block_size,
                        std::uint32_t seed) {
  Batch b;
  for (const std::int32_t len : lengths) b.blocks += (len + block_size - 1) / block_size;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(b.blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  std::size_t next = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const std::int64_t nb = (lengths[i] + block_size - 1) / block_size;
    b.tables.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(next),
                          ids.begin() + static_cast<std::ptrdiff_t>(next + nb));
    next += static_cast<std::size_t>(nb);
  }
  for (std::size_t i = 0; i < lengths.size(); ++i)
    for (std::int32_t p = starts[i]; p < lengths[i]; ++p)
      b.places.push_back(TokenPlace{p, b.tables[i].data()});
  return b;
}

// The same places pointing at `tables` (a copy of the batch's tables).
inline std::vector<TokenPlace> rebind(const Batch& b,
                                      const std::vector<std::vector<std::int32_t>>& t) {
  std::vector<TokenPlace> out = b.places;
  for (auto& p : out)
    for (std::size_t i = 0; i < b.tables.size(); ++i)
      if (p.block_table == b.tables[i].data()) p.block_table = t[i].data();
  return out;
}

struct Shape {
  std::int64_t heads, kv_heads, head_dim;
  bool alibi;
};

inline AttentionShape shape_of(const Shape& s, const float* slopes) {
  return AttentionShape{s.heads, s.kv_heads, s.head_dim, s.alibi ? slopes : nullptr};
}

// A backend that runs every call as separate kernels, one after another: no programmatic
// dependent launch, no fused kernels (the shared one has both, as by default).
inline cuda::CudaOptions plain_options() {
  cuda::CudaOptions o;
  o.pdl = false;
  o.fuse = false;
  return o;
}

}  // namespace saker::gpu_test
