// Internal to the CPU linear kernels (linear.cpp, linear_bf16_dot.cpp): what one register tile is
// given, and the AVX-512 load and store of its accumulators that every tile kernel shares.
#pragma once

// GCC 12's AVX-512 conversion intrinsics start from a self-initialised "undefined" vector and
// warn about it at every use (GCC bug 105593); nothing here reads an uninitialised value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/linear.h"

namespace saker::cpu::detail {

constexpr std::int64_t P = kPanelRows;

// Without huge pages weights are fetched this far ahead of use: the hardware prefetchers stop
// at every 4 KiB page boundary. On 2 MiB pages they keep up with a group's stream by themselves,
// and software prefetches there only compete with them (measured: 0.67-0.80 of the read
// bandwidth instead of 0.85-0.89 when the host's bandwidth peaks).
constexpr std::int64_t kPrefetchBytes = 2048;

// How a tile's panels are stored (bf16 kPanels16 only; other forms are always kNatural). bf16
// panels go in pairs, interleaved element by element: the 32-bit lane i of a pair's k-row holds
// row i of its first panel in the low half and row i of the second in the high half. A shift
// left by 16 then gives the first panel as fp32 and a mask of the high half the second: two
// single-cycle integer operations per 32 weights instead of two zero-extending shuffles and two
// shifts. A group's last panel is alone (natural order) when the group has an odd number.
enum class Pairing { kNatural, kPairs, kLow, kHigh };

// One tile: MR tokens x NP panels over k units [k0, k1) (a unit is one column, or for
// kPanels16Pairs a pair of columns).
struct TileArgs {
  // x[t, k] of the tile is x[t * ldx + (k - k0) * ldk]: a token's row of the input (ldk 1), or
  // the block packed k-major (ldx 1, ldk MR), whose MR inputs of one k share a cache line. For
  // kPanels16Pairs each float holds the bits of two bf16 inputs (to_bf16_pairs).
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
  // kPanels16Quads: each token's activation scale (x_scales[t] for the tile's token t), and
  // each row's sum of weight codes at row0 (the offset that unsigned activations add).
  const float* x_scales;
  const std::int32_t* row_sums;
  const float* bias;  // at row0, or null
  Pairing pairing;    // kLow / kHigh: w is the pair's start, the tile is one of its panels
  bool prefetch;      // software prefetch (weights on 4 KiB pages)
  // Bytes from the tile's weights to the same k block of the next group, fetched into L2 while
  // this one computes (0: none). A few tokens' tiles wait on memory otherwise: the next group's
  // block lies a whole group away, where the hardware prefetchers do not look.
  std::int64_t ahead;
};

using TileFn = void (*)(const TileArgs&);

#define SAKER_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define SAKER_INLINE inline __attribute__((always_inline))

// The lines of the next group's block at this k (TileArgs::ahead).
SAKER_INLINE void fetch_ahead(const TileArgs& a, std::int64_t off, std::int64_t bytes) {
  if (a.ahead)
    for (std::int64_t b = 0; b < bytes; b += 64)
      _mm_prefetch(reinterpret_cast<const char*>(a.w + a.ahead + off + b), _MM_HINT_T1);
}

// Lanes of each panel that hold real rows.
template <int NP>
SAKER_AVX512 SAKER_INLINE void tile_masks(const TileArgs& a, __mmask16 (&mask)[NP]) {
  for (int p = 0; p < NP; ++p) {
    const std::int64_t v = std::clamp<std::int64_t>(a.valid - p * P, 0, P);
    mask[p] = static_cast<__mmask16>((1u << v) - 1u);
  }
}

// Zero for the first k block, else the partial sums the previous block left in y.
template <int MR, int NP>
SAKER_AVX512 SAKER_INLINE void tile_load(const TileArgs& a, const __mmask16 (&mask)[NP],
                                         __m512 (&acc)[MR][NP]) {
  for (int t = 0; t < MR; ++t)
    for (int p = 0; p < NP; ++p)
      acc[t][p] =
          a.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[p], a.y + t * a.ldy + p * P);
}

