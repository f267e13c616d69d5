#include "kernels/cpu/linear.h"

#include "kernels/quantize.h"

// GCC 12's AVX-512 conversion intrinsics start from a self-initialised "undefined" vector and
// warn about it at every use (GCC bug 105593); nothing here reads an uninitialised value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace saker::cpu {
namespace {

constexpr std::int64_t P = kPanelRows;

// Cache blocking of k for many tokens: a tile's kc x 16 NP weights and MR x kc inputs stay in L1
// while it runs. Partial sums wait in y between blocks, which changes no rounding (fp32 either
// way).
constexpr std::int64_t kKBlock = 256;
// Inputs copied k-major per pass (96 KiB, on the stack): 96 tokens x kKBlock, or 12 x 2048.
constexpr std::int64_t kXpackFloats = 96 * kKBlock;
// Without huge pages weights are fetched this far ahead of use: the hardware prefetchers stop
// at every 4 KiB page boundary. On 2 MiB pages they keep up with a group's stream by themselves,
// and software prefetches there only compete with them (measured: 0.67-0.80 of the read
// bandwidth instead of 0.85-0.89 when the host's bandwidth peaks).
constexpr std::int64_t kPrefetchBytes = 2048;

// How a tile's panels are stored (bf16 only; other types are always kNatural). bf16 panels go
// in pairs, interleaved element by element: the 32-bit lane i of a pair's k-row holds row i of
// its first panel in the low half and row i of the second in the high half. A shift left by 16
// then gives the first panel as fp32 and a mask of the high half the second: two single-cycle
// integer operations per 32 weights instead of two zero-extending shuffles and two shifts. A
// group's last panel is alone (natural order) when the group has an odd number of panels.
enum class Pairing { kNatural, kPairs, kLow, kHigh };

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

// One tile: MR tokens x NP panels over k in [k0, k1).
struct TileArgs {
  // x[t, k] of the tile is x[t * ldx + (k - k0) * ldk]: a token's row of the input (ldk 1), or
  // the block packed k-major (ldx 1, ldk MR), whose MR inputs of one k share a cache line.
  const float* x;
  std::int64_t ldx, ldk;
  const std::byte* w;               // the tile's first panel at k = 0
  std::int64_t panel_step, k_step;  // bytes to the next panel at the same k, and to the next k
  std::int64_t k0, k1;
  float* y;  // token 0, output row `row0`; row stride ldy
  std::int64_t ldy;
  std::int64_t valid;   // rows of the tile that exist (the rest are padding)
  bool first, last;     // first: start from zero; last: apply the epilogue
  const float* scales;  // at row0 (padded to whole panels), or null
  const float* bias;    // at row0, or null
  Pairing pairing;      // kLow / kHigh: w is the pair's start, the tile is one of its panels
  bool prefetch;        // software prefetch (weights on 4 KiB pages)
};

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

#define SAKER_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

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
  for (int p = 0; p < NP; ++p) {
    const std::int64_t v = std::clamp<std::int64_t>(a.valid - p * P, 0, P);
    mask[p] = static_cast<__mmask16>((1u << v) - 1u);
  }
  __m512 acc[MR][NP];
  for (int t = 0; t < MR; ++t)
    for (int p = 0; p < NP; ++p)
      acc[t][p] =
          a.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[p], a.y + t * a.ldy + p * P);
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
  for (int p = 0; p < NP; ++p) {
    if (a.last) {
      const __m512 sc = a.scales ? _mm512_loadu_ps(a.scales + p * P) : _mm512_setzero_ps();
      const __m512 b =
          a.bias ? _mm512_maskz_loadu_ps(mask[p], a.bias + p * P) : _mm512_setzero_ps();
      for (int t = 0; t < MR; ++t) {
        if (a.scales) acc[t][p] = _mm512_mul_ps(acc[t][p], sc);
        if (a.bias) acc[t][p] = _mm512_add_ps(acc[t][p], b);
      }
    }
    for (int t = 0; t < MR; ++t) _mm512_mask_storeu_ps(a.y + t * a.ldy + p * P, mask[p], acc[t][p]);
  }
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
constexpr std::array<int, 5> kMrAvx512{12, 6, 4, 2, 1};
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

