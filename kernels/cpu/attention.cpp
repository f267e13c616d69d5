#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace saker::cpu {
namespace {

constexpr std::int64_t kLanes = 16;
// Keys whose rows are requested ahead of use: about the memory latency's worth of work (measured
// best on Zen 4 at the ~1B model's shape; 16 and 64 do worse with keys from DRAM).
constexpr std::int64_t kPrefetchKeys = 32;

std::int64_t round_up16(std::int64_t n) {
  return (n + kLanes - 1) / kLanes * kLanes;
}

// Slots of positions 0, 1, 2, ... of one sequence, without a division per position.
class SlotWalker {
 public:
  SlotWalker(const TokenPlace& p, std::int64_t block_size)
      : table_(p.block_table), block_size_(block_size) {}
  std::int64_t next() {
    const std::int64_t slot = static_cast<std::int64_t>(table_[block_]) * block_size_ + offset_;
    if (++offset_ == block_size_) {
      offset_ = 0;
      ++block_;
    }
    return slot;
  }

 private:
  const std::int32_t* table_;
  std::int64_t block_size_, block_ = 0, offset_ = 0;
};

// The cache's 16- and 8-bit element types (KvLayer::dtype), as distinct types so that each kernel
// is instantiated per element type; float is the fp32 cache.
struct Bf16 {
  std::uint16_t bits;
};
struct F16 {
  std::uint16_t bits;
};
struct I8q {  // int8 code; stands for code * the vector's scale
  std::int8_t code;
};
struct F8q {  // fp8 e4m3 code; stands for e4m3_to_f32(code) * the vector's scale
  std::uint8_t code;
};

template <typename E>
constexpr bool kScaled = std::is_same_v<E, I8q> || std::is_same_v<E, F8q>;

// The scale of the head vector in `slot` (scales points at the group's scale in slot 0, a slot's
// scales sit `stride` apart); 1 (unused) for the unscaled types.
template <typename E>
inline float row_scale(const float* scales, std::int64_t slot, std::int64_t stride) {
  if constexpr (kScaled<E>)
    return scales[slot * stride];
  else
    return 1.0f;
}

// Widening 16-bit elements is exact; an 8-bit code widens exactly and is multiplied by its scale,
// one fp32 rounding that every ISA does alike. After it the arithmetic is the fp32 cache's, in the
// same order.
inline float widen(float x, float) {
  return x;
}
inline float widen(Bf16 x, float) {
  return bf16_to_f32(x.bits);
}
inline float widen(F16 x, float) {
  return f16_to_f32(x.bits);
}
inline float widen(I8q x, float scale) {
  return static_cast<float>(x.code) * scale;
}
inline float widen(F8q x, float scale) {
  return e4m3_to_f32(x.code) * scale;
}

// Requests the cache lines of [p, p + bytes): into L1, or into L2 for later. Keys and values sit
// a row every kv_heads * head_dim elements in shuffled blocks, which the hardware prefetchers do
// not follow.
inline void prefetch_row(const char* p, std::int64_t bytes, bool to_l1) {
  const auto first = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{63};
  const auto last = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(bytes) - 1;
  for (std::uintptr_t line = first; line <= last; line += 64) {
    if (to_l1)
      _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
    else
      _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
  }
}

// Keys ahead of the dot products: their key rows into L1, their value rows into L2 for the
// p.V pass.
class KvPrefetcher {
 public:
  // row_stride and row_bytes in bytes.
  KvPrefetcher(const TokenPlace& p, std::int64_t block_size, const void* k, const void* v,
               std::int64_t row_stride, std::int64_t row_bytes, std::int64_t n_keys)
      : walk_(p, block_size),
        k_(static_cast<const char*>(k)),
        v_(static_cast<const char*>(v)),
        stride_(row_stride),
        bytes_(row_bytes),
        left_(n_keys) {}
  void next(std::int64_t keys) {
    for (; keys > 0 && left_ > 0; --keys, --left_) {
      const std::int64_t off = walk_.next() * stride_;
      prefetch_row(k_ + off, bytes_, true);
      if (v_) prefetch_row(v_ + off, bytes_, false);
    }
  }

