// Rotary embedding, KV-cache writes and causal attention over the paged KV cache.
//
// Attention works on tiles: the query heads of one KV group for up to `tq` tokens of one
// sequence. A block takes one tile and one range of keys, streams those keys' K and V rows
// through shared memory once (so every KV block is read once per group and tile, not once per
// query head) and keeps flash-style running softmax statistics in fp32. Decode steps make tiles
// of one token; prefill makes tiles of several consecutive tokens that share the key reads. Long
// contexts are cut into key ranges (split-K) so a small batch still fills the GPU; a second
// kernel combines the ranges' partial results.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/kv_elements.cuh"
#include "kernels/cuda/launch.h"

namespace saker::cuda {
namespace {

constexpr int kKeyTile = 32;    // keys per shared-memory tile
constexpr int kTileRows = 64;   // target query rows (token x head) per tile
constexpr int kMaxSplits = 64;  // key ranges per tile at most
// The key ranges are cut from max_keys rounded up to this (ranges past a tile's keys hold none),
// so a decode step's launch stays the same for 128 positions and its graph can be replayed.
constexpr int kKeyBucket = 128;

// Offsets within one fused qkv row (docs/falcon.md section 3), as kernels/cpu/ops.h QkvLayout.
struct Layout {
  int heads, kv_heads, hd, gs;
  __host__ __device__ std::int64_t group_stride() const {
    return static_cast<std::int64_t>(gs + 2) * hd;
  }
  __host__ __device__ std::int64_t row_stride() const { return kv_heads * group_stride(); }
  __host__ __device__ std::int64_t q(int head) const {
    return (head / gs) * group_stride() + static_cast<std::int64_t>(head % gs) * hd;
  }
  __host__ __device__ std::int64_t k(int group) const {
    return group * group_stride() + static_cast<std::int64_t>(gs) * hd;
  }
  __host__ __device__ std::int64_t v(int group) const { return k(group) + hd; }
};

// f(std::integral_constant<DType, D>{}) for the cache's element type D.
template <typename F>
void with_kv_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32:
      return f(std::integral_constant<DType, DType::F32>{});
    case DType::BF16:
      return f(std::integral_constant<DType, DType::BF16>{});
    case DType::F16:
      return f(std::integral_constant<DType, DType::F16>{});
    case DType::I8:
      return f(std::integral_constant<DType, DType::I8>{});
    case DType::F8E4M3:
      return f(std::integral_constant<DType, DType::F8E4M3>{});
  }
  throw std::invalid_argument("a KV cache holds F32, BF16, F16, I8 or F8_E4M3 elements");
}

Layout layout_of(const AttentionShape& s) {
  return Layout{static_cast<int>(s.heads), static_cast<int>(s.kv_heads),
                static_cast<int>(s.head_dim), static_cast<int>(s.heads / s.kv_heads)};
}

// KV slot of key `key` through a block table.
__device__ __forceinline__ std::int64_t slot_of(const std::int32_t* table, std::int64_t key,
                                                int block_size) {
  return static_cast<std::int64_t>(table[key / block_size]) * block_size + key % block_size;
}

// GPT-NeoX rotate-half of one pair, rounded as the CPU kernel (no fused multiply-add).
__device__ __forceinline__ void rotate_pair(float* lo, float* hi, float c, float s) {
  const float a = *lo, b = *hi;
  *lo = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *hi = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// grid (item blocks, token); one thread per (rotated head, pair index).
__global__ void rotary_kernel(float* qkv, const std::int32_t* pos, Layout L, const float* cos_sin) {
  pdl_enter();
  const std::int64_t t = blockIdx.y;
  const int half = L.hd / 2;
  float* row = qkv + t * L.row_stride();
  const float* cs = cos_sin + static_cast<std::int64_t>(pos[t]) * half * 2;
  const int items = (L.heads + L.kv_heads) * half;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < items; i += gridDim.x * blockDim.x) {
    const int h = i / half, d = i % half;
    float* head = row + (h < L.heads ? L.q(h) : L.k(h - L.heads));
    rotate_pair(head + d, head + d + half, cs[2 * d], cs[2 * d + 1]);
  }
}

