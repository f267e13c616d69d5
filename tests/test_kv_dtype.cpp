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

#include <cpuid.h>
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
#include "tests/kv_attention_rig.h"
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

__attribute__((target("f16c"))) std::uint16_t hardware_f16(float f) {
  return static_cast<std::uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

// The shared rig (tests/kv_attention_rig.h) with the cache in 16 bits, and `kw`, `vw` its values
// widened. Magnitudes from 1e-6 (fp16 subnormals) to 1e4, so rounding sees every kind of value.
struct Rig : PagedRig {
  std::vector<std::uint16_t> k16, v16;

  Rig(std::int64_t heads, std::int64_t kv_heads, std::int64_t hd, std::int64_t block_size,
      bool alibi, DType dtype, std::mt19937& rng)
      : PagedRig(heads, kv_heads, hd, block_size, alibi, rng) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::uniform_int_distribution<int> e(-20, 13);
    auto draw = [&] { return d(rng) * std::ldexp(1.0f, e(rng) < 0 ? 0 : e(rng) - 13); };
    auto tiny = [&] { return d(rng) * 1e-6f; };
    const auto n = static_cast<std::size_t>(vectors * hd);
    for (std::size_t i = 0; i < n; ++i) {
      k16.push_back(to_half(dtype, i % 17 == 0 ? tiny() : draw()));
      v16.push_back(to_half(dtype, i % 13 == 0 ? tiny() : draw()));
      kw.push_back(from_half(dtype, k16.back()));
      vw.push_back(from_half(dtype, v16.back()));
    }
  }
  KvLayer half_kv(DType t) {
    return {k16.data(), v16.data(), shape.kv_heads, shape.head_dim, block, t};
  }
};

}  // namespace

TEST_CASE("f32_to_f16 rounds to nearest even like F16C", "[kernels][kv_dtype]") {
  // CPUID, not __builtin_cpu_supports("f16c"): clang 14 (the sanitizer build) does not know it.
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C)) return;  // nothing to compare with
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
        rig.check_alone_as_batched(two, rig.half_kv(t), batched, 1);
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