 private:
  SlotWalker walk_;
  const char *k_, *v_;
  std::int64_t stride_, bytes_, left_;
};

// One call's work: the heads of one KV group for one token.
struct Job {
  int heads;
  std::int64_t hd, n_keys;
  const float* q[kAttentionMaxHeads];
  float* p[kAttentionMaxHeads];    // per head: dots, then scores, then probabilities
  float* out[kAttentionMaxHeads];  // per head: hd floats
  float slope[kAttentionMaxHeads];
  bool alibi;
  float scale;
  const void*
      k;  // the group's key in slot 0 (elements of the cache's type); slot s at k + s * row_stride
  const void* v;
  std::int64_t row_stride;  // elements
  // 8-bit caches: the group's K and V scales in slot 0; slot s's at + s * scale_stride.
  const float* k_scale;
  const float* v_scale;
  std::int64_t scale_stride;
  const TokenPlace* place;
  std::int64_t block_size;
};

// --- portable: the vector paths' arithmetic, lane by lane ---------------------------------------

float tree_sum(float* a) {  // a[16], consumed
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) a[l] = a[l] + a[l + w];
  return a[0];
}

float tree_max(float* a) {
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) a[l] = vm::max_ps(a[l], a[l + w]);
  return a[0];
}

template <typename E>
void dots_portable(const Job& J) {
  SlotWalker walk(*J.place, J.block_size);
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    const std::int64_t slot = walk.next();
    const E* k = static_cast<const E*>(J.k) + slot * J.row_stride;
    const float ks = row_scale<E>(J.k_scale, slot, J.scale_stride);
    for (int h = 0; h < J.heads; ++h) {
      float acc[kLanes] = {};
      for (std::int64_t c = 0; c < J.hd; c += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const std::int64_t d = c + l;
          const bool in = d < J.hd;
          acc[l] = std::fma(in ? J.q[h][d] : 0.0f, in ? widen(k[d], ks) : 0.0f, acc[l]);
        }
      J.p[h][j] = tree_sum(acc);
    }
  }
}

void softmax_portable(const Job& J, int h) {
  float* s = J.p[h];
  float m[kLanes];
  std::fill_n(m, kLanes, -std::numeric_limits<float>::infinity());
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    float x = s[j] * J.scale;
    // transformers adds bf16(bf16(slope) * key position) / sqrt(head_dim) to the scaled scores.
    if (J.alibi) x = x + round_to_bf16(J.slope[h] * static_cast<float>(j)) * J.scale;
    s[j] = x;
    m[j % kLanes] = vm::max_ps(m[j % kLanes], x);
  }
  const float max = tree_max(m);
  float den[kLanes] = {};
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    s[j] = vm::exp_nonpos(s[j] - max);
    den[j % kLanes] = den[j % kLanes] + s[j];
  }
  const float inv = 1.0f / tree_sum(den);
  for (std::int64_t j = 0; j < J.n_keys; ++j) s[j] = s[j] * inv;
}

template <typename E>
void pv_portable(const Job& J) {
  for (int h = 0; h < J.heads; ++h) std::fill_n(J.out[h], J.hd, 0.0f);
  SlotWalker walk(*J.place, J.block_size);
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    const std::int64_t slot = walk.next();
    const E* v = static_cast<const E*>(J.v) + slot * J.row_stride;
    const float vs = row_scale<E>(J.v_scale, slot, J.scale_stride);
    for (int h = 0; h < J.heads; ++h)
      for (std::int64_t d = 0; d < J.hd; ++d)
        J.out[h][d] = std::fma(J.p[h][j], widen(v[d], vs), J.out[h][d]);
  }
}

template <typename E>
void run_portable(const Job& J) {
  dots_portable<E>(J);
  for (int h = 0; h < J.heads; ++h) softmax_portable(J, h);
  pv_portable<E>(J);
}

// --- AVX2: 16 lanes as two vectors of 8 ------------------------------------------------------

// Lanes [0, count) set.
SAKER_TARGET_AVX2 inline __m256i mask8(std::int64_t count) {
  return _mm256_cmpgt_epi32(
      _mm256_set1_epi32(static_cast<int>(std::clamp<std::int64_t>(count, 0, 8))),
      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The tree's steps 8->4->2->1 of one vector's lanes.
SAKER_TARGET_AVX2 inline float tree_sum8(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

SAKER_TARGET_AVX2 inline float tree_max8(__m256 v) {
  const __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 p = _mm_max_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_max_ss(p, _mm_movehdup_ps(p)));
}

SAKER_TARGET_AVX2 inline __m256 round_to_bf16(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i top = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), top);
  const __m256i quiet = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x400000)), top);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(rounded, quiet, nan));
}