// Element-wise cache types (F32, BF16, F16): one thread per element of a key or value head.
template <DType D>
__global__ void kv_write_kernel(const float* qkv, DevicePlaces p, Layout L, KvLayer kv) {
  pdl_enter();
  const std::int64_t t = blockIdx.x;
  const float* row = qkv + t * L.row_stride();
  const std::int64_t slot =
      slot_of(p.tables + p.table_off[t], p.pos[t], static_cast<int>(kv.block_size));
  const int items = L.kv_heads * L.hd;
  for (int i = threadIdx.x; i < items; i += blockDim.x) {
    const int g = i / L.hd, d = i % L.hd;
    const std::int64_t off = (slot * kv.kv_heads + g) * kv.head_dim + d;
    static_cast<KvT<D>*>(kv.k)[off] = kv_narrow<D>(row[L.k(g) + d]);
    static_cast<KvT<D>*>(kv.v)[off] = kv_narrow<D>(row[L.v(g) + d]);
  }
}

// 8-bit cache types: one warp per head vector (token, KV group, key or value), which finds the
// vector's largest magnitude, writes scale = max / kv_code_max and the codes (as the CPU's
// store_head: one scale per token per KV head).
template <DType D>
__global__ void kv_write_scaled_kernel(const float* qkv, DevicePlaces p, Layout L, KvLayer kv) {
  pdl_enter();
  const std::int64_t vec =
      blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (vec >= p.n * L.kv_heads * 2) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t t = vec / (2 * L.kv_heads);
  const int g = static_cast<int>(vec / 2 % L.kv_heads);
  const bool is_v = vec % 2 == 1;
  const float* src = qkv + t * L.row_stride() + (is_v ? L.v(g) : L.k(g));
  float amax = 0.0f;
  for (int d = lane; d < L.hd; d += 32) amax = fmaxf(amax, fabsf(src[d]));
  amax = warp_max(amax);
  const float scale = __fdiv_rn(amax, kv_code_max(D));
  const std::int64_t vector =
      slot_of(p.tables + p.table_off[t], p.pos[t], static_cast<int>(kv.block_size)) * kv.kv_heads +
      g;
  if (lane == 0) (is_v ? kv.v_scale : kv.k_scale)[vector] = scale;
  KvT<D>* dst = static_cast<KvT<D>*>(is_v ? kv.v : kv.k) + vector * kv.head_dim;
  for (int d = lane; d < L.hd; d += 32) dst[d] = kv_code<D>(src[d], scale);
}

// rotary_kernel and kv_write_kernel in one (element-wise cache types): grid (item blocks, token);
// one thread per rotated pair of a query or key head, or per element of a value head. A key pair
// is written to the cache as rotated; nothing reads a rotated element before this thread wrote it.
template <DType D>
__global__ void rotary_kv_write_kernel(float* qkv, DevicePlaces p, Layout L, const float* cos_sin,
                                       KvLayer kv) {
  pdl_enter();
  const std::int64_t t = blockIdx.y;
  const int half = L.hd / 2;
  float* row = qkv + t * L.row_stride();
  const float* cs = cos_sin + static_cast<std::int64_t>(p.pos[t]) * half * 2;
  const std::int64_t slot =
      slot_of(p.tables + p.table_off[t], p.pos[t], static_cast<int>(kv.block_size));
  const int pairs = (L.heads + L.kv_heads) * half;
  const int items = pairs + L.kv_heads * L.hd;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < items; i += gridDim.x * blockDim.x) {
    if (i < pairs) {
      const int h = i / half, d = i % half;
      float* head = row + (h < L.heads ? L.q(h) : L.k(h - L.heads));
      rotate_pair(head + d, head + d + half, cs[2 * d], cs[2 * d + 1]);
      if (h >= L.heads) {
        const std::int64_t off = (slot * kv.kv_heads + (h - L.heads)) * kv.head_dim + d;
        static_cast<KvT<D>*>(kv.k)[off] = kv_narrow<D>(head[d]);
        static_cast<KvT<D>*>(kv.k)[off + half] = kv_narrow<D>(head[d + half]);
      }
    } else {
      const int g = (i - pairs) / L.hd, d = (i - pairs) % L.hd;
      static_cast<KvT<D>*>(kv.v)[(slot * kv.kv_heads + g) * kv.head_dim + d] =
          kv_narrow<D>(row[L.v(g) + d]);
    }
  }
}

struct AttentionArgs {
  const float* qkv;
  DevicePlaces p;
  Layout L;
  const void* k;  // KvT<D> elements
  const void* v;
  const float* k_scale;  // 8-bit types: [slots][kv_heads]
  const float* v_scale;
  int block_size;
  bool vec4;            // K and V rows in 4-element pieces (head_dim % 4 == 0, aligned pools)
  const float* slopes;  // null without ALiBi
  float scale;
  int splits;
  int keys_per_split;
  int row_chunks;  // blocks per (tile, KV group, key range), each a slice of the tile's rows
  int rows_per_chunk;
  float* part_acc;  // [n][heads][splits][hd], unnormalised
  float* part_ml;   // [n][heads][splits][2]: running max, running sum
};

