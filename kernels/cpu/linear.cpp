#include "kernels/cpu/linear.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/linear_tile.h"
#include "kernels/quantize.h"

namespace saker::cpu {
namespace {

using namespace detail;

// Cache blocking of k for many tokens: a tile's kc x 16 NP weights and MR x kc inputs stay in L1
// while it runs. Partial sums wait in y between blocks, which changes no rounding (fp32 either
// way).
constexpr std::int64_t kKBlock = 256;
// Inputs copied k-major per pass (96 KiB, on the stack): 96 tokens x kKBlock, or 12 x 2048.
constexpr std::int64_t kXpackFloats = 96 * kKBlock;

// Position of row j of a group of `gn` panels within one k-row of the group.
inline std::int64_t lane_in_group(DType d, std::int64_t gn, std::int64_t j) {
  const std::int64_t panel = j / P;
  if (d != DType::BF16 || (panel | 1) >= gn) return j;
  return (panel & ~std::int64_t{1}) * P + 2 * (j % P) + (panel & 1);
}

inline float element(DType d, const void* base, std::int64_t i) {
  switch (d) {
    case DType::F32:
      return static_cast<const float*>(base)[i];
    case DType::BF16:
      return bf16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::F16:
      return f16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::I8:
      return static_cast<float>(static_cast<const std::int8_t*>(base)[i]);
    case DType::F8E4M3:
      return e4m3_to_f32(static_cast<const std::uint8_t*>(base)[i]);
  }
  return 0.0f;
}

// --- portable: the reference arithmetic
// -----------------------------------------------------------

void tile_portable(DType d, const TileArgs& a, int mr, int np) {
  const std::size_t es = dtype_size(d);
  const auto lane_of = [&](std::int64_t i) -> std::int64_t {
    switch (a.pairing) {
      case Pairing::kNatural:
        return (i / P) * a.panel_step + static_cast<std::int64_t>(es) * (i % P);
      case Pairing::kPairs:
        return (i / (2 * P)) * 2 * a.panel_step + a.panel_step / P * (2 * (i % P) + (i / P) % 2);
      case Pairing::kLow:
      case Pairing::kHigh:
        return static_cast<std::int64_t>(es) * (2 * i + (a.pairing == Pairing::kHigh));
    }
    return 0;
  };
  for (int t = 0; t < mr; ++t)
    for (std::int64_t i = 0; i < std::min<std::int64_t>(a.valid, np * P); ++i) {
      const std::byte* lane = a.w + lane_of(i);
      float* out = a.y + t * a.ldy + i;
      float acc = a.first ? 0.0f : *out;
      for (std::int64_t k = a.k0; k < a.k1; ++k)
        acc =
            std::fma(element(d, lane + k * a.k_step, 0), a.x[t * a.ldx + (k - a.k0) * a.ldk], acc);
      if (a.last) {
        if (a.scales) acc = acc * a.scales[i];
        if (a.bias) acc = acc + a.bias[i];
      }
      *out = acc;
    }
}

// --- AVX-512
// ---------------------------------------------------------------------------------------

template <DType D>
SAKER_AVX512 inline __m512 widen16(const std::byte* p) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(p);
  } else if constexpr (D == DType::BF16) {  // bf16 is the top half of an fp32
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  } else if constexpr (D == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else if constexpr (D == DType::F8E4M3) {
    // e4m3 -> fp32 exactly: the code sign-extended and shifted left by 20 puts exponent and
    // mantissa in fp32's bits 20-26 and a copy of the sign in bits 27-31; clearing 27-30 leaves
    // the sign in 31. Times 2^120 rebiases (subnormals included: they land as fp32 subnormals).
    // Weights never hold the NaN code (quantization saturates at 448).
    const __m512i c = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i bits = _mm512_and_si512(_mm512_slli_epi32(c, 20),
                                          _mm512_set1_epi32(static_cast<int>(0x87f00000u)));
    return _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(0x1p120f));
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw));
  }
}