// e4m3 codes (one per 32-bit lane) to fp32, exactly as e4m3_to_f32: normals by moving the bits
// into place, subnormals as an integer times 2^-9 (no fp32 denormals, so no DAZ dependence).
SAKER_TARGET_AVX2 inline __m256 e4m3_to_f32(__m256i c) {
  const __m256i mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24);
  const __m256 normal = _mm256_castsi256_ps(
      _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
  const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
  const __m256 is_sub = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
  const __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
  __m256 r = _mm256_blendv_ps(normal, sub, is_sub);
  r = _mm256_blendv_ps(r, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)), nan);
  return _mm256_or_ps(r, _mm256_castsi256_ps(sign));
}

// 8 elements widened to fp32 (8-bit codes times `scale`, the row's scale in every lane).
SAKER_TARGET_AVX2 inline __m256 load8(const float* p, __m256) {
  return _mm256_loadu_ps(p);
}
SAKER_TARGET_AVX2 inline __m256 load8(const Bf16* p, __m256) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
SAKER_TARGET_AVX2 inline __m256 load8(const F16* p, __m256) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SAKER_TARGET_AVX2 inline __m256 load8(const I8q* p, __m256 scale) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), scale);
}
SAKER_TARGET_AVX2 inline __m256 load8(const F8q* p, __m256 scale) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_mul_ps(e4m3_to_f32(_mm256_cvtepu8_epi32(b)), scale);
}
// Lanes [0, count) of p (count may be <= 0 or > 8), the others zero: the masked load for fp32;
// AVX2 has no 16- or 8-bit masked load, so a zero-padded copy for the narrow elements. Padding
// lanes of 8-bit rows are masked after the scale, so they are 0 whatever the scale.
template <typename E>
SAKER_TARGET_AVX2 inline __m256 load8_first(const E* p, std::int64_t count, __m256 scale) {
  if constexpr (std::is_same_v<E, float>) {
    return _mm256_maskload_ps(p, mask8(count));
  } else {
    E tmp[8] = {};
    std::memcpy(tmp, p,
                static_cast<std::size_t>(std::clamp<std::int64_t>(count, 0, 8)) * sizeof(E));
    if constexpr (kScaled<E>)
      return _mm256_and_ps(load8(tmp, scale), _mm256_castsi256_ps(mask8(count)));
    else
      return load8(tmp, scale);
  }
}

