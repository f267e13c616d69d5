// A KV cache in 8 bits (EngineOptions::kv_cache_dtype int8 or fp8_e4m3): one fp32 scale per token
// per KV head, kv_write quantizes to nearest even, attention widens each element as
// widen(code) * scale (one rounding) and then does the fp32 cache's arithmetic, so
// - the e4m3 codec is exact both ways and rounds to nearest even (checked over all codes);
// - every ISA gives the fp32 kernel's bits over the widened keys and values (the scalar reference);
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

#include <catch2/catch.hpp>

#include "engine/model/falcon/falcon.h"
#include "engine/model/positions.h"
#include "kernel_reference.h"
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

constexpr DType k8BitTypes[] = {DType::I8, DType::F8E4M3};

// e4m3 by its definition: (-1)^s * 2^(e - 7) * (1 + m / 8), or 2^-6 * m / 8 when e = 0.
double e4m3_value(int c) {
  const int e = (c >> 3) & 15, m = c & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return (c & 0x80) ? -mag : mag;
}

float widen(DType t, std::uint8_t code) {
  return t == DType::I8 ? static_cast<float>(static_cast<std::int8_t>(code)) : e4m3_to_f32(code);
}

// The quantizer as docs/numerics.md states it, written independently of kv_write: one head
// vector to codes and its scale.
float quantize(DType t, const float* x, std::int64_t n, std::uint8_t* codes) {
  float amax = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / (t == DType::I8 ? 127.0f : 448.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    const float y = scale == 0.0f ? 0.0f : x[i] / scale;
    if (t == DType::I8) {
      const float r = std::min(127.0f, std::max(-127.0f, std::nearbyint(y)));
      codes[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(r));
    } else {
      codes[i] = f32_to_e4m3(y);
    }
  }
  return scale;
}

// The shared rig (tests/kv_attention_rig.h) with the cache as 8-bit codes and scales, and `kw`,
// `vw` their widened values. Vectors of magnitudes from 1e-6 to 1e4 (so e4m3 subnormals occur),
// with outliers, and some all zero (scale 0).
struct Rig : PagedRig {
  std::vector<float> k_scale, v_scale;
  std::vector<std::uint8_t> k8, v8;

  Rig(std::int64_t heads, std::int64_t kv_heads, std::int64_t hd, std::int64_t block_size,
      bool alibi, DType dtype, std::mt19937& rng)
      : PagedRig(heads, kv_heads, hd, block_size, alibi, rng) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::uniform_int_distribution<int> e(-20, 13);
    auto fill = [&](std::vector<std::uint8_t>& codes, std::vector<float>& scales,
                    std::vector<float>& wide) {
      codes.assign(static_cast<std::size_t>(vectors * hd), 0);
      scales.assign(static_cast<std::size_t>(vectors), 0.0f);
      wide.assign(codes.size(), 0.0f);
      std::vector<float> x(static_cast<std::size_t>(hd));
      for (std::int64_t vec = 0; vec < vectors; ++vec) {
        const float mag = std::ldexp(1.0f, e(rng));
        for (auto& v : x) v = vec % 11 == 5 ? 0.0f : d(rng) * mag;
        if (vec % 7 == 3) x[static_cast<std::size_t>(vec % hd)] *= 1000.0f;  // an outlier
        std::uint8_t* c = codes.data() + vec * hd;
        scales[static_cast<std::size_t>(vec)] = quantize(dtype, x.data(), hd, c);
        for (std::int64_t i = 0; i < hd; ++i)
          wide[static_cast<std::size_t>(vec * hd + i)] =
              widen(dtype, c[i]) * scales[static_cast<std::size_t>(vec)];
      }
    };
    fill(k8, k_scale, kw);
    fill(v8, v_scale, vw);
  }
  KvLayer quantized_kv(DType t) {
    return {k8.data(), v8.data(), shape.kv_heads, shape.head_dim,
            block,     t,         k_scale.data(), v_scale.data()};
  }
};

}  // namespace