template <DType D, int MR, int NP>
SAKER_AVX512 void tile_avx512(const TileArgs& a) {
  __mmask16 mask[NP];
  tile_masks<NP>(a, mask);
  __m512 acc[MR][NP];
  tile_load<MR, NP>(a, mask, acc);
  constexpr std::int64_t kPanel = P * static_cast<std::int64_t>(dtype_size(D));
  const std::byte* w[NP];
  for (int p = 0; p < NP; ++p) w[p] = a.w + p * kPanel;
  const float* x = a.x;
  // bf16 tiles of two or four panels are pairs; a tile of one is a group's lone last panel (the
  // blocking here never splits a pair, but a half is handled as on AVX2).
  constexpr bool kPaired = D == DType::BF16 && NP % 2 == 0;
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const bool half = D == DType::BF16 && NP == 1 && a.pairing != Pairing::kNatural;
  const bool low = a.pairing == Pairing::kLow;
  for (std::int64_t k = a.k0; k < a.k1; ++k) {
    const std::int64_t off = k * a.k_step;
    // The tile's NP panels of one k are contiguous: fetch ahead every line they span.
    if (a.prefetch)
      for (std::int64_t b = 0; b < NP * kPanel; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w[0] + off + b + kPrefetchBytes), _MM_HINT_T0);
    fetch_ahead(a, off, NP * kPanel);
    __m512 wv[NP];
    if constexpr (kPaired) {
      for (int p = 0; p < NP; p += 2) {
        const __m512i v = _mm512_loadu_si512(w[p] + off);
        wv[p] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        wv[p + 1] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
      }
    } else if (half) {
      const __m512i v = _mm512_loadu_si512(w[0] + off);
      wv[0] = _mm512_castsi512_ps(low ? _mm512_slli_epi32(v, 16) : _mm512_and_si512(v, high));
    } else {
      for (int p = 0; p < NP; ++p) wv[p] = widen16<D>(w[p] + off);
    }
    for (int t = 0; t < MR; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * a.ldx + (k - a.k0) * a.ldk]);
      for (int p = 0; p < NP; ++p) acc[t][p] = _mm512_fmadd_ps(wv[p], xb, acc[t][p]);
    }
  }
  tile_store<MR, NP>(a, mask, acc);
}

// --- AVX2: the same 16 lanes as two 8-wide halves
// ----------------------------------------------------

#define SAKER_AVX2 __attribute__((target("avx2,fma,f16c")))

template <DType D>
SAKER_AVX2 inline __m256 widen8(const std::byte* p) {
  if constexpr (D == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (D == DType::BF16) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  } else if constexpr (D == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (D == DType::F8E4M3) {  // as widen16
    const __m256i c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m256i bits = _mm256_and_si256(_mm256_slli_epi32(c, 20),
                                          _mm256_set1_epi32(static_cast<int>(0x87f00000u)));
    return _mm256_mul_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(0x1p120f));
  } else {
    const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
  }
}