// Dots of 4 keys with one query; tree steps shared across the 4 by transposing as it goes.
template <typename E>
SAKER_TARGET_AVX2 void dots4_avx2(const float* q, const E* const* rows, const float* scales,
                                  std::int64_t hd, float* dst) {
  __m256 lo[4], hi[4], sc[4];
  for (int i = 0; i < 4; ++i) {
    lo[i] = hi[i] = _mm256_setzero_ps();
    sc[i] = _mm256_set1_ps(scales[i]);
  }
  std::int64_t c = 0;
  for (; c + kLanes <= hd; c += kLanes) {
    const __m256 q0 = _mm256_loadu_ps(q + c), q1 = _mm256_loadu_ps(q + c + 8);
    for (int i = 0; i < 4; ++i) {
      lo[i] = _mm256_fmadd_ps(q0, load8(rows[i] + c, sc[i]), lo[i]);
      hi[i] = _mm256_fmadd_ps(q1, load8(rows[i] + c + 8, sc[i]), hi[i]);
    }
  }
  if (c < hd) {
    const __m256i m0 = mask8(hd - c), m1 = mask8(hd - c - 8);
    const __m256 q0 = _mm256_maskload_ps(q + c, m0), q1 = _mm256_maskload_ps(q + c + 8, m1);
    for (int i = 0; i < 4; ++i) {
      lo[i] = _mm256_fmadd_ps(q0, load8_first(rows[i] + c, hd - c, sc[i]), lo[i]);
      hi[i] = _mm256_fmadd_ps(q1, load8_first(rows[i] + c + 8, hd - c - 8, sc[i]), hi[i]);
    }
  }
  __m256 s8[4];
  for (int i = 0; i < 4; ++i) s8[i] = _mm256_add_ps(lo[i], hi[i]);  // 16 -> 8
  // 8 -> 4: [key 0 | key 1] and [key 2 | key 3], four lanes each.
  const __m256 a = _mm256_add_ps(_mm256_permute2f128_ps(s8[0], s8[1], 0x20),
                                 _mm256_permute2f128_ps(s8[0], s8[1], 0x31));
  const __m256 b = _mm256_add_ps(_mm256_permute2f128_ps(s8[2], s8[3], 0x20),
                                 _mm256_permute2f128_ps(s8[2], s8[3], 0x31));
  // 4 -> 2: [k0 k0 k2 k2 | k1 k1 k3 k3].
  const __m256 p = _mm256_add_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  // 2 -> 1: [k0 k2 k0 k2 | k1 k3 k1 k3].
  const __m256 z = _mm256_add_ps(_mm256_shuffle_ps(p, p, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(p, p, _MM_SHUFFLE(3, 1, 3, 1)));
  _mm_storeu_ps(dst, _mm_unpacklo_ps(_mm256_castps256_ps128(z), _mm256_extractf128_ps(z, 1)));
}

template <typename E>
SAKER_TARGET_AVX2 void dots_avx2(const Job& J) {
  SlotWalker walk(*J.place, J.block_size);
  KvPrefetcher ahead(*J.place, J.block_size, J.k, J.v, J.row_stride * sizeof(E), J.hd * sizeof(E),
                     J.n_keys);
  ahead.next(kPrefetchKeys);
  const E* const k = static_cast<const E*>(J.k);
  const E* rows[4];
  float scales[4];
  for (std::int64_t j0 = 0; j0 < J.n_keys; j0 += 4) {
    ahead.next(4);
    const std::int64_t count = std::min<std::int64_t>(4, J.n_keys - j0);
    for (std::int64_t i = 0; i < 4; ++i) {
      if (i < count) {
        const std::int64_t slot = walk.next();
        rows[i] = k + slot * J.row_stride;
        scales[i] = row_scale<E>(J.k_scale, slot, J.scale_stride);
      } else {
        rows[i] = rows[count - 1];
        scales[i] = scales[count - 1];
      }
    }
    for (int h = 0; h < J.heads; ++h) {
      float d[4];
      dots4_avx2(J.q[h], rows, scales, J.hd, d);
      std::copy_n(d, count, J.p[h] + j0);
    }
  }
}

SAKER_TARGET_AVX2 void softmax_avx2(const Job& J, int h) {
  float* s = J.p[h];
  const std::int64_t n = J.n_keys;
  const __m256 scale = _mm256_set1_ps(J.scale), slope = _mm256_set1_ps(J.slope[h]);
  const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 lowest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m[2] = {lowest, lowest};
  for (std::int64_t j = 0; j < n; j += 8) {
    const __m256i in = mask8(n - j);
    __m256 x = _mm256_mul_ps(_mm256_maskload_ps(s + j, in), scale);
    if (J.alibi) {
      const __m256 pos = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(j)), iota);
      x = _mm256_add_ps(x, _mm256_mul_ps(round_to_bf16(_mm256_mul_ps(slope, pos)), scale));
    }
    _mm256_maskstore_ps(s + j, in, x);
    __m256& acc = m[(j / 8) % 2];  // lanes j mod 16
    acc = _mm256_blendv_ps(acc, _mm256_max_ps(acc, x), _mm256_castsi256_ps(in));
  }
  const __m256 max = _mm256_set1_ps(tree_max8(_mm256_max_ps(m[0], m[1])));
  __m256 den[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (std::int64_t j = 0; j < n; j += 8) {
    const __m256i in = mask8(n - j);
    const __m256 e = vm::exp_nonpos(_mm256_sub_ps(_mm256_maskload_ps(s + j, in), max));
    _mm256_maskstore_ps(s + j, in, e);
    __m256& acc = den[(j / 8) % 2];
    acc = _mm256_blendv_ps(acc, _mm256_add_ps(acc, e), _mm256_castsi256_ps(in));
  }
  const __m256 inv = _mm256_set1_ps(1.0f / tree_sum8(_mm256_add_ps(den[0], den[1])));
  for (std::int64_t j = 0; j < n; j += 8) {
    const __m256i in = mask8(n - j);
    _mm256_maskstore_ps(s + j, in, _mm256_mul_ps(_mm256_maskload_ps(s + j, in), inv));
  }
}