TEST_CASE("e4m3: every code decodes exactly, every value round-trips, ties go to even",
          "[kernels][kv_dtype][kv8]") {
  for (int c = 0; c < 256; ++c) {
    INFO("code " << c);
    const float f = e4m3_to_f32(static_cast<std::uint8_t>(c));
    if ((c & 0x7f) == 0x7f) {  // S.1111.111: NaN, the variant's only non-finite codes
      CHECK(std::isnan(f));
      CHECK(f32_to_e4m3(f) == c);  // NaN stays NaN, sign kept
      continue;
    }
    CHECK(static_cast<double>(f) == e4m3_value(c));
    CHECK(std::signbit(f) == ((c & 0x80) != 0));  // -0 too
    CHECK(f32_to_e4m3(f) == c);
  }
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x01) == 0x1p-9f);
  // Midpoints of neighbouring codes go to the even code, and just off them to the nearer one.
  for (int c = 0; c < 0x7e; ++c)
    for (const float sign : {1.0f, -1.0f}) {
      const float lo = e4m3_to_f32(static_cast<std::uint8_t>(c)),
                  hi = e4m3_to_f32(static_cast<std::uint8_t>(c + 1));
      const float mid = sign * (lo + hi) / 2;  // exact: a few bits more than e4m3's
      const int s = sign < 0 ? 0x80 : 0;
      INFO("between codes " << c << " and " << c + 1 << " sign " << sign);
      CHECK(f32_to_e4m3(mid) == (s | (c % 2 == 0 ? c : c + 1)));
      CHECK(f32_to_e4m3(std::nextafter(mid, 0.0f)) == (s | c));
      CHECK(f32_to_e4m3(std::nextafter(mid, sign * INFINITY)) == (s | (c + 1)));
    }
  // From 448 up it saturates (a scaled vector's largest element may overshoot by a rounding).
  for (const float f : {448.0f, 448.5f, 464.0f, 480.0f, 1e30f, INFINITY}) {
    CHECK(f32_to_e4m3(f) == 0x7e);
    CHECK(f32_to_e4m3(-f) == 0xfe);
  }
  // Random values: the code is a nearest one.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-448.0f, 448.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = i % 2 ? u(rng) : u(rng) * 1e-4f;
    const int c = f32_to_e4m3(x);
    const double err = std::fabs(x - e4m3_value(c));
    for (int o = 0; o < 256; ++o)
      if ((o & 0x7f) != 0x7f) REQUIRE(err <= std::fabs(x - e4m3_value(o)));
  }
}