// One output element from the key ranges' partial results: sum_s acc_s e^(m_s - M) / sum_s l_s
// e^(m_s - M).
__device__ __forceinline__ float combine_element(const float* part_acc, const float* part_ml,
                                                 std::int64_t base, int splits, int hd, int d) {
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_ml[(base + s) * 2]);
  float den = 0.0f, num = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part_ml[(base + s) * 2];
    if (ms == -INFINITY) continue;  // this range held none of the token's keys
    const float w = expf(ms - mx);
    den = fmaf(part_ml[(base + s) * 2 + 1], w, den);
    num = fmaf(part_acc[(base + s) * hd + d], w, num);
  }
  return num / den;
}

// Shared memory of one block, in floats, for `rows` query rows.
std::size_t smem_floats(int rows, int hd) {
  return 2 * static_cast<std::size_t>(rows) * hd          // q, acc
         + static_cast<std::size_t>(rows) * kKeyTile      // scores / probabilities
         + static_cast<std::size_t>(kKeyTile) * (hd + 1)  // K tile, padded against bank conflicts
         + static_cast<std::size_t>(kKeyTile) * hd        // V tile
         + 3 * static_cast<std::size_t>(rows);            // max, sum, correction
}

// grid: (tile, kv group x row chunk, key range). Row R of a tile is token first + R / gs, head
// g*gs + R % gs; a block takes rows r0 + r, r < rows, of its chunk (each row is computed alone,
// so the chunking does not change any result). D: the cache's element type.
template <DType D>
__global__ void attention_kernel(AttentionArgs a) {
  pdl_enter();
  extern __shared__ float smem[];
  const Layout L = a.L;
  const int hd = L.hd, gs = L.gs;
  const std::int32_t* tile = a.p.tiles + 3 * static_cast<std::int64_t>(blockIdx.x);
  const std::int64_t first = tile[0];
  const int g = static_cast<int>(blockIdx.y) / a.row_chunks, split = blockIdx.z;
  const int r0 = (static_cast<int>(blockIdx.y) % a.row_chunks) * a.rows_per_chunk;
  const int rows = min(a.rows_per_chunk, tile[1] * gs - r0);
  if (rows <= 0) return;  // the whole block: a tile of fewer tokens than the chunks cover
  const std::int64_t tile_keys = tile[2];
  const std::int64_t key_begin = static_cast<std::int64_t>(split) * a.keys_per_split;
  const std::int64_t key_end = std::min<std::int64_t>(key_begin + a.keys_per_split, tile_keys);
  const int max_rows = kTileRows > gs ? (kTileRows / gs) * gs : gs;  // the host's layout
  float* q = smem;
  float* acc = q + static_cast<std::size_t>(max_rows) * hd;
  float* sc = acc + static_cast<std::size_t>(max_rows) * hd;
  float* kt = sc + static_cast<std::size_t>(max_rows) * kKeyTile;
  float* vt = kt + static_cast<std::size_t>(kKeyTile) * (hd + 1);
  float* m = vt + static_cast<std::size_t>(kKeyTile) * hd;
  float* l = m + max_rows;
  float* corr = l + max_rows;
  const std::int32_t* table = a.p.tables + a.p.table_off[first];  // shared by the tile's tokens

  for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd, rr = r0 + r;
    const std::int64_t t = first + rr / gs;
    q[i] = a.qkv[t * L.row_stride() + L.q(g * gs + rr % gs) + d];
    acc[i] = 0.0f;
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  __syncthreads();

  for (std::int64_t kb = key_begin; kb < key_end; kb += kKeyTile) {
    const int tk = static_cast<int>(std::min<std::int64_t>(kKeyTile, key_end - kb));
    const auto* kp = static_cast<const KvT<D>*>(a.k);
    const auto* vp = static_cast<const KvT<D>*>(a.v);
    if (a.vec4) {
      // 4 elements a load: each thread has a few independent table lookups and K/V loads in
      // flight instead of one element at a time (the K/V reads are a decode step's attention
      // latency). Elements are widened to fp32 as they land in shared memory.
      const int q4 = hd / 4;
      for (int i = threadIdx.x; i < tk * q4; i += blockDim.x) {
        const int j = i / q4, d = (i % q4) * 4;
        const std::int64_t vector = slot_of(table, kb + j, a.block_size) * L.kv_heads + g;
        const std::int64_t off = vector * hd + d;
        const auto kq = *reinterpret_cast<const Pack4<KvT<D>>*>(kp + off);
        const auto vq = *reinterpret_cast<const Pack4<KvT<D>>*>(vp + off);
        float ks = 1.0f, vs = 1.0f;
        if constexpr (kv_dtype_has_scales(D)) {
          ks = a.k_scale[vector];
          vs = a.v_scale[vector];
        }
        float* kr = kt + j * (hd + 1) + d;
        float* vr = vt + j * hd + d;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          kr[e] = kv_widen<D>(kq.e[e], ks);
          vr[e] = kv_widen<D>(vq.e[e], vs);
        }
      }
    } else {
      for (int i = threadIdx.x; i < tk * hd; i += blockDim.x) {
        const int j = i / hd, d = i % hd;
        const std::int64_t vector = slot_of(table, kb + j, a.block_size) * L.kv_heads + g;
        float ks = 1.0f, vs = 1.0f;
        if constexpr (kv_dtype_has_scales(D)) {
          ks = a.k_scale[vector];
          vs = a.v_scale[vector];
        }
        kt[j * (hd + 1) + d] = kv_widen<D>(kp[vector * hd + d], ks);
        vt[j * hd + d] = kv_widen<D>(vp[vector * hd + d], vs);
      }
    }
    __syncthreads();
    // Scores; keys past a token's own position (causal) or past the tile get -inf.
    for (int i = threadIdx.x; i < rows * kKeyTile; i += blockDim.x) {
      const int r = i / kKeyTile, j = i % kKeyTile;
      const std::int64_t key = kb + j;
      float score = -INFINITY;
      if (j < tk && key <= a.p.pos[first + (r0 + r) / gs]) {
        const float* qr = q + static_cast<std::size_t>(r) * hd;
        const float* kr = kt + j * (hd + 1);
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot = fmaf(qr[d], kr[d], dot);
        score = __fmul_rn(dot, a.scale);
        // transformers adds bf16(bf16(slope) * key position) / sqrt(head_dim), as the CPU kernel.
        if (a.slopes) {
          const float slope = a.slopes[g * gs + (r0 + r) % gs];
          score = __fadd_rn(
              score, __fmul_rn(round_bf16(__fmul_rn(slope, static_cast<float>(key))), a.scale));
        }
      }
      sc[i] = score;
    }
    __syncthreads();
    // Running softmax statistics, one warp per row and one lane per key of the tile (a thread
    // per row left 32 dependent exponentials on one thread: the latency of a decode step).
    static_assert(kKeyTile == 32, "a lane per key");
    for (int r = static_cast<int>(threadIdx.x / 32); r < rows;
         r += static_cast<int>(blockDim.x / 32)) {
      const int lane = static_cast<int>(threadIdx.x % 32);
      float* sr = sc + static_cast<std::size_t>(r) * kKeyTile;
      const float v = sr[lane];
      const float m_old = m[r];
      const float m_new = fmaxf(m_old, warp_max(v));
      if (m_new == -INFINITY) {  // no key of this row yet: nothing to add, nothing to rescale
        sr[lane] = 0.0f;
        if (lane == 0) corr[r] = 1.0f;
        continue;
      }
      const float e = expf(v - m_new);  // exp(-inf) = 0 for masked keys
      sr[lane] = e;
      const float sum = warp_sum(e);  // every lane has read m[r] before lane 0 writes it
      if (lane == 0) {
        const float c = expf(m_old - m_new);  // 0 when m_old is still -inf
        corr[r] = c;
        l[r] = l[r] * c + sum;
        m[r] = m_new;
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
      const int r = i / hd, d = i % hd;
      const float* pr = sc + static_cast<std::size_t>(r) * kKeyTile;
      float o = acc[i] * corr[r];
      for (int j = 0; j < tk; ++j) o = fmaf(pr[j], vt[j * hd + d], o);
      acc[i] = o;
    }
    __syncthreads();
  }

  // Partial results of this key range (m = -inf, l = 0 when it held no key of the row).
  for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd, rr = r0 + r;
    const std::int64_t t = first + rr / gs;
    const std::int64_t head = static_cast<std::int64_t>(g) * gs + rr % gs;
    a.part_acc[((t * L.heads + head) * a.splits + split) * hd + d] = acc[i];
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const int rr = r0 + r;
    const std::int64_t t = first + rr / gs;
    const std::int64_t head = static_cast<std::int64_t>(g) * gs + rr % gs;
    float* ml = a.part_ml + ((t * L.heads + head) * a.splits + split) * 2;
    ml[0] = m[r];
    ml[1] = l[r];
  }
}

