// The paged-attention rig the 16- and 8-bit KV kernel tests share (tests/test_kv_dtype.cpp,
// tests/test_kv_8bit.cpp): K/V over shuffled blocks for a few sequences, a step's tokens (each
// sequence's last position plus a prompt run of the longest), and the cache's widened values in
// fp32 (`kw`, `vw`: what the scalar reference reads). Each test fills the narrow cache itself.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/model/positions.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "tests/kernel_reference.h"

namespace saker::test {

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct PagedRig {
  AttentionShape shape;
  std::int64_t block;
  std::int64_t vectors = 0;  // head vectors in the pool: slots * kv_heads
  std::vector<float> qkv, slopes, kw, vw;
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<TokenPlace> places;

  PagedRig(std::int64_t heads, std::int64_t kv_heads, std::int64_t hd, std::int64_t block_size,
           bool alibi, std::mt19937& rng)
      : shape{heads, kv_heads, hd, nullptr}, block(block_size) {
    const std::vector<std::int64_t> lengths = {1, 17, 40, 100, 33};
    std::int64_t blocks = 2;
    for (auto n : lengths) blocks += (n + block - 1) / block;
    vectors = blocks * block * kv_heads;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::size_t next = 0;
    for (auto n : lengths) {
      std::vector<std::int32_t> table;
      for (std::int64_t b = 0; b < (n + block - 1) / block; ++b) table.push_back(ids[next++]);
      tables.push_back(std::move(table));
    }
    for (std::size_t q = 0; q < lengths.size(); ++q)
      places.push_back({static_cast<std::int32_t>(lengths[q] - 1), tables[q].data()});
    for (std::int64_t pos = 90; pos < 99; ++pos)
      places.push_back({static_cast<std::int32_t>(pos), tables[3].data()});
    qkv = ref::random_floats(places.size() * static_cast<std::size_t>(qkv_stride()), rng);
    slopes = alibi_slopes(heads);
    if (alibi) shape.alibi_slopes = slopes.data();
  }

  KvLayer widened_kv() { return {kw.data(), vw.data(), shape.kv_heads, shape.head_dim, block}; }
  std::int64_t qkv_stride() const { return shape.kv_heads * cpu::QkvLayout(shape).group_stride; }
  std::vector<float> run(CpuBackend& b, cpu::Isa isa, const KvLayer& kv) {
    b.force_isa(isa);
    std::vector<float> out(places.size() * static_cast<std::size_t>(shape.heads * shape.head_dim),
                           NAN);
    b.attention(qkv.data(), places, shape, kv, out.data());
    return out;
  }
  // Every `step`-th token attended alone gives the bits it has in `batched` (same kv).
  void check_alone_as_batched(CpuBackend& b, const KvLayer& kv, const std::vector<float>& batched,
                              std::size_t step) {
    const std::int64_t width = shape.heads * shape.head_dim;
    for (std::size_t i = 0; i < places.size(); i += step) {
      const std::vector<TokenPlace> place{places[i]};
      std::vector<float> alone(static_cast<std::size_t>(width), NAN);
      b.attention(qkv.data() + static_cast<std::int64_t>(i) * qkv_stride(), place, shape, kv,
                  alone.data());
      INFO("token " << i);
      CHECK(std::memcmp(alone.data(), batched.data() + static_cast<std::int64_t>(i) * width,
                        static_cast<std::size_t>(width) * sizeof(float)) == 0);
    }
  }
};

struct RigShape {
  std::int64_t heads, kv_heads, hd, block;
  bool alibi;
};
inline constexpr RigShape kRigShapes[] = {{8, 1, 64, 16, false}, {12, 3, 72, 16, false},
                                          {6, 6, 80, 16, true},  {9, 3, 20, 5, true},
                                          {3, 1, 33, 7, false},  {4, 2, 16, 16, true}};

}  // namespace saker::test
