// The skinny tensor-core kernel's index arithmetic (kernels/cuda/mma_layout.h) checked on the host:
// a warp's registers are filled exactly as the kernel fills them, an emulated mma.sync.m16n8k16
// reads them with the PTX ISA's fragment layout, and the four steps of a chunk must produce the
// plain dot products of the rows with the tokens. The GPU test (tests/gpu) checks the kernel
// itself against the CPU backend; this one runs everywhere, so a wrong permutation fails in CI.
#include <array>
#include <cstdint>
#include <random>

#include <catch2/catch.hpp>

#include "kernels/cuda/mma_layout.h"

using namespace saker::cuda::mma;

namespace {

constexpr int kLanes = 32;

}  // namespace

TEST_CASE("mma layout: a chunk's four steps give the rows' dot products with the tokens",
          "[kernels]") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-8, 8);  // products and sums exact in int64
  std::array<std::array<std::int64_t, kChunk>, kTileRows> w{};
  std::array<std::array<std::int64_t, kChunk>, kTileTokens> x{};
  for (auto& r : w)
    for (auto& v : r) v = small(rng);
  for (auto& r : x)
    for (auto& v : r) v = small(rng);

  std::array<std::array<std::int64_t, kTileTokens>, kTileRows> d{};
  std::array<int, kChunk> a_uses{}, b_uses{};
  for (int s = 0; s < kSteps; ++s) {
    // The fragments as the hardware sees them: logical A[16][16], B[16][8], each slot once.
    std::array<std::array<std::int64_t, 16>, kTileRows> a{};
    std::array<std::array<std::int64_t, kTileTokens>, 16> b{};
    std::array<std::array<int, 16>, kTileRows> a_set{};
    std::array<std::array<int, kTileTokens>, 16> b_set{};
    for (int lane = 0; lane < kLanes; ++lane) {
      const int first = kLaneElems * thread_in_group(lane);  // the lane's 16 loaded elements
      for (int reg = 0; reg < 4; ++reg)
        for (int h = 0; h < 2; ++h) {
          // The kernel: register `reg` is word lane_word(s, khalf) of row group (+ 8).
          const int row = group(lane) + 8 * a_reg_row(reg);
          const int e = first + 2 * lane_word(s, a_reg_khalf(reg)) + h;
          REQUIRE(e == chunk_element(lane, s, a_reg_khalf(reg), h));
          REQUIRE(row == a_row(lane, reg));  // the row PTX assigns the register to
          a[a_row(lane, reg)][a_k(lane, reg, h)] = w[row][e];
          ++a_set[a_row(lane, reg)][a_k(lane, reg, h)];
          if (row == 0) ++a_uses[e];
        }
      for (int reg = 0; reg < 2; ++reg)
        for (int h = 0; h < 2; ++h) {
          const int token = group(lane);
          const int e = first + 2 * lane_word(s, reg) + h;
          REQUIRE(token == b_token(lane));
          b[b_k(lane, reg, h)][b_token(lane)] = x[token][e];
          ++b_set[b_k(lane, reg, h)][b_token(lane)];
          if (token == 0) ++b_uses[e];
        }
    }
    for (const auto& r : a_set)
      for (const int c : r) REQUIRE(c == 1);
    for (const auto& r : b_set)
      for (const int c : r) REQUIRE(c == 1);
    for (int i = 0; i < kTileRows; ++i)
      for (int j = 0; j < kTileTokens; ++j)
        for (int k = 0; k < 16; ++k) d[i][j] += a[i][k] * b[k][j];
  }
  // Every element of the chunk entered exactly once, on both sides.
  for (int e = 0; e < kChunk; ++e) {
    CHECK(a_uses[e] == 1);
    CHECK(b_uses[e] == 1);
  }
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < kTileTokens; ++j) {
      std::int64_t want = 0;
      for (int k = 0; k < kChunk; ++k) want += w[i][k] * x[j][k];
      CHECK(d[i][j] == want);
    }
  // The accumulator's elements (PTX: c0, c1 at row group, tokens 2t and 2t + 1; c2, c3 at row
  // group + 8) cover the tile once.
  std::array<std::array<int, kTileTokens>, kTileRows> c_set{};
  for (int lane = 0; lane < kLanes; ++lane)
    for (int i = 0; i < 4; ++i) {
      CHECK(c_row(lane, i) == lane / 4 + (i >= 2 ? 8 : 0));
      CHECK(c_token(lane, i) == 2 * (lane % 4) + i % 2);
      ++c_set[c_row(lane, i)][c_token(lane, i)];
    }
  for (const auto& r : c_set)
    for (const int c : r) CHECK(c == 1);
}