// The key ranges combined by a second kernel, one thread per output element (a block per token
// left each thread ~18 elements of dependent loads: 35 us at batch 1).
__global__ void attention_combine_kernel(const float* part_acc, const float* part_ml,
                                         std::int64_t n, int heads, int hd, int splits,
                                         float* out) {
  pdl_enter();
  const std::int64_t count = n * heads * hd;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = e / (static_cast<std::int64_t>(heads) * hd);
    const int i = static_cast<int>(e % (static_cast<std::int64_t>(heads) * hd));
    const int head = i / hd, d = i % hd;
    out[(t * heads + head) * hd + d] =
        combine_element(part_acc, part_ml, (t * heads + head) * splits, splits, hd, d);
  }
}

}  // namespace

void launch_rotary(float* qkv, const DevicePlaces& p, const AttentionShape& s, const float* cos_sin,
                   const Enqueue& q) {
  if (p.n == 0) return;
  const Layout L = layout_of(s);
  const dim3 grid(
      static_cast<unsigned>((L.heads + L.kv_heads) * (L.hd / 2) + kThreads - 1) / kThreads,
      static_cast<unsigned>(p.n));
  enqueue(q, grid, kThreads, 0, rotary_kernel, "rotary_kernel", qkv, p.pos, L, cos_sin);
}

