// A KV cache in bf16 or fp16 (EngineOptions::kv_cache_dtype): kv_write rounds to nearest even,
// attention widens exactly and then does the fp32 cache's arithmetic, so
// - every ISA gives the portable path's bits, and those are the fp32 kernel's bits over the
//   rounded keys and values (the scalar reference);
// - a request's logits stay bit-identical alone, batched and chunked;
// - the logits stay close to the fp32 cache's on every fixture (bounds: docs/numerics.md).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <immintrin.h>

#include <catch2/catch.hpp>

#include "engine/model/falcon/falcon.h"
#include "engine/model/positions.h"
#include "kernel_reference.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "tests/batch_invariance.h"
#include "tests/golden.h"
#include "tests/kv_dtype_model.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;

namespace {

constexpr DType kHalfTypes[] = {DType::BF16, DType::F16};

std::uint16_t to_half(DType t, float f) {
  return t == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
}
float from_half(DType t, std::uint16_t h) {
  return t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

__attribute__((target("f16c"))) std::uint16_t hardware_f16(float f) {
  return static_cast<std::uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

// Paged K/V over shuffled blocks for a few sequences, a step's tokens (each sequence's last
// position plus a prompt run of the longest), and the same cache three ways: fp32 as drawn,
// 16-bit, and fp32 holding the 16-bit values widened.
struct Rig {
  AttentionShape shape;
  std::int64_t block;
  std::vector<float> k, v, qkv, slopes;
  std::vector<std::uint16_t> k16, v16;
  std::vector<float> kw, vw;  // k16, v16 widened
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<TokenPlace> places;

  Rig(std::int64_t heads, std::int64_t kv_heads, std::int64_t hd, std::int64_t block_size,
      bool alibi, DType dtype, std::mt19937& rng)
      : shape{heads, kv_heads, hd, nullptr}, block(block_size) {
    const std::vector<std::int64_t> lengths = {1, 17, 40, 100, 33};
    std::int64_t blocks = 2;
    for (auto n : lengths) blocks += (n + block - 1) / block;
    const std::int64_t row = kv_heads * hd;
    const auto slots = static_cast<std::size_t>(blocks * block * row);
    k.assign(slots, 0.0f);
    v.assign(slots, 0.0f);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    // Magnitudes from 1e-6 (fp16 subnormals) to 1e4, so rounding sees every kind of value.
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::uniform_int_distribution<int> e(-20, 13);
    auto draw = [&] { return d(rng) * std::ldexp(1.0f, e(rng) < 0 ? 0 : e(rng) - 13); };
    auto tiny = [&] { return d(rng) * 1e-6f; };
    std::size_t next = 0;
    for (auto n : lengths) {
      std::vector<std::int32_t> table;
      for (std::int64_t b = 0; b < (n + block - 1) / block; ++b) table.push_back(ids[next++]);
      tables.push_back(std::move(table));
    }
    for (std::size_t i = 0; i < slots; ++i) {
      k[i] = i % 17 == 0 ? tiny() : draw();
      v[i] = i % 13 == 0 ? tiny() : draw();
    }
    for (std::size_t q = 0; q < lengths.size(); ++q)
      places.push_back({static_cast<std::int32_t>(lengths[q] - 1), tables[q].data()});
    for (std::int64_t pos = 90; pos < 99; ++pos)
      places.push_back({static_cast<std::int32_t>(pos), tables[3].data()});
    const cpu::QkvLayout L(shape);
    qkv = ref::random_floats(places.size() * static_cast<std::size_t>(kv_heads * L.group_stride),
                             rng);
    slopes = alibi_slopes(heads);
    if (alibi) shape.alibi_slopes = slopes.data();
    for (std::size_t i = 0; i < slots; ++i) {
      k16.push_back(to_half(dtype, k[i]));
      v16.push_back(to_half(dtype, v[i]));
      kw.push_back(from_half(dtype, k16.back()));
      vw.push_back(from_half(dtype, v16.back()));
    }
  }
  KvLayer half_kv(DType t) {
    return {k16.data(), v16.data(), shape.kv_heads, shape.head_dim, block, t};
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
};

struct RigShape {
  std::int64_t heads, kv_heads, hd, block;
  bool alibi;
};
const RigShape kRigShapes[] = {{8, 1, 64, 16, false}, {12, 3, 72, 16, false}, {6, 6, 80, 16, true},
                               {9, 3, 20, 5, true},   {3, 1, 33, 7, false},   {4, 2, 16, 16, true}};

}  // namespace

TEST_CASE("f32_to_f16 rounds to nearest even like F16C", "[kernels][kv_dtype]") {
  if (!__builtin_cpu_supports("f16c")) return;  // nothing to compare with
  std::mt19937 rng(5);
  std::vector<float> values = {0.0f,     -0.0f,     1.0f,      65504.0f,       65519.99f,
                               65520.0f, -65520.0f, 1e-8f,     2.98e-8f,       2.99e-8f,
                               5.96e-8f, 6.1e-5f,   6.103e-5f, INFINITY,       -INFINITY,
                               NAN,      -NAN,      1e30f,     1.00048828125f, 1.00146484375f};
  for (int i = 0; i < 2000000; ++i)
    values.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
  for (std::uint32_t u = 0x33000000u; u < 0x39000000u; u += 0x1001u)
    values.push_back(std::bit_cast<float>(u));  // around the subnormal range, densely
  for (float f : values) {
    INFO(std::hexfloat << f);
    REQUIRE(f32_to_f16(f) == hardware_f16(f));
  }
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = f16_to_f32(static_cast<std::uint16_t>(h));
    if (!std::isnan(f)) REQUIRE(f32_to_f16(f) == h);  // every half round-trips
  }
}

TEST_CASE("16-bit KV attention is the fp32 kernel over the rounded cache, on every ISA",
          "[kernels][attention][kv_dtype]") {
  std::mt19937 rng(31);
  CpuBackend backend(2, 128, 1);
  for (const DType t : kHalfTypes)
    for (const RigShape& s : kRigShapes) {
      Rig rig(s.heads, s.kv_heads, s.hd, s.block, s.alibi, t, rng);
      // The scalar reference: the (double-checked) fp32 kernel on the widened values.
      const auto want = rig.run(backend, cpu::Isa::kPortable, rig.widened_kv());
      for (cpu::Isa isa : cpu::supported_isas()) {
        INFO(dtype_name(t) << " heads " << s.heads << " kv " << s.kv_heads << " hd " << s.hd
                           << " block " << s.block << " isa " << cpu::isa_name(isa));
        CHECK(same_bits(rig.run(backend, isa, rig.half_kv(t)), want));
        CHECK(same_bits(rig.run(backend, isa, rig.widened_kv()), want));
      }
    }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("16-bit KV attention of a token does not depend on its batch or threads",
          "[kernels][attention][kv_dtype]") {
  std::mt19937 rng(32);
  CpuBackend one(1, 128), two(2, 128, 1);
  for (const DType t : kHalfTypes)
    for (const RigShape& s : kRigShapes) {
      Rig rig(s.heads, s.kv_heads, s.hd, s.block, s.alibi, t, rng);
      for (cpu::Isa isa : cpu::supported_isas()) {
        INFO(dtype_name(t) << " heads " << s.heads << " hd " << s.hd << " isa "
                           << cpu::isa_name(isa));
        const auto batched = rig.run(two, isa, rig.half_kv(t));
        REQUIRE(same_bits(rig.run(one, isa, rig.half_kv(t)), batched));
        const std::int64_t width = s.heads * s.hd;
        for (std::size_t i = 0; i < rig.places.size(); ++i) {
          const std::vector<TokenPlace> place{rig.places[i]};
          std::vector<float> alone(static_cast<std::size_t>(width), NAN);
          two.attention(rig.qkv.data() + static_cast<std::int64_t>(i) * rig.qkv_stride(), place,
                        rig.shape, rig.half_kv(t), alone.data());
          REQUIRE(std::memcmp(alone.data(), batched.data() + static_cast<std::int64_t>(i) * width,
                              static_cast<std::size_t>(width) * sizeof(float)) == 0);
        }
      }
    }
  one.force_isa(cpu::detect_isa());
  two.force_isa(cpu::detect_isa());
}

TEST_CASE("kv_write rounds keys and values to the cache's dtype", "[kernels][kv_dtype]") {
  std::mt19937 rng(33);
  CpuBackend backend(2, 128, 1);
  const AttentionShape s{8, 2, 24, nullptr};
  const cpu::QkvLayout L(s);
  const std::int64_t block = 4, tokens = 11, row = s.kv_heads * s.head_dim;
  std::vector<std::int32_t> table = {2, 0, 3, 1};
  std::vector<TokenPlace> places;
  for (std::int64_t t = 0; t < tokens; ++t)
    places.push_back({static_cast<std::int32_t>(t + 3), table.data()});
  const auto qkv = ref::random_floats(
      static_cast<std::size_t>(tokens * s.kv_heads * L.group_stride), rng, 100.0f);
  for (const DType t : kHalfTypes)
    for (cpu::Isa isa : cpu::supported_isas()) {
      backend.force_isa(isa);
      std::vector<std::uint16_t> k(static_cast<std::size_t>(16 * row), 0xffff), v = k;
      backend.kv_write(qkv.data(), places, s,
                       {k.data(), v.data(), s.kv_heads, s.head_dim, block, t});
      for (std::int64_t i = 0; i < tokens; ++i) {
        const std::int64_t slot = cpu::kv_slot(places[i], places[i].pos, block);
        const float* src = qkv.data() + i * s.kv_heads * L.group_stride;
        for (std::int64_t g = 0; g < s.kv_heads; ++g)
          for (std::int64_t d = 0; d < s.head_dim; ++d) {
            const auto at = static_cast<std::size_t>(slot * row + g * s.head_dim + d);
            REQUIRE(k[at] == to_half(t, src[L.k(g) + d]));
            REQUIRE(v[at] == to_half(t, src[L.v(g) + d]));
          }
      }
    }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("a KV pool's bytes follow its dtype", "[kv_dtype]") {
  CpuBackend backend(1, 64, 1);
  KvShape shape{3, 2, 10};
  const KvCache f32(backend, shape, 5, 4);
  shape.dtype = DType::BF16;
  const KvCache bf16(backend, shape, 5, 4);
  CHECK(f32.bytes() == 2 * bf16.bytes());
  CHECK(bf16.layer(0).dtype == DType::BF16);
  // Every DType is a KV dtype now; the 8-bit forms add their scales (tests/test_kv_8bit.cpp).
  shape.dtype = DType::I8;
  CHECK(KvCache(backend, shape, 5, 4).layer(0).k_scale != nullptr);
}

TEST_CASE(
    "with a 16-bit KV cache a request's logits are bit-identical alone and batched, chunked "
    "or not",
    "[batch][invariance][kv_dtype]") {
  check_kv_dtype_invariance(kHalfTypes);
}

TEST_CASE("16-bit KV logits stay close to the fp32 cache's and transformers' on every fixture",
          "[falcon][golden][kv_dtype]") {
  check_kv_dtype_accuracy(kHalfTypes);
}