template <DType D, int MR, int NP>
SAKER_AVX2 void tile_avx2(const TileArgs& a) {
  constexpr auto kEs = static_cast<std::int64_t>(dtype_size(D));
  __m256i mask[NP][2];
  for (int p = 0; p < NP; ++p)
    for (int h = 0; h < 2; ++h) {
      const std::int64_t v = std::clamp<std::int64_t>(a.valid - p * P - h * 8, 0, 8);
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      mask[p][h] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(v)), lane);
    }
  __m256 acc[MR][NP][2];
  for (int t = 0; t < MR; ++t)
    for (int p = 0; p < NP; ++p)
      for (int h = 0; h < 2; ++h)
        acc[t][p][h] = a.first ? _mm256_setzero_ps()
                               : _mm256_maskload_ps(a.y + t * a.ldy + p * P + h * 8, mask[p][h]);
  const std::byte* w[NP];
  for (int p = 0; p < NP; ++p) w[p] = a.w + p * P * kEs;
  const float* x = a.x;
  // bf16: tiles of two or four panels are pairs; a tile of one panel is one of a pair (the low
  // or high halves of its lanes) unless it is a group's lone last panel.
  constexpr bool kPaired = D == DType::BF16 && NP % 2 == 0;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const bool half = D == DType::BF16 && NP == 1 && a.pairing != Pairing::kNatural;
  const bool low = a.pairing == Pairing::kLow;
  for (std::int64_t k = a.k0; k < a.k1; ++k) {
    const std::int64_t off = k * a.k_step;
    if (a.prefetch)
      for (std::int64_t b = 0; b < NP * P * kEs; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w[0] + off + b + kPrefetchBytes), _MM_HINT_T0);
    // Weight vectors in pairs: (panel p, half h) and the vector after it, (p, 1) or (p + 1, h).
    for (int p = 0; p < NP; p += kPaired ? 2 : 1)
      for (int h = 0; h < (kPaired ? 2 : 1); ++h) {
        __m256 w0, w1;
        int p1 = p, h1 = 1;
        if constexpr (kPaired) {
          const __m256i v =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[p] + off + h * 32));
          w0 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
          w1 = _mm256_castsi256_ps(_mm256_and_si256(v, high));
          p1 = p + 1;
          h1 = h;
        } else if (half) {
          const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[0] + off));
          const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[0] + off + 32));
          w0 = _mm256_castsi256_ps(low ? _mm256_slli_epi32(v0, 16) : _mm256_and_si256(v0, high));
          w1 = _mm256_castsi256_ps(low ? _mm256_slli_epi32(v1, 16) : _mm256_and_si256(v1, high));
        } else {
          w0 = widen8<D>(w[p] + off);
          w1 = widen8<D>(w[p] + off + 8 * kEs);
        }
        const int h0 = kPaired ? h : 0;
        for (int t = 0; t < MR; ++t) {
          const __m256 xb = _mm256_broadcast_ss(x + t * a.ldx + (k - a.k0) * a.ldk);
          acc[t][p][h0] = _mm256_fmadd_ps(w0, xb, acc[t][p][h0]);
          acc[t][p1][h1] = _mm256_fmadd_ps(w1, xb, acc[t][p1][h1]);
        }
      }
  }
  for (int p = 0; p < NP; ++p)
    for (int h = 0; h < 2; ++h) {
      const std::int64_t o = p * P + h * 8;
      if (a.last) {
        const __m256 sc = a.scales ? _mm256_loadu_ps(a.scales + o) : _mm256_setzero_ps();
        const __m256 b = a.bias ? _mm256_maskload_ps(a.bias + o, mask[p][h]) : _mm256_setzero_ps();
        for (int t = 0; t < MR; ++t) {
          if (a.scales) acc[t][p][h] = _mm256_mul_ps(acc[t][p][h], sc);
          if (a.bias) acc[t][p][h] = _mm256_add_ps(acc[t][p][h], b);
        }
      }
      for (int t = 0; t < MR; ++t)
        _mm256_maskstore_ps(a.y + t * a.ldy + o, mask[p][h], acc[t][p][h]);
    }
}

// --- dispatch
// -------------------------------------------------------------------------------------

using TileFn = void (*)(const TileArgs&);

// Token blocks (MR) each ISA runs, largest first, and the most panels (NP) a block of MR tokens
// takes at once: MR x NP accumulators must fit the vector registers (32 zmm, 16 ymm). A block
// that takes the whole group (4 panels) reads it as one stream; a block of 12 reads it as two
// half-lines passes, which costs nothing when the weights come from L1 (prefill's k blocks).
constexpr std::array<int, 4> kMrAvx512{6, 4, 2, 1};
constexpr std::array<int, 4> kMrAvx2{6, 4, 2, 1};
constexpr int max_np(Isa isa, int mr) {
  if (isa == Isa::kAvx512) return mr <= 6 ? 4 : 2;
  return mr == 1 ? 4 : mr == 2 ? 2 : 1;
}

template <DType D, int MR, int NP>
constexpr TileFn tile_fn(Isa isa) {
  if (NP > max_np(isa, MR)) return nullptr;
  if (isa == Isa::kAvx512) return &tile_avx512<D, MR, NP>;
  return &tile_avx2<D, MR, NP>;
}

template <DType D, int MR>
TileFn pick_np(Isa isa, int np) {
  switch (np) {
    case 4:
      return tile_fn<D, MR, 4>(isa);
    case 2:
      return tile_fn<D, MR, 2>(isa);
    default:
      return tile_fn<D, MR, 1>(isa);
  }
}

template <DType D>
TileFn pick(Isa isa, int mr, int np) {
  switch (mr) {
    case 12:
      return isa == Isa::kAvx512 ? pick_np<D, 12>(isa, np) : nullptr;
    case 6:
      return pick_np<D, 6>(isa, np);
    case 4:
      return pick_np<D, 4>(isa, np);
    case 2:
      return pick_np<D, 2>(isa, np);
    default:
      return pick_np<D, 1>(isa, np);
  }
}