void launch_kv_write(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                     const KvLayer& kv, const Enqueue& q) {
  if (p.n == 0) return;
  const Layout L = layout_of(s);
  with_kv_dtype(kv.dtype, [&](auto d) {
    constexpr DType D = decltype(d)::value;
    if constexpr (kv_dtype_has_scales(D)) {
      const std::int64_t warps = p.n * L.kv_heads * 2;
      enqueue(q, static_cast<unsigned>((warps + kThreads / 32 - 1) / (kThreads / 32)), kThreads, 0,
              kv_write_scaled_kernel<D>, "kv_write_scaled_kernel", qkv, p, L, kv);
    } else {
      enqueue(q, static_cast<unsigned>(p.n), kThreads, 0, kv_write_kernel<D>, "kv_write_kernel",
              qkv, p, L, kv);
    }
  });
}

void launch_rotary_kv_write(float* qkv, const DevicePlaces& p, const AttentionShape& s,
                            const float* cos_sin, const KvLayer& kv, const Enqueue& q) {
  if (p.n == 0) return;
  const Layout L = layout_of(s);
  const int items = (L.heads + L.kv_heads) * (L.hd / 2) + L.kv_heads * L.hd;
  const dim3 grid(static_cast<unsigned>((items + kThreads - 1) / kThreads),
                  static_cast<unsigned>(p.n));
  with_kv_dtype(kv.dtype, [&](auto d) {
    constexpr DType D = decltype(d)::value;
    if constexpr (kv_dtype_has_scales(D))
      throw std::logic_error("rotary_kv_write: an 8-bit cache needs each whole rotated vector");
    else
      enqueue(q, grid, kThreads, 0, rotary_kv_write_kernel<D>, "rotary_kv_write_kernel", qkv, p, L,
              cos_sin, kv);
  });
}

std::int64_t attention_tokens_per_tile(const AttentionShape& s) {
  const std::int64_t gs = s.heads / s.kv_heads;
  return std::max<std::int64_t>(1, kTileRows / gs);
}

std::size_t attention_scratch_floats(std::int64_t n, const AttentionShape& s, int splits) {
  return static_cast<std::size_t>(n * s.heads * splits) * static_cast<std::size_t>(s.head_dim + 2);
}

std::int64_t attention_key_bound(const DevicePlaces& p) {
  return (p.max_keys + kKeyBucket - 1) / kKeyBucket * kKeyBucket;
}

int attention_splits(const DevicePlaces& p, const AttentionShape& s, int sms, bool invariant) {
  // Batch-invariant: ranges of kKeyBucket keys from position 0, whatever else is in the step, so
  // a token's partial sums and their combination depend on its own keys alone (up to kMaxSplits
  // ranges: 8192 keys; longer bounds widen the ranges).
  if (invariant)
    return static_cast<int>(
        std::clamp<std::int64_t>(attention_key_bound(p) / kKeyBucket, 1, kMaxSplits));
  const std::int64_t blocks = std::max<std::int64_t>(1, p.num_tiles * s.kv_heads);
  const std::int64_t want = (2 * static_cast<std::int64_t>(sms) + blocks - 1) / blocks;
  const std::int64_t key_tiles = attention_key_bound(p) / kKeyTile;
  return static_cast<int>(std::clamp<std::int64_t>(std::min(want, key_tiles), 1, kMaxSplits));
}