// out[h0 + h][d0, d0 + 8 * NV) for NH heads; `last` masks the last vector's lanes in hd.
template <typename E, int NH, int NV>
SAKER_TARGET_AVX2 void pv_tile_avx2(const Job& J, int h0, std::int64_t d0, __m256i last,
                                    std::int64_t last_n) {
  __m256 acc[NH][NV];
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[h][c] = _mm256_setzero_ps();
  SlotWalker walk(*J.place, J.block_size);
  const E* const vbase = static_cast<const E*>(J.v) + d0;
  KvPrefetcher ahead(*J.place, J.block_size, vbase, nullptr, J.row_stride * sizeof(E),
                     std::min<std::int64_t>(J.hd - d0, NV * 8) * sizeof(E), J.n_keys);
  ahead.next(kPrefetchKeys);
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    ahead.next(1);
    const std::int64_t slot = walk.next();
    const E* v = vbase + slot * J.row_stride;
    const __m256 vs = _mm256_set1_ps(row_scale<E>(J.v_scale, slot, J.scale_stride));
    __m256 vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c + 1 < NV; ++c) vv[c] = load8(v + 8 * c, vs);
    if constexpr (std::is_same_v<E, float>)
      vv[NV - 1] = _mm256_maskload_ps(v + 8 * (NV - 1), last);
    else
      vv[NV - 1] = load8_first(v + 8 * (NV - 1), last_n, vs);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m256 p = _mm256_broadcast_ss(J.p[h0 + h] + j);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[h][c] = _mm256_fmadd_ps(p, vv[c], acc[h][c]);
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c + 1 < NV; ++c) _mm256_storeu_ps(J.out[h0 + h] + d0 + 8 * c, acc[h][c]);
    _mm256_maskstore_ps(J.out[h0 + h] + d0 + 8 * (NV - 1), last, acc[h][NV - 1]);
  }
}

using PvTileAvx2 = void (*)(const Job&, int, std::int64_t, __m256i, std::int64_t);
// [heads - 1][vectors - 1]: 2 heads x 4 vectors of accumulators fit the 16 registers.
template <typename E>
constexpr PvTileAvx2 kPvAvx2[2][4] = {
    {pv_tile_avx2<E, 1, 1>, pv_tile_avx2<E, 1, 2>, pv_tile_avx2<E, 1, 3>, pv_tile_avx2<E, 1, 4>},
    {pv_tile_avx2<E, 2, 1>, pv_tile_avx2<E, 2, 2>, pv_tile_avx2<E, 2, 3>, pv_tile_avx2<E, 2, 4>}};

template <typename E>
SAKER_TARGET_AVX2 void run_avx2(const Job& J) {
  dots_avx2<E>(J);
  for (int h = 0; h < J.heads; ++h) softmax_avx2(J, h);
  for (std::int64_t d0 = 0; d0 < J.hd; d0 += 32) {
    const std::int64_t width = std::min<std::int64_t>(32, J.hd - d0);
    const std::int64_t nv = (width + 7) / 8;
    const std::int64_t last_n = width - 8 * (nv - 1);
    const __m256i last = mask8(last_n);
    for (int h0 = 0; h0 < J.heads; h0 += 2)
      kPvAvx2<E>[std::min(2, J.heads - h0) - 1][nv - 1](J, h0, d0, last, last_n);
  }
}

// --- AVX-512 -------------------------------------------------------------------------------------

SAKER_TARGET_AVX512 inline __mmask16 mask16(std::int64_t count) {
  return count >= kLanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

// The tree on 16 lanes. Whole-register shuffles only: GCC 12's 256-bit extracts trip
// -Wmaybe-uninitialized.
SAKER_TARGET_AVX512 inline float tree_sum16(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 2, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
  v = _mm512_add_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(3, 2, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
  return _mm512_cvtss_f32(v);
}

SAKER_TARGET_AVX512 inline float tree_max16(__m512 v) {
  v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 2, 3, 2)));
  v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
  v = _mm512_max_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(3, 2, 3, 2)));
  v = _mm512_max_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
  return _mm512_cvtss_f32(v);
}

SAKER_TARGET_AVX512 inline __m512 round_to_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const __m512i odd =
      _mm512_and_si512(_mm512_maskz_srli_epi32(0xffff, u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), top);
  const __m512i quiet = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x400000)), top);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, quiet));
}