TileFn pick(Isa isa, DType d, int mr, int np) {
  switch (d) {
    case DType::F32:
      return pick<DType::F32>(isa, mr, np);
    case DType::BF16:
      return pick<DType::BF16>(isa, mr, np);
    case DType::F16:
      return pick<DType::F16>(isa, mr, np);
    case DType::I8:
      return pick<DType::I8>(isa, mr, np);
    case DType::F8E4M3:
      return pick<DType::F8E4M3>(isa, mr, np);
  }
  return nullptr;
}

int block_tokens(Isa isa, std::int64_t left) {
  if (isa == Isa::kAvx512) {
    for (int mr : kMrAvx512)
      if (mr <= left) return mr;
  } else if (isa == Isa::kAvx2) {
    for (int mr : kMrAvx2)
      if (mr <= left) return mr;
  }
  return 1;
}

}  // namespace

void pack_panels(const Weight& host, DType dtype, void* dst, float* scales,
                 std::int64_t group_begin, std::int64_t group_end) {
  const std::int64_t K = host.cols, N = host.rows, panels = panel_count(N);
  const std::size_t in_es = dtype_size(host.dtype), out_es = dtype_size(dtype);
  const auto* src = static_cast<const std::byte*>(host.data);
  std::vector<std::uint8_t> codes;  // one row's, quantized
  for (std::int64_t g = group_begin; g < group_end; ++g) {
    const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
    auto* group =
        static_cast<std::byte*>(dst) + static_cast<std::size_t>(g * kGroupPanels * P * K) * out_es;
    for (std::int64_t j = 0; j < gn * P; ++j) {  // row r of the group: panel j / 16, lane j % 16
      const std::int64_t r = g * kGroupRows + j;
      const std::byte* row = src + static_cast<std::size_t>(r * K) * in_es;
      // Element (r, k) sits at k * gn * 16 + lane_in_group(j).
      std::byte* lane = group + static_cast<std::size_t>(lane_in_group(dtype, gn, j)) * out_es;
      const std::size_t k_step = static_cast<std::size_t>(gn * P) * out_es;
      if (dtype != DType::I8 && dtype != DType::F8E4M3) {
        for (std::int64_t k = 0; k < K; ++k) {
          std::byte* to = lane + static_cast<std::size_t>(k) * k_step;
          if (r < N)
            std::memcpy(to, row + static_cast<std::size_t>(k) * in_es, out_es);
          else
            std::memset(to, 0, out_es);
        }
        continue;
      }
      // The shared quantizer (kernels/quantize.h), so every backend holds the same codes; a
      // padding row is all zero, with scale 0.
      codes.assign(static_cast<std::size_t>(K), 0);
      scales[r] = r < N ? quantize_row(host.dtype, row, K, dtype, r, codes.data()) : 0.0f;
      for (std::int64_t k = 0; k < K; ++k)
        std::memcpy(lane + static_cast<std::size_t>(k) * k_step,
                    &codes[static_cast<std::size_t>(k)], 1);
    }
  }
}

namespace {

// How linear_panels blocks a call: k units, the tiles' ISA, k blocks and token passes.
struct Blocking {
  bool pairs, quads, units32;
  std::int64_t K;  // units of k: columns, or pairs / quads of them
  bool fast;       // the CPU has the dot-product instruction (else the scalar tiles)
  Isa tiles;
  bool packed_x;  // more than 4 tokens: inputs copied k-major
  std::int64_t kc, tokens_per_pass;
};

Blocking blocking(Isa isa, const Weight& w, std::int64_t n) {
  Blocking b{};
  // kPanels16Pairs / Quads: a k unit is 2 bf16 or 4 int8 columns, 4 bytes of each row, and each
  // float of x holds that many inputs.
  b.pairs = w.layout == WeightLayout::kPanels16Pairs;
  b.quads = w.layout == WeightLayout::kPanels16Quads;
  b.units32 = b.pairs || b.quads;
  b.K = b.pairs ? pair_count(w.cols) : b.quads ? quad_count(w.cols) : w.cols;
  b.fast = isa == Isa::kAvx512 && (b.pairs   ? has_avx512_bf16()
                                   : b.quads ? has_avx512_vnni()
                                             : true);
  b.tiles = b.units32 && !b.fast ? Isa::kPortable : isa;
  // Up to 4 tokens (decode) stream each panel once over all of k, reading x in place. More
  // tokens copy their inputs k-major first, a block of k at a time, and reuse each loaded weight
  // from L1 for every token block: rows of x lie cols * 4 bytes apart, which for power-of-two
  // widths puts a dozen of them in one L1 set, so reading them in place thrashes.
  // Blocks of k keep the same bytes of weights whatever a unit holds (pairs: half the units).
  b.packed_x = n > 4;
  const std::int64_t kblock = b.units32 ? kKBlock / 2 : kKBlock;
  b.kc = !b.packed_x ? std::max<std::int64_t>(b.K, 1) : n <= 12 ? kXpackFloats / 12 : kblock;
  b.tokens_per_pass = !b.packed_x ? n : n <= 12 ? n : kXpackFloats / kblock;
  return b;
}

// Tokens in the next register tile, of `left`. int8 tiles take at most 4 (16 accumulators):
// with 6 x 4, GCC 12 keeps vpdpbusd's accumulators on the stack (measured from L1: 190 against
// 360 G int8 multiply-adds per second per core).
int block_for(const Blocking& b, std::int64_t left) {
  return block_tokens(b.tiles, b.quads && b.fast ? std::min<std::int64_t>(left, 4) : left);
}

// Token block [t0, t0 + mr) of the pass [s0, s1) of k block [k0, k1), k-major, at `dst`.
void copy_block(const float* x, std::int64_t K, std::int64_t t0, int mr, std::int64_t k0,
                std::int64_t k1, float* dst) {
  for (std::int64_t k = k0; k < k1; ++k)
    for (int t = 0; t < mr; ++t) dst[(k - k0) * mr + t] = x[(t0 + t) * K + k];
}

}  // namespace

