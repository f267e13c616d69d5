// Element-wise and row-wise CPU kernels. Each works on a range of rows so the backend can split
// the work across threads; each row is computed the same way whatever the range.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

namespace saker::cpu {

void layer_norm_rows(const float* x, std::int64_t dim, const float* gamma, const float* beta,
                     float eps, float* y, std::int64_t row_begin, std::int64_t row_end);

// x[i] = gelu(x[i]) (exact erf form, vm::gelu) for i in [begin, end); every ISA gives the same
// bits. The form without `isa` runs the best this processor has.
void gelu_range(float* x, std::int64_t begin, std::int64_t end, Isa isa);
void gelu_range(float* x, std::int64_t begin, std::int64_t end);

void embedding_rows(std::span<const std::int32_t> ids, const Weight& table, std::int64_t first_id,
                    float* y, std::int64_t row_begin, std::int64_t row_end);

// Offsets (in floats) within one fused qkv row (docs/falcon.md section 3).
struct QkvLayout {
  std::int64_t head_dim, group_size, group_stride;
  explicit QkvLayout(const AttentionShape& s)
      : head_dim(s.head_dim),
        group_size(s.heads / s.kv_heads),
        group_stride((s.heads / s.kv_heads + 2) * s.head_dim) {}
  std::int64_t q(std::int64_t head) const {
    return (head / group_size) * group_stride + (head % group_size) * head_dim;
  }
  std::int64_t k(std::int64_t group) const { return group * group_stride + group_size * head_dim; }
  std::int64_t v(std::int64_t group) const { return k(group) + head_dim; }
};

inline std::int64_t kv_slot(const TokenPlace& p, std::int64_t pos, std::int64_t block_size) {
  return static_cast<std::int64_t>(p.block_table[pos / block_size]) * block_size + pos % block_size;
}

void rotary_rows(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                 const float* cos_sin, std::int64_t row_begin, std::int64_t row_end);

void kv_write_rows(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                   const KvLayer& kv, std::int64_t row_begin, std::int64_t row_end);

}  // namespace saker::cpu