// e4m3 codes (one per 32-bit lane) to fp32, exactly as e4m3_to_f32 (see the AVX2 form).
SAKER_TARGET_AVX512 inline __m512 e4m3_to_f32(__m512i c) {
  const __m512i mag = _mm512_and_si512(c, _mm512_set1_epi32(0x7f));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x80)), 24);
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23));
  const __m512i sub =
      _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-9f)));
  __m512i r =
      _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8)), normal, sub);
  r = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)), r,
                              _mm512_set1_epi32(0x7fc00000));
  return _mm512_castsi512_ps(_mm512_or_si512(r, sign));
}

// 16 elements widened to fp32: all, or the lanes of m (the others zero); 8-bit codes times
// `scale`, the row's scale in every lane (masked after the multiply, so padding is 0 whatever
// the scale).
SAKER_TARGET_AVX512 inline __m512 load16(const float* p, __m512) {
  return _mm512_loadu_ps(p);
}
SAKER_TARGET_AVX512 inline __m512 load16(const Bf16* p, __m512) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
SAKER_TARGET_AVX512 inline __m512 load16(const F16* p, __m512) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
SAKER_TARGET_AVX512 inline __m512 load16(const I8q* p, __m512 scale) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), scale);
}
SAKER_TARGET_AVX512 inline __m512 load16(const F8q* p, __m512 scale) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_mul_ps(e4m3_to_f32(_mm512_cvtepu8_epi32(b)), scale);
}
SAKER_TARGET_AVX512 inline __m512 load16(__mmask16 m, const float* p, __m512) {
  return _mm512_maskz_loadu_ps(m, p);
}
SAKER_TARGET_AVX512 inline __m512 load16(__mmask16 m, const Bf16* p, __m512) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
SAKER_TARGET_AVX512 inline __m512 load16(__mmask16 m, const F16* p, __m512) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
SAKER_TARGET_AVX512 inline __m512 load16(__mmask16 m, const I8q* p, __m512 scale) {
  const __m128i b = _mm_maskz_loadu_epi8(m, p);
  return _mm512_maskz_mul_ps(m, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), scale);
}
SAKER_TARGET_AVX512 inline __m512 load16(__mmask16 m, const F8q* p, __m512 scale) {
  const __m128i b = _mm_maskz_loadu_epi8(m, p);
  return _mm512_maskz_mul_ps(m, e4m3_to_f32(_mm512_cvtepu8_epi32(b)), scale);
}