std::int64_t input_blocks(Isa isa, const Weight& w, std::int64_t n) {
  const Blocking b = blocking(isa, w, n);
  return b.packed_x ? (b.K + b.kc - 1) / b.kc : 0;
}

void pack_inputs(Isa isa, const Weight& w, const float* x, std::int64_t n, float* out,
                 std::int64_t block_begin, std::int64_t block_end) {
  const Blocking b = blocking(isa, w, n);
  for (std::int64_t kb = block_begin; kb < block_end; ++kb) {
    const std::int64_t k0 = kb * b.kc, k1 = std::min(b.K, k0 + b.kc);
    for (std::int64_t s0 = 0; s0 < n; s0 += b.tokens_per_pass) {
      const std::int64_t s1 = std::min(n, s0 + b.tokens_per_pass);
      for (std::int64_t t0 = s0; t0 < s1;) {
        const int mr = block_for(b, s1 - t0);
        copy_block(x, b.K, t0, mr, k0, k1, out + k0 * n + t0 * (k1 - k0));
        t0 += mr;
      }
    }
  }
}

void linear_panels(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y, std::int64_t group_begin, std::int64_t group_end, bool prefetch,
                   const float* x_scales, const float* x_packed) {
  const Blocking bl = blocking(isa, w, n);
  const bool pairs = bl.pairs, quads = bl.quads, fast = bl.fast;
  const std::int64_t K = bl.K, N = w.rows, panels = panel_count(N);
  const auto es = bl.units32 ? 4 : static_cast<std::int64_t>(dtype_size(w.dtype));
  const auto* base = static_cast<const std::byte*>(w.data);
  const Isa tiles = bl.tiles;
  // Row sums of the codes follow the scales (pack_int8_quads).
  const auto* row_sums =
      quads ? reinterpret_cast<const std::int32_t*>(w.scales + panels * P) : nullptr;
  const bool packed_x = bl.packed_x;
  const std::int64_t kc = bl.kc, tokens_per_pass = bl.tokens_per_pass;
  // Inputs packed here, a pass at a time, unless the caller packed them all once (pack_inputs).
  alignas(64) float xp[kXpackFloats];
  for (std::int64_t k0 = 0; k0 < K || k0 == 0; k0 += kc) {
    const std::int64_t k1 = std::min(K, k0 + kc);
    for (std::int64_t s0 = 0; s0 < n; s0 += tokens_per_pass) {
      const std::int64_t s1 = std::min(n, s0 + tokens_per_pass);
      if (packed_x && !x_packed) {  // token block of the pass: [k1 - k0][mr] at xp + t0 * kc
        for (std::int64_t t0 = s0; t0 < s1;) {
          const int mr = block_for(bl, s1 - t0);
          copy_block(x, K, t0, mr, k0, k1, xp + (t0 - s0) * kc);
          t0 += mr;
        }
      }
      for (std::int64_t g = group_begin; g < group_end; ++g) {
        const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
        const std::byte* group = base + g * kGroupPanels * P * K * es;
        for (std::int64_t t0 = s0; t0 < s1;) {
          const int mr = block_for(bl, s1 - t0);
          const float* xt = x_packed   ? x_packed + k0 * n + t0 * (k1 - k0)
                            : packed_x ? xp + (t0 - s0) * kc
                                       : x + t0 * K + k0;
          for (std::int64_t q = 0; q < gn;) {  // panel q of the group
            int np = tiles == Isa::kPortable
                         ? 1
                         : std::min<int>(max_np(tiles, mr), static_cast<int>(gn - q));
            np = np >= 4 ? 4 : np >= 2 ? 2 : 1;
            const std::int64_t p = g * kGroupPanels + q;
            const std::int64_t row0 = p * P;
            // Tiles start on pairs (q is even whenever np >= 2); a single panel with a partner
            // is read as one half of the pair.
            Pairing pairing = Pairing::kNatural;
            if (!pairs && w.dtype == DType::BF16 && (q | 1) < gn)
              pairing = np >= 2 ? Pairing::kPairs : q % 2 ? Pairing::kHigh : Pairing::kLow;
            const TileArgs a{xt,
                             packed_x ? 1 : K,
                             packed_x ? mr : 1,
                             group + (pairing == Pairing::kHigh ? q - 1 : q) * P * es,
                             P * es,
                             gn * P * es,
                             k0,
                             k1,
                             y + t0 * N + row0,
                             N,
                             N - row0,
                             k0 == 0,
                             k1 == K,
                             w.scales ? w.scales + row0 : nullptr,
                             x_scales ? x_scales + t0 : nullptr,
                             row_sums ? row_sums + row0 : nullptr,
                             bias ? bias + row0 : nullptr,
                             pairing,
                             prefetch,
                             packed_x && n <= 64 && t0 == s0 && g + 1 < group_end
                                 ? kGroupPanels * P * K * es
                                 : 0};
            if (pairs)
              fast ? pick_dot<Dot::kBf16>(mr, np)(a) : tile_bf16_dot_portable(a, mr, np);
            else if (quads)
              fast ? pick_dot<Dot::kInt8>(mr, np)(a) : tile_int8_dot_portable(a, mr, np);
            else if (isa == Isa::kPortable)
              tile_portable(w.dtype, a, mr, np);
            else
              pick(isa, w.dtype, mr, np)(a);
            q += np;
          }
          t0 += mr;
        }
      }
    }
    if (K == 0) break;
  }
}