void launch_attention(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                      const KvLayer& kv, int splits, float* scratch, float* out, const Enqueue& q) {
  if (p.n == 0) return;
  const Layout L = layout_of(s);
  if (s.heads % s.kv_heads != 0 || kv.head_dim != s.head_dim || kv.kv_heads != s.kv_heads)
    throw std::invalid_argument("attention: KV layer and attention shape disagree");
  // Key ranges of whole key tiles, so that only the last range of a tile is ragged.
  const std::int64_t per = (attention_key_bound(p) + splits - 1) / splits;
  const int keys_per_split = static_cast<int>((per + kKeyTile - 1) / kKeyTile * kKeyTile);
  const int max_rows = kTileRows > L.gs ? (kTileRows / L.gs) * L.gs : L.gs;
  const std::size_t smem = smem_floats(max_rows, L.hd) * sizeof(float);

  int device = 0, optin = 0;
  SAKER_CUDA_CHECK(cudaGetDevice(&device));
  SAKER_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > static_cast<std::size_t>(optin))
    throw std::runtime_error("attention: " + std::to_string(smem) +
                             " bytes of shared memory per block needed (head_dim " +
                             std::to_string(L.hd) + ", " + std::to_string(L.gs) +
                             " query heads per KV head), the device allows " +
                             std::to_string(optin));
  // Raised once per device, element type and size (not at every call: cheaper, and nothing but
  // launches happens inside a graph capture).
  static std::size_t raised[8][64] = {};
  std::size_t& done = raised[static_cast<int>(kv.dtype) % 8][device % 64];
  if (device >= 64 || done < smem) {
    with_kv_dtype(kv.dtype, [&](auto d) {
      SAKER_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<decltype(d)::value>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
    });
    if (device < 64) done = smem;
  }

  AttentionArgs a{};
  a.qkv = qkv;
  a.p = p;
  a.L = L;
  a.k = kv.k;
  a.v = kv.v;
  a.k_scale = kv.k_scale;
  a.v_scale = kv.v_scale;
  a.block_size = static_cast<int>(kv.block_size);
  a.vec4 = L.hd % 4 == 0 && reinterpret_cast<std::uintptr_t>(kv.k) % 16 == 0 &&
           reinterpret_cast<std::uintptr_t>(kv.v) % 16 == 0;
  a.slopes = s.alibi_slopes;
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  a.splits = splits;
  a.keys_per_split = keys_per_split;
  a.part_acc = scratch;
  a.part_ml = scratch + static_cast<std::size_t>(p.n * s.heads * splits) * s.head_dim;
  // A small grid (decode: one tile per sequence, few key ranges) is widened by cutting each
  // tile's rows (multi-query: 71 heads) into chunks of at least 8 rows, to about 2 blocks per
  // multiprocessor; the chunks re-read the same K/V rows (from L2).
  int sms = 0;
  SAKER_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const std::int64_t blocks = std::max<std::int64_t>(1, p.num_tiles * s.kv_heads * splits);
  const std::int64_t most = std::max(1, (max_rows + 7) / 8);
  const auto chunks = static_cast<int>(std::clamp<std::int64_t>(
      (2 * static_cast<std::int64_t>(sms) + blocks - 1) / blocks, 1, most));
  a.rows_per_chunk = (max_rows + chunks - 1) / chunks;
  a.row_chunks = (max_rows + a.rows_per_chunk - 1) / a.rows_per_chunk;
  const dim3 grid(static_cast<unsigned>(p.num_tiles),
                  static_cast<unsigned>(s.kv_heads * a.row_chunks), static_cast<unsigned>(splits));
  with_kv_dtype(kv.dtype, [&](auto d) {
    enqueue(q, grid, kThreads, smem, attention_kernel<decltype(d)::value>, "attention_kernel", a);
  });
  enqueue(q, grid_for(p.n * L.heads * L.hd, kThreads), kThreads, 0, attention_combine_kernel,
          "attention_combine_kernel", a.part_acc, a.part_ml, p.n, L.heads, L.hd, splits, out);
}

}  // namespace saker::cuda