// Dots of 16 keys with one query: each key's 16 lane sums, then the tree steps of all 16 keys
// at once by transposing as it goes (every add is the same lane pair the tree adds).
template <typename E>
SAKER_TARGET_AVX512 void dots16_avx512(const float* q, const E* const* rows, const float* scales,
                                       std::int64_t hd, float* dst) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  std::int64_t c = 0;
  for (; c + kLanes <= hd; c += kLanes) {
    const __m512 qc = _mm512_loadu_ps(q + c);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      acc[i] = _mm512_fmadd_ps(qc, load16(rows[i] + c, _mm512_set1_ps(scales[i])), acc[i]);
  }
  if (c < hd) {
    const __mmask16 m = mask16(hd - c);
    const __m512 qc = _mm512_maskz_loadu_ps(m, q + c);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      acc[i] = _mm512_fmadd_ps(qc, load16(m, rows[i] + c, _mm512_set1_ps(scales[i])), acc[i]);
  }
  // 16 -> 8: w[i] = [key 2i | key 2i+1], 8 lanes each.
  __m512 w[8];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // 8 -> 4: x[i] = keys 4i .. 4i+3, 4 lanes each.
  __m512 x[4];
  for (int i = 0; i < 4; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // 4 -> 2: 128-bit lane k of y[i] = [key 8i+k (2 lanes), key 8i+4+k (2 lanes)].
  __m512 y[2];
  for (int i = 0; i < 2; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // 2 -> 1: lane 4k + i = key k + 4i; put keys back in order.
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(dst, _mm512_permutexvar_ps(order, z));
}

template <typename E>
SAKER_TARGET_AVX512 void dots_avx512(const Job& J) {
  SlotWalker walk(*J.place, J.block_size);
  KvPrefetcher ahead(*J.place, J.block_size, J.k, J.v, J.row_stride * sizeof(E), J.hd * sizeof(E),
                     J.n_keys);
  ahead.next(kPrefetchKeys);
  const E* const k = static_cast<const E*>(J.k);
  const E* rows[16];
  float scales[16];
  for (std::int64_t j0 = 0; j0 < J.n_keys; j0 += 16) {
    ahead.next(16);
    const std::int64_t count = std::min<std::int64_t>(16, J.n_keys - j0);
    for (std::int64_t i = 0; i < 16; ++i) {
      if (i < count) {
        const std::int64_t slot = walk.next();
        rows[i] = k + slot * J.row_stride;
        scales[i] = row_scale<E>(J.k_scale, slot, J.scale_stride);
      } else {
        rows[i] = rows[count - 1];
        scales[i] = scales[count - 1];
      }
    }
    // Rows past the last key repeat it; their dots land in the row's padding.
    for (int h = 0; h < J.heads; ++h) dots16_avx512(J.q[h], rows, scales, J.hd, J.p[h] + j0);
  }
}

SAKER_TARGET_AVX512 void softmax_avx512(const Job& J, int h) {
  float* s = J.p[h];
  const std::int64_t n = J.n_keys;
  const __m512 scale = _mm512_set1_ps(J.scale), slope = _mm512_set1_ps(J.slope[h]);
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (std::int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 in = mask16(n - j);
    __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, s + j), scale);
    if (J.alibi) {
      const __m512 pos = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(j)), iota);
      x = _mm512_add_ps(x, _mm512_mul_ps(round_to_bf16(_mm512_mul_ps(slope, pos)), scale));
    }
    _mm512_mask_storeu_ps(s + j, in, x);
    m = _mm512_mask_max_ps(m, in, m, x);
  }
  const __m512 max = _mm512_set1_ps(tree_max16(m));
  __m512 den = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 in = mask16(n - j);
    const __m512 e = vm::exp_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(in, s + j), max));
    _mm512_mask_storeu_ps(s + j, in, e);
    den = _mm512_mask_add_ps(den, in, den, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / tree_sum16(den));
  for (std::int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 in = mask16(n - j);
    _mm512_mask_storeu_ps(s + j, in, _mm512_mul_ps(_mm512_maskz_loadu_ps(in, s + j), inv));
  }
}

template <typename E, int NH, int NV>
SAKER_TARGET_AVX512 void pv_tile_avx512(const Job& J, int h0, std::int64_t d0, __mmask16 last) {
  __m512 acc[NH][NV];
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[h][c] = _mm512_setzero_ps();
  SlotWalker walk(*J.place, J.block_size);
  const E* const vbase = static_cast<const E*>(J.v) + d0;
  KvPrefetcher ahead(*J.place, J.block_size, vbase, nullptr, J.row_stride * sizeof(E),
                     std::min<std::int64_t>(J.hd - d0, NV * kLanes) * sizeof(E), J.n_keys);
  ahead.next(kPrefetchKeys);
  for (std::int64_t j = 0; j < J.n_keys; ++j) {
    ahead.next(1);
    const std::int64_t slot = walk.next();
    const E* v = vbase + slot * J.row_stride;
    const __m512 vs = _mm512_set1_ps(row_scale<E>(J.v_scale, slot, J.scale_stride));
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c + 1 < NV; ++c) vv[c] = load16(v + kLanes * c, vs);
    vv[NV - 1] = load16(last, v + kLanes * (NV - 1), vs);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m512 p = _mm512_set1_ps(J.p[h0 + h][j]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[h][c] = _mm512_fmadd_ps(p, vv[c], acc[h][c]);
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c + 1 < NV; ++c) _mm512_storeu_ps(J.out[h0 + h] + d0 + kLanes * c, acc[h][c]);
    _mm512_mask_storeu_ps(J.out[h0 + h] + d0 + kLanes * (NV - 1), last, acc[h][NV - 1]);
  }
}

