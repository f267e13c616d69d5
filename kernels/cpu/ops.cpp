#include "kernels/cpu/ops.h"

#include "kernels/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/vec_math.h"

namespace saker::cpu {

void layer_norm_rows(const float* x, std::int64_t dim, const float* gamma, const float* beta,
                     float eps, float* y, std::int64_t row_begin, std::int64_t row_end) {
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    // Moments in double: exact enough that the order of the sum does not matter.
    double sum = 0.0;
    for (std::int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(dim);
    double sq = 0.0;
    for (std::int64_t i = 0; i < dim; ++i) {
      const double d = xr[i] - mean;
      sq += d * d;
    }
    const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(dim) + eps));
    const float m = static_cast<float>(mean);
    for (std::int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - m) * rstd * gamma[i] + beta[i];
  }
}

namespace {

SAKER_TARGET_AVX512 void gelu_avx512(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, vm::gelu(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const auto m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(x + i, m, vm::gelu(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

SAKER_TARGET_AVX2 void gelu_avx2(float* x, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, vm::gelu(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(x + i, m, vm::gelu(_mm256_maskload_ps(x + i, m)));
  }
}

}  // namespace

void gelu_range(float* x, std::int64_t begin, std::int64_t end, Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return gelu_avx512(x + begin, end - begin);
    case Isa::kAvx2:
      return gelu_avx2(x + begin, end - begin);
    case Isa::kPortable:
      for (std::int64_t i = begin; i < end; ++i) x[i] = vm::gelu(x[i]);
      return;
  }
}

void gelu_range(float* x, std::int64_t begin, std::int64_t end) {
  static const Isa isa = detect_isa();
  gelu_range(x, begin, end, isa);
}

void embedding_rows(std::span<const std::int32_t> ids, const Weight& table, std::int64_t first_id,
                    float* y, std::int64_t row_begin, std::int64_t row_end) {
  const std::int64_t H = table.cols;
  for (std::int64_t t = row_begin; t < row_end; ++t) {
    float* out = y + t * H;
    const std::int64_t id = ids[t] - first_id;
    if (id < 0 || id >= table.rows) {
      std::fill_n(out, H, 0.0f);
      continue;
    }
    if (table.layout != WeightLayout::kRowMajor || table.scales) {
      for (std::int64_t i = 0; i < H; ++i) out[i] = weight_element(table, id, i);
      continue;
    }
    switch (table.dtype) {
      case DType::F32:
        std::memcpy(out, static_cast<const float*>(table.data) + id * H, H * sizeof(float));
        break;
      case DType::BF16: {
        const auto* row = static_cast<const std::uint16_t*>(table.data) + id * H;
        for (std::int64_t i = 0; i < H; ++i) out[i] = bf16_to_f32(row[i]);
        break;
      }
      case DType::F16: {
        const auto* row = static_cast<const std::uint16_t*>(table.data) + id * H;
        for (std::int64_t i = 0; i < H; ++i) out[i] = f16_to_f32(row[i]);
        break;
      }
      case DType::I8:
        throw std::logic_error("an int8 table needs its scales");
      case DType::F8E4M3:
        throw std::logic_error("fp8 is a KV cache's form only, never a table's");
    }
  }
}

namespace {
// GPT-NeoX "rotate half": the two halves of the head rotate as (re, im) pairs.
void rotate(float* head, const float* cs, std::int64_t half) {
  for (std::int64_t d = 0; d < half; ++d) {
    const float c = cs[2 * d], s = cs[2 * d + 1];
    const float a = head[d], b = head[d + half];
    head[d] = a * c - b * s;
    head[d + half] = b * c + a * s;
  }
}
}  // namespace

void rotary_rows(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                 const float* cos_sin, std::int64_t row_begin, std::int64_t row_end) {
  const QkvLayout L(s);
  const std::int64_t half = s.head_dim / 2;
  const std::int64_t stride = s.kv_heads * L.group_stride;
  for (std::int64_t t = row_begin; t < row_end; ++t) {
    float* row = qkv + t * stride;
    const float* cs = cos_sin + static_cast<std::int64_t>(places[t].pos) * half * 2;
    for (std::int64_t h = 0; h < s.heads; ++h) rotate(row + L.q(h), cs, half);
    for (std::int64_t g = 0; g < s.kv_heads; ++g) rotate(row + L.k(g), cs, half);
  }
}

namespace {
// Writes one head's fp32 row as the cache's element type. The rounding is scalar and the same on
// every ISA (it is a sliver of a step's work), so every path stores the same bits. An 8-bit row
// also writes its scale: one per head vector per token, so a token's codes depend on nothing but
// its own keys and values (batch invariance, prefix reuse).
void store_head(const float* src, std::int64_t n, DType dtype, void* base, float* scales,
                std::int64_t off, std::int64_t vector) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(static_cast<float*>(base) + off, src,
                  static_cast<std::size_t>(n) * sizeof(float));
      return;
    case DType::BF16: {
      auto* dst = static_cast<std::uint16_t*>(base) + off;
      for (std::int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F16: {
      auto* dst = static_cast<std::uint16_t*>(base) + off;
      for (std::int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::I8:
    case DType::F8E4M3: {
      float amax = 0.0f;
      for (std::int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(src[i]));
      // An all-zero vector keeps scale 0 and codes 0 (widened: 0 * 0), with no division by 0.
      const float scale = amax / kv_code_max(dtype);
      scales[vector] = scale;
      auto* dst = static_cast<std::uint8_t*>(base) + off;
      for (std::int64_t i = 0; i < n; ++i) {
        const float x = scale > 0.0f ? src[i] / scale : 0.0f;
        if (dtype == DType::F8E4M3) {
          dst[i] = f32_to_e4m3(x);
        } else {
          // nearbyint rounds to nearest even (the default rounding mode); the clamp catches a
          // rounding overshoot of the largest element past 127. int8 has no NaN: it stores 0
          // (a converted NaN would be undefined behaviour).
          const float r = std::isnan(x) ? 0.0f : std::clamp(std::nearbyint(x), -127.0f, 127.0f);
          dst[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(r));
        }
      }
      return;
    }
  }
  throw std::invalid_argument("kv_write: a KV cache holds F32, BF16, F16, I8 or F8_E4M3 elements");
}
}  // namespace

void kv_write_rows(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                   const KvLayer& kv, std::int64_t row_begin, std::int64_t row_end) {
  const QkvLayout L(s);
  const std::int64_t stride = s.kv_heads * L.group_stride;
  for (std::int64_t t = row_begin; t < row_end; ++t) {
    const float* row = qkv + t * stride;
    const std::int64_t slot = kv_slot(places[t], places[t].pos, kv.block_size);
    for (std::int64_t g = 0; g < s.kv_heads; ++g) {
      const std::int64_t vector = slot * kv.kv_heads + g;
      const std::int64_t off = vector * kv.head_dim;
      store_head(row + L.k(g), s.head_dim, kv.dtype, kv.k, kv.k_scale, off, vector);
      store_head(row + L.v(g), s.head_dim, kv.dtype, kv.v, kv.v_scale, off, vector);
    }
  }
}

}  // namespace saker::cpu