void linear_panels(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y, std::int64_t group_begin, std::int64_t group_end, bool prefetch) {
  const std::int64_t K = w.cols, N = w.rows, panels = panel_count(N);
  const auto es = static_cast<std::int64_t>(dtype_size(w.dtype));
  const auto* base = static_cast<const std::byte*>(w.data);
  // Up to 4 tokens (decode) stream each panel once over all of k, reading x in place. More
  // tokens copy their inputs k-major first, a block of k at a time, and reuse each loaded weight
  // from L1 for every token block: rows of x lie cols * 4 bytes apart, which for power-of-two
  // widths puts a dozen of them in one L1 set, so reading them in place thrashes. The copy is
  // made once per block and shared by all the slice's panels, so it costs little.
  const bool packed_x = n > 4;
  const std::int64_t kc = !packed_x ? std::max<std::int64_t>(K, 1) : n <= 12 ? 2048 : kKBlock;
  const std::int64_t tokens_per_pass = !packed_x ? n : n <= 12 ? n : kXpackFloats / kKBlock;
  alignas(64) float xp[kXpackFloats];
  for (std::int64_t k0 = 0; k0 < K || k0 == 0; k0 += kc) {
    const std::int64_t k1 = std::min(K, k0 + kc);
    for (std::int64_t s0 = 0; s0 < n; s0 += tokens_per_pass) {
      const std::int64_t s1 = std::min(n, s0 + tokens_per_pass);
      if (packed_x) {  // token block b of the pass: [k1 - k0][mr] at xp + its first token * kc
        for (std::int64_t t0 = s0; t0 < s1;) {
          const int mr = block_tokens(isa, s1 - t0);
          float* dst = xp + (t0 - s0) * kc;
          for (std::int64_t k = k0; k < k1; ++k)
            for (int t = 0; t < mr; ++t) dst[(k - k0) * mr + t] = x[(t0 + t) * K + k];
          t0 += mr;
        }
      }
      for (std::int64_t g = group_begin; g < group_end; ++g) {
        const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
        const std::byte* group = base + g * kGroupPanels * P * K * es;
        for (std::int64_t t0 = s0; t0 < s1;) {
          const int mr = block_tokens(isa, s1 - t0);
          const float* xt = packed_x ? xp + (t0 - s0) * kc : x + t0 * K + k0;
          for (std::int64_t q = 0; q < gn;) {  // panel q of the group
            int np = isa == Isa::kPortable
                         ? 1
                         : std::min<int>(max_np(isa, mr), static_cast<int>(gn - q));
            np = np >= 4 ? 4 : np >= 2 ? 2 : 1;
            const std::int64_t p = g * kGroupPanels + q;
            const std::int64_t row0 = p * P;
            // Tiles start on pairs (q is even whenever np >= 2); a single panel with a partner
            // is read as one half of the pair.
            Pairing pairing = Pairing::kNatural;
            if (w.dtype == DType::BF16 && (q | 1) < gn)
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
                             bias ? bias + row0 : nullptr,
                             pairing,
                             prefetch};
            if (isa == Isa::kPortable)
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
  if (w.layout == WeightLayout::kPanels16) {
    const std::int64_t g = r / kGroupRows, j = r % kGroupRows;
    const std::int64_t gn = std::min(kGroupPanels, panel_count(w.rows) - g * kGroupPanels);
    i = g * kGroupRows * w.cols + k * gn * P + lane_in_group(w.dtype, gn, j);
  }
  const float v = element(w.dtype, w.data, i);
  return w.scales ? v * w.scales[r] : v;
}

}  // namespace saker::cpu
