// AMX tiles for bf16 dot products (kPanels16Pairs, cpu/linear.h), Sapphire Rapids and newer.
// tdpbf16ps sums a tile's 16 column pairs in its own order, not vdpbf16ps' chain, so the result
// depends on whether a call has enough tokens to take this path: it runs only when batch
// invariance is off (`--no-batch-invariant`), for calls of 16 tokens or more. Compile-tested on
// machines without AMX; tests/test_kernels.cpp checks it against the double reference where the
// CPU has it.
#include "kernels/cpu/linear_amx.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <algorithm>
#include <array>
#include <cstring>

namespace saker::cpu {
namespace {

constexpr std::int64_t P = kPanelRows;
constexpr int kTokens = 16;  // tokens per tile (A and C rows)
constexpr int kPairs = 16;   // column pairs per tile step (A's 64-byte rows, B's rows)

// The 64-byte tile configuration (palette 1): C tiles 0-3 (tokens x 16 rows of fp32), A tile 4
// (tokens x pairs), B tile 5 (pairs x 16 rows of a panel).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::array<std::uint8_t, 14> reserved{};
  std::array<std::uint16_t, 16> colsb{};
  std::array<std::uint8_t, 16> rows{};
};
static_assert(sizeof(TileConfig) == 64);

bool os_grants_amx() {
  // Linux hands out the tile data state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}

bool cpu_has_amx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
  return tile && bf16;
}

#define SAKER_AMX __attribute__((target("amx-tile,amx-bf16,avx512f")))

SAKER_AMX void configure(int tokens, int pairs) {
  TileConfig c;
  for (int t = 0; t < 4; ++t) {
    c.rows[t] = static_cast<std::uint8_t>(tokens);
    c.colsb[t] = 64;
  }
  c.rows[4] = static_cast<std::uint8_t>(tokens);
  c.colsb[4] = static_cast<std::uint16_t>(4 * pairs);
  c.rows[5] = static_cast<std::uint8_t>(pairs);
  c.colsb[5] = 64;
  _tile_loadconfig(&c);
}

// One C tile's result: `tokens` x 16 rows, of which `valid` exist, plus the bias, into y.
void store_rows(const float* c, int tokens, std::int64_t valid, const float* bias, float* y,
                std::int64_t ldy) {
  for (int t = 0; t < tokens; ++t)
    for (std::int64_t i = 0; i < valid; ++i)
      y[t * ldy + i] = bias ? c[t * P + i] + bias[i] : c[t * P + i];
}

// Up to 16 tokens x one group (gn panels), all of k: tiles 0..gn-1 accumulate. The last step of
// k, when the pairs do not fill a tile, reads zero-padded copies: loading another configuration
// would zero the accumulators.
SAKER_AMX void group_tile(const float* x, std::int64_t kp_total, int tokens, const std::byte* group,
                          std::int64_t gn, const float* bias, float* y, std::int64_t ldy,
                          std::int64_t rows_left) {
  const std::int64_t k_step = gn * P * 4;
  const auto ldx = static_cast<long>(kp_total * 4);
  configure(tokens, kPairs);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  alignas(64) float a_pad[kTokens * kPairs];
  alignas(64) std::byte b_pad[4][kPairs * 64];
  for (std::int64_t k0 = 0; k0 < kp_total; k0 += kPairs) {
    const std::int64_t pairs = std::min<std::int64_t>(kPairs, kp_total - k0);
    const std::byte* b = group + k0 * k_step;
    long b_stride = static_cast<long>(k_step);
    if (pairs == kPairs) {
      _tile_loadd(4, x + k0, ldx);
    } else {
      std::fill(std::begin(a_pad), std::end(a_pad), 0.0f);
      for (int t = 0; t < tokens; ++t)
        std::memcpy(a_pad + t * kPairs, x + t * kp_total + k0, static_cast<std::size_t>(pairs) * 4);
      _tile_loadd(4, a_pad, kPairs * 4);
      for (std::int64_t p = 0; p < gn; ++p) {
        std::memset(b_pad[p], 0, sizeof b_pad[p]);
        for (std::int64_t r = 0; r < pairs; ++r)
          std::memcpy(b_pad[p] + r * 64, b + r * k_step + p * 64, 64);
      }
      b_stride = 64;
    }
    // Panel p's rows: at p * 64 bytes in the group, or in its own padded copy.
    const auto panel = [&](std::int64_t p) { return pairs == kPairs ? b + p * 64 : b_pad[p]; };
    // Tile numbers are immediates: one load and product per panel, written out.
    _tile_loadd(5, panel(0), b_stride);
    _tile_dpbf16ps(0, 4, 5);
    if (gn > 1) {
      _tile_loadd(5, panel(1), b_stride);
      _tile_dpbf16ps(1, 4, 5);
    }
    if (gn > 2) {
      _tile_loadd(5, panel(2), b_stride);
      _tile_dpbf16ps(2, 4, 5);
    }
    if (gn > 3) {
      _tile_loadd(5, panel(3), b_stride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  alignas(64) float c[kTokens * P];
  for (std::int64_t p = 0; p < gn; ++p) {
    switch (p) {
      case 0:
        _tile_stored(0, c, P * 4);
        break;
      case 1:
        _tile_stored(1, c, P * 4);
        break;
      case 2:
        _tile_stored(2, c, P * 4);
        break;
      default:
        _tile_stored(3, c, P * 4);
        break;
    }
    const std::int64_t valid = std::clamp<std::int64_t>(rows_left - p * P, 0, P);
    store_rows(c, tokens, valid, bias ? bias + p * P : nullptr, y + p * P, ldy);
  }
}

}  // namespace

bool amx_available() {
  // Asked once: the answer (and the kernel's permission) holds for the process.
  static const bool ok = cpu_has_amx() && os_grants_amx();
  return ok;
}

SAKER_AMX void linear_pairs_amx(const float* x, std::int64_t n, const Weight& w, const float* bias,
                                float* y, std::int64_t group_begin, std::int64_t group_end) {
  const std::int64_t KP = pair_count(w.cols), N = w.rows, panels = panel_count(N);
  const auto* base = static_cast<const std::byte*>(w.data);
  for (std::int64_t g = group_begin; g < group_end; ++g) {
    const std::int64_t gn = std::min(kGroupPanels, panels - g * kGroupPanels);
    const std::byte* group = base + g * kGroupRows * KP * 4;
    const std::int64_t row0 = g * kGroupRows;
    for (std::int64_t t0 = 0; t0 < n; t0 += kTokens) {
      const int tokens = static_cast<int>(std::min<std::int64_t>(kTokens, n - t0));
      group_tile(x + t0 * KP, KP, tokens, group, gn, bias ? bias + row0 : nullptr,
                 y + t0 * N + row0, N, N - row0);
    }
  }
  _tile_release();
}

}  // namespace saker::cpu
