// Every CPU kernel against its scalar reference (tests/kernel_reference.h), on random shapes
// with ragged tails, plus the invariances the scheduler relies on.
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernel_reference.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/ops.h"

using namespace saker;

namespace {

std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A weight matrix in dtype d holding the given values (rounded to d).
struct TestWeight {
  std::vector<float> f32;
  std::vector<std::uint16_t> half;
  Weight w;
  TestWeight(DType d, std::int64_t rows, std::int64_t cols, std::mt19937& rng) {
    f32 = random_floats(static_cast<std::size_t>(rows * cols), rng, 0.5f);
    if (d == DType::F32) {
      w = {d, f32.data(), rows, cols};
      return;
    }
    half.resize(f32.size());
    for (std::size_t i = 0; i < f32.size(); ++i) {
      if (d == DType::BF16) {
        half[i] = f32_to_bf16(f32[i]);
      } else {
        // Values that f16 holds exactly: multiples of 2^-8 in (-4, 4), all normal or zero.
        const float q = std::round(std::clamp(f32[i], -3.99f, 3.99f) * 256.0f) / 256.0f;
        std::uint16_t bits = 0;
        if (q != 0.0f) {
          int e = 0;
          const float m = std::frexp(std::fabs(q), &e);  // q = m * 2^e, m in [0.5, 1)
          const auto mant = static_cast<std::uint16_t>(std::lround((m * 2.0f - 1.0f) * 1024.0f));
          bits = static_cast<std::uint16_t>((q < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | mant);
        }
        REQUIRE(f16_to_f32(bits) == q);
        half[i] = bits;
      }
    }
    w = {d, half.data(), rows, cols};
  }
};

}  // namespace

TEST_CASE("dtype conversions are exact", "[kernels]") {
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0xc000) == -2.0f);
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(std::isinf(f16_to_f32(0xfc00)));
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  // Round to nearest even at the halfway point.
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST_CASE("thread pool covers every index once and rethrows", "[kernels]") {
  ThreadPool pool(3);
  for (std::int64_t n : {1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.parallel_for_grain(n, 4, [&](std::int64_t b, std::int64_t e, unsigned w) {
      REQUIRE(w < pool.size());
      for (auto i = b; i < e; ++i) hits[i]++;
    });
    for (auto& h : hits) REQUIRE(h.load() == 1);
  }
  CHECK_THROWS_WITH(pool.parallel_for(10,
                                      [](std::int64_t b, std::int64_t, unsigned) {
                                        if (b > 0) throw std::runtime_error("slice failed");
                                      }),
                    "slice failed");
  // Still usable afterwards.
  std::atomic<int> count{0};
  pool.parallel_for(10, [&](std::int64_t b, std::int64_t e, unsigned) { count += int(e - b); });
  CHECK(count == 10);
}

TEST_CASE("linear matches the scalar reference for every dtype and ragged shape", "[kernels]") {
  std::mt19937 rng(7);
  CpuBackend backend(2, 16);
  const std::vector<cpu::Isa> isas = cpu::detect_isa() == cpu::Isa::kAvx2
                                         ? std::vector{cpu::Isa::kPortable, cpu::Isa::kAvx2}
                                         : std::vector{cpu::Isa::kPortable};
  for (DType d : {DType::F32, DType::BF16, DType::F16})
    for (std::int64_t rows : {1, 3, 4, 5, 17, 37})
      for (std::int64_t cols : {1, 15, 16, 17, 33, 100, 257})
        for (std::int64_t n : {1, 3}) {
          TestWeight tw(d, rows, cols, rng);
          const auto x = random_floats(static_cast<std::size_t>(n * cols), rng);
          const auto bias = random_floats(static_cast<std::size_t>(rows), rng);
          std::vector<double> want, mag;
          ref::linear(x.data(), n, tw.w, bias.data(), want, mag);
          std::vector<std::vector<float>> results;
          for (cpu::Isa isa : isas) {
            backend.force_isa(isa);
            std::vector<float> y(static_cast<std::size_t>(n * rows));
            backend.linear(x.data(), n, tw.w, bias.data(), y.data());
            for (std::size_t i = 0; i < y.size(); ++i) {
              INFO(dtype_name(d) << " rows " << rows << " cols " << cols << " n " << n);
              REQUIRE(std::fabs(y[i] - want[i]) <= 1e-6 * mag[i] + 1e-6);
            }
            results.push_back(y);
          }
          // The portable kernel is the AVX2 kernel's arithmetic: identical bits.
          INFO(dtype_name(d) << " rows " << rows << " cols " << cols << " n " << n);
          if (results.size() == 2) REQUIRE(results[0] == results[1]);
        }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("linear output does not depend on batch size or thread count", "[kernels]") {
  std::mt19937 rng(11);
  CpuBackend one(1, 16), two(2, 16);
  TestWeight tw(DType::BF16, 67, 531, rng);
  const std::int64_t n = 9;
  const auto x = random_floats(static_cast<std::size_t>(n * 531), rng);
  std::vector<float> batched(static_cast<std::size_t>(n * 67));
  two.linear(x.data(), n, tw.w, nullptr, batched.data());
  for (std::int64_t t = 0; t < n; ++t) {
    std::vector<float> alone(67);
    one.linear(x.data() + t * 531, 1, tw.w, nullptr, alone.data());
    for (std::int64_t r = 0; r < 67; ++r) REQUIRE(alone[r] == batched[t * 67 + r]);
  }
}

TEST_CASE("layer norm, gelu, embedding match references", "[kernels]") {
  std::mt19937 rng(3);
  CpuBackend backend(2, 16);
  for (std::int64_t dim : {1, 7, 64, 333}) {
    const std::int64_t n = 5;
    auto x = random_floats(static_cast<std::size_t>(n * dim), rng, 3.0f);
    for (auto& v : x) v += 10.0f;  // an offset mean, as residual streams have
    const auto g = random_floats(static_cast<std::size_t>(dim), rng);
    const auto b = random_floats(static_cast<std::size_t>(dim), rng);
    std::vector<float> y(x.size());
    backend.layer_norm(x.data(), n, dim, g.data(), b.data(), 1e-5f, y.data());
    const auto want = ref::layer_norm(x.data(), n, dim, g.data(), b.data(), 1e-5);
    for (std::size_t i = 0; i < y.size(); ++i)
      REQUIRE(y[i] == Approx(want[i]).margin(1e-5).epsilon(1e-5));
  }
  auto v = random_floats(10000, rng, 4.0f);
  const auto orig = v;
  backend.gelu(v.data(), static_cast<std::int64_t>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i)
    REQUIRE(v[i] == Approx(ref::gelu(orig[i])).margin(1e-6).epsilon(1e-6));

  TestWeight table(DType::BF16, 50, 9, rng);
  const std::vector<std::int32_t> ids{3, 0, 49, 3};
  std::vector<float> e(ids.size() * 9);
  backend.embedding(ids, table.w, 0, e.data());
  for (std::size_t t = 0; t < ids.size(); ++t)
    for (std::int64_t k = 0; k < 9; ++k)
      REQUIRE(e[t * 9 + k] == ref::weight_at(table.w, ids[t], k));
  // A vocabulary shard holding ids [40, 90): other ids read as zeros.
  backend.embedding(ids, table.w, 40, e.data());
  for (std::size_t t = 0; t < ids.size(); ++t)
    for (std::int64_t k = 0; k < 9; ++k)
      REQUIRE(e[t * 9 + k] == (ids[t] >= 40 ? ref::weight_at(table.w, ids[t] - 40, k) : 0.0));
}

TEST_CASE("ALiBi slopes follow the published formula, rounded to bf16", "[kernels]") {
  for (std::int64_t heads : {1, 4, 6, 8, 12, 32, 71}) {
    std::vector<float> s(static_cast<std::size_t>(heads));
    cpu::alibi_slopes(heads, s.data());
    std::int64_t p2 = 1;
    while (p2 * 2 <= heads) p2 *= 2;
    for (std::int64_t h = 0; h < heads; ++h) {
      const double want = h < p2 ? std::pow(2.0, -8.0 * (h + 1) / p2)
                                 : std::pow(2.0, -4.0 * (2 * (h - p2) + 1) / p2);
      REQUIRE(s[h] == round_to_bf16(static_cast<float>(want)));
    }
  }
}

namespace {

// A KV layer over a shuffled block table, with qkv rows for `n` tokens of one sequence.
struct AttentionCase {
  AttentionShape shape;
  std::int64_t block = 4, blocks = 8;
  std::vector<float> k, v, qkv;
  std::vector<std::int32_t> table;
  std::vector<TokenPlace> places;
  AttentionCase(std::int64_t heads, std::int64_t kv_heads, std::int64_t hd, std::int64_t n,
                std::mt19937& rng)
      : shape{heads, kv_heads, hd, nullptr} {
    k.assign(static_cast<std::size_t>(blocks * block * kv_heads * hd), NAN);
    v = k;
    table.resize(static_cast<std::size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    qkv = random_floats(static_cast<std::size_t>(n * (heads + 2 * kv_heads) * hd), rng);
    for (std::int64_t t = 0; t < n; ++t)
      places.push_back({static_cast<std::int32_t>(t), table.data()});
  }
  KvLayer kv() { return {k.data(), v.data(), shape.kv_heads, shape.head_dim, block}; }
};

}  // namespace

TEST_CASE("rotary matches the rotate-half reference", "[kernels]") {
  std::mt19937 rng(5);
  CpuBackend backend(1, 64);
  AttentionCase c(8, 2, 16, 20, rng);
  const auto orig = c.qkv;
  std::vector<float> table(static_cast<std::size_t>(64 * 16));
  cpu::rotary_table(500042.0f, 16, 64, table.data());
  backend.rotary(c.qkv.data(), c.places, c.shape, table.data());
  const cpu::QkvLayout L(c.shape);
  const std::int64_t stride = 2 * L.group_stride;
  for (std::int64_t t = 0; t < 20; ++t) {
    for (std::int64_t h = 0; h < 8; ++h) {
      const auto want = ref::rotary(orig.data() + t * stride + L.q(h), 16, t, 500042.0);
      for (int d = 0; d < 16; ++d)
        REQUIRE(c.qkv[t * stride + L.q(h) + d] == Approx(want[d]).margin(2e-5));
    }
    // Values are not rotated.
    for (std::int64_t g = 0; g < 2; ++g)
      for (int d = 0; d < 16; ++d)
        REQUIRE(c.qkv[t * stride + L.v(g) + d] == orig[t * stride + L.v(g) + d]);
  }
}

TEST_CASE("paged attention matches the reference for MQA, GQA, MHA and ALiBi", "[kernels]") {
  std::mt19937 rng(9);
  CpuBackend backend(2, 64);
  struct Shape {
    std::int64_t heads, kv, hd;
    bool alibi;
  };
  for (const Shape sh : {Shape{7, 1, 8, false}, Shape{8, 2, 16, false}, Shape{6, 6, 8, true},
                         Shape{4, 4, 32, false}}) {
    const std::int64_t n = 13;
    AttentionCase c(sh.heads, sh.kv, sh.hd, n, rng);
    std::vector<float> slopes(static_cast<std::size_t>(sh.heads));
    cpu::alibi_slopes(sh.heads, slopes.data());
    if (sh.alibi) c.shape.alibi_slopes = slopes.data();
    backend.kv_write(c.qkv.data(), c.places, c.shape, c.kv());
    std::vector<float> out(static_cast<std::size_t>(n * sh.heads * sh.hd), NAN);
    backend.attention(c.qkv.data(), c.places, c.shape, c.kv(), out.data());
    const cpu::QkvLayout L(c.shape);
    const std::int64_t stride = sh.kv * L.group_stride;
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < sh.heads; ++h) {
        const std::int64_t g = h / L.group_size;
        std::vector<const float*> keys, values;
        for (std::int64_t j = 0; j <= t; ++j) {
          keys.push_back(c.qkv.data() + j * stride + L.k(g));
          values.push_back(c.qkv.data() + j * stride + L.v(g));
        }
        const auto want = ref::attention(c.qkv.data() + t * stride + L.q(h), keys, values, sh.hd,
                                         sh.alibi ? slopes[h] : 0.0, sh.alibi);
        for (std::int64_t d = 0; d < sh.hd; ++d) {
          INFO("heads " << sh.heads << " kv " << sh.kv << " token " << t << " head " << h);
          REQUIRE(out[(t * sh.heads + h) * sh.hd + d] == Approx(want[d]).margin(1e-5));
        }
      }
  }
}