// The epilogue after the last k block (row scale, then bias), and the store.
template <int MR, int NP>
SAKER_AVX512 SAKER_INLINE void tile_store(const TileArgs& a, const __mmask16 (&mask)[NP],
                                          __m512 (&acc)[MR][NP]) {
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

// The dot-product tiles' k loop (kPanels16Pairs and Quads): each k unit loads the NP panels' 64
// bytes and broadcasts each token's input unit (a float's bits), then one vdpbf16ps or vpdpbusd
// per accumulator. The tiles that inline it take both extensions' target; each runs only its
// own instruction.
enum class Dot { kBf16, kInt8 };
#define SAKER_AVX512_DOT \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,avx2,fma,f16c")))

template <Dot D, int MR, int NP>
SAKER_AVX512_DOT SAKER_INLINE void dot_loop(const TileArgs& a, __m512 (&acc)[MR][NP]) {
  constexpr std::int64_t kPanel = 64;  // 16 rows x one unit (a pair of bf16 or four int8)
  for (std::int64_t k = a.k0; k < a.k1; ++k) {
    const std::int64_t off = k * a.k_step;
    if (a.prefetch)
      for (std::int64_t b = 0; b < NP * kPanel; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(a.w + off + b + kPrefetchBytes), _MM_HINT_T0);
    fetch_ahead(a, off, NP * kPanel);
    __m512i wv[NP];
    for (int p = 0; p < NP; ++p) wv[p] = _mm512_loadu_si512(a.w + off + p * kPanel);
    for (int t = 0; t < MR; ++t) {
      // A broadcast of the float holding the unit moves its bits unchanged.
      const __m512i xb = _mm512_castps_si512(_mm512_set1_ps(a.x[t * a.ldx + (k - a.k0) * a.ldk]));
      for (int p = 0; p < NP; ++p) {
        if constexpr (D == Dot::kBf16)
          acc[t][p] = _mm512_dpbf16_ps(acc[t][p], (__m512bh)wv[p], (__m512bh)xb);
        else  // the masked form: GCC 12 spills less around it
          acc[t][p] = _mm512_castsi512_ps(
              _mm512_mask_dpbusd_epi32(_mm512_castps_si512(acc[t][p]), 0xffff, xb, wv[p]));
      }
    }
  }
}

// One dot-product tile. int8 sums live in float registers as integer bits, so that the loads and
// stores above serve; between k blocks they wait in y as such. After the last block they become
// (sum - 128 * row_sum) * (x_scale * w_scale), and tile_store adds the bias.
template <Dot D, int MR, int NP>
SAKER_AVX512_DOT void dot_tile(const TileArgs& a) {
  __mmask16 mask[NP];
  tile_masks<NP>(a, mask);
  __m512 acc[MR][NP];
  tile_load<MR, NP>(a, mask, acc);
  dot_loop<D, MR, NP>(a, acc);
  TileArgs out = a;
  if constexpr (D == Dot::kInt8) {
    if (a.last)
      for (int p = 0; p < NP; ++p) {
        const __m512i offset =
            _mm512_mullo_epi32(_mm512_loadu_si512(a.row_sums + p * P), _mm512_set1_epi32(128));
        const __m512 ws = _mm512_loadu_ps(a.scales + p * P);
        for (int t = 0; t < MR; ++t) {
          const __m512 v =
              _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_castps_si512(acc[t][p]), offset));
          acc[t][p] = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(a.x_scales[t]), ws));
        }
      }
    out.scales = nullptr;  // applied above
  }
  tile_store<MR, NP>(out, mask, acc);
}

// The tile for MR tokens x NP panels (MR x NP accumulators in the 32 zmm registers, as
// linear.cpp's AVX-512 tiles: 4 panels up to 6 tokens, else 2).
template <Dot D, int MR>
TileFn pick_dot_np(int np) {
  if (np >= 4 && MR <= 6) return &dot_tile<D, MR, 4>;
  if (np >= 2) return &dot_tile<D, MR, 2>;
  return &dot_tile<D, MR, 1>;
}
template <Dot D>
TileFn pick_dot(int mr, int np) {
  switch (mr) {
    case 6:
      return pick_dot_np<D, 6>(np);
    case 4:
      return pick_dot_np<D, 4>(np);
    case 2:
      return pick_dot_np<D, 2>(np);
    default:
      return pick_dot_np<D, 1>(np);
  }
}

// The scalar references of the same arithmetic: kPanels16Pairs (linear_bf16_dot.cpp) and
// kPanels16Quads (linear_int8_dot.cpp).
void tile_bf16_dot_portable(const TileArgs& a, int mr, int np);
void tile_int8_dot_portable(const TileArgs& a, int mr, int np);

}  // namespace saker::cpu::detail