void linear_rows_scalar(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y, std::int64_t row_begin, std::int64_t row_end) {
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t r = row_begin; r < row_end; ++r) {
      float acc = 0.0f;
      for (std::int64_t k = 0; k < w.cols; ++k)
        acc = std::fma(element(w.dtype, w.data, r * w.cols + k), x[t * w.cols + k], acc);
      if (w.scales) acc = acc * w.scales[r];
      if (bias) acc = acc + bias[r];
      y[t * w.rows + r] = acc;
    }
}

float weight_element(const Weight& w, std::int64_t r, std::int64_t k) {
  std::int64_t i = r * w.cols + k;
  if (w.layout == WeightLayout::kPanels16Pairs) {
    const std::int64_t g = r / kGroupRows, j = r % kGroupRows;
    const std::int64_t gn = std::min(kGroupPanels, panel_count(w.rows) - g * kGroupPanels);
    i = g * kGroupRows * 2 * pair_count(w.cols) + ((k / 2) * gn * P + j) * 2 + k % 2;
  } else if (w.layout == WeightLayout::kPanels16Quads) {
    const std::int64_t g = r / kGroupRows, j = r % kGroupRows;
    const std::int64_t gn = std::min(kGroupPanels, panel_count(w.rows) - g * kGroupPanels);
    i = g * kGroupRows * 4 * quad_count(w.cols) + ((k / 4) * gn * P + j) * 4 + k % 4;
  } else if (w.layout == WeightLayout::kPanels16) {
    const std::int64_t g = r / kGroupRows, j = r % kGroupRows;
    const std::int64_t gn = std::min(kGroupPanels, panel_count(w.rows) - g * kGroupPanels);
    i = g * kGroupRows * w.cols + k * gn * P + lane_in_group(w.dtype, gn, j);
  }
  const float v = element(w.dtype, w.data, i);
  return w.scales ? v * w.scales[r] : v;
}

}  // namespace saker::cpu