TEST_CASE("kv_write quantizes each head vector with its own scale", "[kernels][kv_dtype][kv8]") {
  std::mt19937 rng(43);
  CpuBackend backend(2, 128, 1);
  const AttentionShape s{8, 2, 24, nullptr};
  const cpu::QkvLayout L(s);
  const std::int64_t block = 4, tokens = 11, row = s.kv_heads * s.head_dim;
  std::vector<std::int32_t> table = {2, 0, 3, 1};
  std::vector<TokenPlace> places;
  for (std::int64_t t = 0; t < tokens; ++t)
    places.push_back({static_cast<std::int32_t>(t + 3), table.data()});
  auto qkv = ref::random_floats(static_cast<std::size_t>(tokens * s.kv_heads * L.group_stride), rng,
                                100.0f);
  // Token 2's keys of group 1 all zero: scale 0, codes 0.
  std::fill_n(qkv.data() + 2 * s.kv_heads * L.group_stride + L.k(1), s.head_dim, 0.0f);
  for (const DType t : k8BitTypes)
    for (cpu::Isa isa : cpu::supported_isas()) {
      backend.force_isa(isa);
      std::vector<std::uint8_t> k(static_cast<std::size_t>(16 * row), 0xaa), v = k;
      std::vector<float> ks(static_cast<std::size_t>(16 * s.kv_heads), NAN), vs = ks;
      backend.kv_write(
          qkv.data(), places, s,
          {k.data(), v.data(), s.kv_heads, s.head_dim, block, t, ks.data(), vs.data()});
      for (std::int64_t i = 0; i < tokens; ++i) {
        const std::int64_t slot = cpu::kv_slot(places[i], places[i].pos, block);
        const float* src = qkv.data() + i * s.kv_heads * L.group_stride;
        for (std::int64_t g = 0; g < s.kv_heads; ++g) {
          const auto vec = static_cast<std::size_t>(slot * s.kv_heads + g);
          for (const bool is_k : {true, false}) {
            std::vector<std::uint8_t> want(static_cast<std::size_t>(s.head_dim));
            const float* x = src + (is_k ? L.k(g) : L.v(g));
            const float scale = quantize(t, x, s.head_dim, want.data());
            const auto& codes = is_k ? k : v;
            INFO(dtype_name(t) << " " << cpu::isa_name(isa) << " token " << i << " group " << g);
            REQUIRE(std::bit_cast<std::uint32_t>((is_k ? ks : vs)[vec]) ==
                    std::bit_cast<std::uint32_t>(scale));
            REQUIRE(std::equal(want.begin(), want.end(), codes.begin() + vec * s.head_dim));
            // Round to nearest: within half a step (int8) or half an e4m3 ulp (3 bits).
            for (std::int64_t d = 0; d < s.head_dim; ++d) {
              const float back = widen(t, want[d]) * scale;
              const float tol = t == DType::I8 ? 0.5f * scale * 1.0001f
                                               : std::fabs(x[d]) / 16.0f + 0x1p-10f * scale;
              REQUIRE(std::fabs(back - x[d]) <= tol);
            }
          }
        }
      }
      const std::int64_t zero_slot = cpu::kv_slot(places[2], places[2].pos, block);
      CHECK(ks[static_cast<std::size_t>(zero_slot * s.kv_heads + 1)] == 0.0f);
    }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("8-bit KV attention is the fp32 kernel over the widened cache, on every ISA",
          "[kernels][attention][kv_dtype][kv8]") {
  std::mt19937 rng(41);
  CpuBackend backend(2, 128, 1), one(1, 128);
  for (const DType t : k8BitTypes)
    for (const RigShape& s : kRigShapes) {
      Rig rig(s.heads, s.kv_heads, s.hd, s.block, s.alibi, t, rng);
      const auto want = rig.run(backend, cpu::Isa::kPortable, rig.widened_kv());
      for (cpu::Isa isa : cpu::supported_isas()) {
        INFO(dtype_name(t) << " heads " << s.heads << " kv " << s.kv_heads << " hd " << s.hd
                           << " block " << s.block << " isa " << cpu::isa_name(isa));
        const auto got = rig.run(backend, isa, rig.quantized_kv(t));
        CHECK(same_bits(got, want));
        CHECK(same_bits(rig.run(one, isa, rig.quantized_kv(t)), want));  // one thread
        // A token alone gives its bits in the batch.
        rig.check_alone_as_batched(backend, rig.quantized_kv(t), got, 3);
      }
    }
  backend.force_isa(cpu::detect_isa());
  one.force_isa(cpu::detect_isa());
}

TEST_CASE("an 8-bit KV pool holds a byte per element and a scale per head vector",
          "[kv_dtype][kv8]") {
  CpuBackend backend(1, 64, 1);
  KvShape shape{3, 2, 10};
  const KvCache f32(backend, shape, 5, 4);
  CHECK(f32.layer(0).k_scale == nullptr);
  for (const DType t : k8BitTypes) {
    shape.dtype = t;
    const KvCache c(backend, shape, 5, 4);
    // Per token: 3 layers x K and V x 2 heads x (10 bytes + a 4-byte scale).
    CHECK(shape.bytes_per_token() == 3 * 2 * 2 * (10 + 4));
    CHECK(c.bytes() == 5 * 4 * shape.bytes_per_token());
    CHECK(c.capacity_tokens() == f32.capacity_tokens());
    CHECK(c.layer(2).dtype == t);
    CHECK(c.layer(2).k_scale != nullptr);
    CHECK(c.layer(2).v_scale != nullptr);
  }
}

TEST_CASE(
    "with an 8-bit KV cache a request's logits are bit-identical alone and batched, chunked "
    "or not",
    "[batch][invariance][kv_dtype][kv8]") {
  check_kv_dtype_invariance(k8BitTypes);
}

TEST_CASE("8-bit KV logits stay close to the fp32 cache's and transformers' on every fixture",
          "[falcon][golden][kv_dtype][kv8]") {
  check_kv_dtype_accuracy(k8BitTypes);
}