using PvTileAvx512 = void (*)(const Job&, int, std::int64_t, __mmask16);
// [heads - 1][vectors - 1]: up to 4 heads x 4 vectors (64 floats) of accumulators.
template <typename E>
constexpr PvTileAvx512 kPvAvx512[4][4] = {{pv_tile_avx512<E, 1, 1>, pv_tile_avx512<E, 1, 2>,
                                           pv_tile_avx512<E, 1, 3>, pv_tile_avx512<E, 1, 4>},
                                          {pv_tile_avx512<E, 2, 1>, pv_tile_avx512<E, 2, 2>,
                                           pv_tile_avx512<E, 2, 3>, pv_tile_avx512<E, 2, 4>},
                                          {pv_tile_avx512<E, 3, 1>, pv_tile_avx512<E, 3, 2>,
                                           pv_tile_avx512<E, 3, 3>, pv_tile_avx512<E, 3, 4>},
                                          {pv_tile_avx512<E, 4, 1>, pv_tile_avx512<E, 4, 2>,
                                           pv_tile_avx512<E, 4, 3>, pv_tile_avx512<E, 4, 4>}};

template <typename E>
SAKER_TARGET_AVX512 void run_avx512(const Job& J) {
  dots_avx512<E>(J);
  for (int h = 0; h < J.heads; ++h) softmax_avx512(J, h);
  for (std::int64_t d0 = 0; d0 < J.hd; d0 += 4 * kLanes) {
    const std::int64_t width = std::min<std::int64_t>(4 * kLanes, J.hd - d0);
    const std::int64_t nv = (width + kLanes - 1) / kLanes;
    const __mmask16 last = mask16(width - kLanes * (nv - 1));
    for (int h0 = 0; h0 < J.heads; h0 += 4)
      kPvAvx512<E>[std::min(4, J.heads - h0) - 1][nv - 1](J, h0, d0, last);
  }
}

template <typename E>
void run(Isa isa, const Job& J) {
  switch (isa) {
    case Isa::kAvx512:
      return run_avx512<E>(J);
    case Isa::kAvx2:
      return run_avx2<E>(J);
    case Isa::kPortable:
      return run_portable<E>(J);
  }
}

}  // namespace

std::int64_t attention_scratch_floats(std::int64_t max_context) {
  return kAttentionMaxHeads * round_up16(max_context);
}

void attention_heads(Isa isa, const float* qkv, std::span<const TokenPlace> places,
                     const AttentionShape& s, const KvLayer& kv, std::int64_t t,
                     std::int64_t head_begin, std::int64_t head_end, float* scratch, float* out) {
  const QkvLayout L(s);
  const std::int64_t hd = s.head_dim;
  const std::int64_t group = head_begin / L.group_size;
  Job J;
  J.heads = static_cast<int>(head_end - head_begin);
  J.hd = hd;
  J.n_keys = static_cast<std::int64_t>(places[t].pos) + 1;
  J.alibi = s.alibi_slopes != nullptr;
  J.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* row = qkv + t * s.kv_heads * L.group_stride;
  const std::int64_t stride = round_up16(J.n_keys);  // whole 16-key blocks of dots per head
  for (int i = 0; i < J.heads; ++i) {
    const std::int64_t head = head_begin + i;
    J.q[i] = row + L.q(head);
    J.p[i] = scratch + i * stride;
    J.out[i] = out + (t * s.heads + head) * hd;
    J.slope[i] = J.alibi ? s.alibi_slopes[head] : 0.0f;
  }
  const std::int64_t group_bytes = group * hd * static_cast<std::int64_t>(dtype_size(kv.dtype));
  J.k = static_cast<const char*>(kv.k) + group_bytes;
  J.v = static_cast<const char*>(kv.v) + group_bytes;
  J.row_stride = kv.kv_heads * hd;
  if (kv_dtype_has_scales(kv.dtype) && (!kv.k_scale || !kv.v_scale))
    throw std::invalid_argument("attention: an 8-bit KV cache needs its scales");
  J.k_scale = kv.k_scale ? kv.k_scale + group : nullptr;
  J.v_scale = kv.v_scale ? kv.v_scale + group : nullptr;
  J.scale_stride = kv.kv_heads;
  J.place = &places[t];
  J.block_size = kv.block_size;
  switch (kv.dtype) {
    case DType::F32:
      return run<float>(isa, J);
    case DType::BF16:
      return run<Bf16>(isa, J);
    case DType::F16:
      return run<F16>(isa, J);
    case DType::I8:
      return run<I8q>(isa, J);
    case DType::F8E4M3:
      return run<F8q>(isa, J);
  }
  throw std::invalid_argument("attention: a KV cache holds F32, BF16, F16, I8 or F8_E4M3 elements");
}

}  // namespace saker::cpu
