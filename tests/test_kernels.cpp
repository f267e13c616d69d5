// Every CPU kernel against its scalar reference (tests/kernel_reference.h), on random shapes
// with ragged tails, plus the invariances the scheduler relies on.
#include <atomic>
#include <bit>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/model/positions.h"
#include "kernel_reference.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/linear_amx.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/ops.h"
#include "kernels/quantize.h"

using namespace saker;

namespace {

using ref::random_floats;

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

namespace {

// The rounding error bound of a sequential fp32 dot product of k terms: k u / (1 - k u) of the sum
// of |terms| (Higham's gamma_k), u = 2^-24.
double dot_error_bound(std::int64_t k, double magnitude) {
  const double ku = static_cast<double>(k + 2) * std::ldexp(1.0, -24);
  return ku / (1.0 - ku) * magnitude + 1e-30;
}

}  // namespace

namespace {

// 5 random bf16 rows of 40: row 2 all zero, row 3's largest magnitude -2.5 at k = 7.
TestWeight quantization_rows(std::mt19937& rng) {
  TestWeight tw(DType::BF16, 5, 40, rng);
  std::fill_n(tw.half.begin() + 2 * 40, 40, std::uint16_t{0});
  tw.half[3 * 40 + 7] = f32_to_bf16(-2.5f);
  return tw;
}

const char* quant_name(WeightQuant q) {
  return q == WeightQuant::kInt8   ? " int8"
         : q == WeightQuant::kFp8  ? " fp8"
         : q == WeightQuant::kW8A8 ? " w8a8"
                                   : "";
}

}  // namespace

TEST_CASE("linear matches the scalar reference for every dtype, int8, fp8 and ragged shape",
          "[kernels]") {
  std::mt19937 rng(7);
  CpuBackend backend(2, 16, 1);
  const std::vector<cpu::Isa> isas = cpu::supported_isas();
  for (DType d : {DType::F32, DType::BF16, DType::F16})
    for (WeightQuant quant : {WeightQuant::kNone, WeightQuant::kInt8, WeightQuant::kFp8})
      for (std::int64_t rows : {1, 3, 16, 17, 37, 70})
        for (std::int64_t cols : {1, 15, 17, 100, 300})
          for (std::int64_t n : {1, 3, 13, 30}) {
            INFO(dtype_name(d) << quant_name(quant) << " rows " << rows << " cols " << cols << " n "
                               << n);
            TestWeight tw(d, rows, cols, rng);
            const Weight packed = backend.upload_weight(tw.w, quant);
            REQUIRE(packed.layout == WeightLayout::kPanels16);
            REQUIRE(packed.dtype == (quant == WeightQuant::kInt8  ? DType::I8
                                     : quant == WeightQuant::kFp8 ? DType::F8E4M3
                                                                  : d));
            const auto x = random_floats(static_cast<std::size_t>(n * cols), rng);
            const auto bias = random_floats(static_cast<std::size_t>(rows), rng);
            // The reference reads the weight's values as the kernels see them (dequantized).
            std::vector<float> values(static_cast<std::size_t>(rows * cols));
            for (std::int64_t r = 0; r < rows; ++r)
              for (std::int64_t k = 0; k < cols; ++k) {
                values[r * cols + k] = cpu::weight_element(packed, r, k);
                const double stored = ref::weight_at(tw.w, r, k);
                if (quant == WeightQuant::kNone) {
                  REQUIRE(values[r * cols + k] == stored);
                } else if (quant == WeightQuant::kInt8) {
                  // Round to nearest: within half a step of the stored value.
                  REQUIRE(std::fabs(values[r * cols + k] - stored) <=
                          0.5001 * packed.scales[r] + 1e-12);
                } else {  // e4m3: half an ulp (3 mantissa bits), or half a subnormal step
                  REQUIRE(std::fabs(values[r * cols + k] - stored) <=
                          std::fabs(stored) / 16 + packed.scales[r] * 0x1p-10 + 1e-12);
                }
              }
            const Weight as_f32{DType::F32, values.data(), rows, cols};
            std::vector<double> want, mag;
            ref::linear(x.data(), n, as_f32, bias.data(), want, mag);
            std::vector<float> first;
            for (cpu::Isa isa : isas) {
              INFO("isa " << cpu::isa_name(isa));
              backend.force_isa(isa);
              std::vector<float> y(static_cast<std::size_t>(n * rows));
              backend.linear(x.data(), n, packed, bias.data(), y.data());
              for (std::size_t i = 0; i < y.size(); ++i)
                REQUIRE(std::fabs(y[i] - want[i]) <= dot_error_bound(cols + 1, mag[i]));
              // Every path takes the same fused multiply-adds in the same order.
              if (first.empty())
                first = y;
              else
                REQUIRE(y == first);
            }
            // A weight that was never uploaded (row-major) gets the same arithmetic.
            if (quant == WeightQuant::kNone) {
              std::vector<float> y(static_cast<std::size_t>(n * rows));
              backend.linear(x.data(), n, tw.w, bias.data(), y.data());
              REQUIRE(y == first);
            }
          }
  backend.force_isa(cpu::detect_isa());
}

namespace {

// The plainest reading of vdpbf16ps over a row (cpu/linear.h): inputs rounded to bf16, then for
// each pair of columns the odd one's product and then the even one's, each by fused
// multiply-add; subnormal inputs read as zero and subnormal sums flushed.
float bf16_dot_row(const float* x, const std::uint16_t* w, std::int64_t cols, float bias) {
  const auto value = [](std::uint16_t b) {
    return (b & 0x7f80) == 0 ? 0.0f * bf16_to_f32(b) : bf16_to_f32(b);
  };
  const auto flush = [](float v) { return std::fabs(v) < 0x1p-126f ? 0.0f * v : v; };
  float acc = 0.0f;
  for (std::int64_t k = 0; k < cols; k += 2) {
    if (k + 1 < cols) acc = flush(std::fma(value(w[k + 1]), value(f32_to_bf16(x[k + 1])), acc));
    acc = flush(std::fma(value(w[k]), value(f32_to_bf16(x[k])), acc));
  }
  return acc + bias;
}

}  // namespace

TEST_CASE("bf16 dot products match the scalar reading of vdpbf16ps on ragged shapes", "[kernels]") {
  std::mt19937 rng(13);
  CpuBackend backend(2, 16, 1);
  backend.set_bf16_dot(true);
  INFO("AVX512_BF16 here: " << cpu::has_avx512_bf16());
  for (std::int64_t rows : {1, 3, 16, 17, 37, 70, 130})
    for (std::int64_t cols : {1, 2, 15, 17, 100, 301})
      for (std::int64_t n : {1, 3, 5, 13, 30}) {
        INFO("rows " << rows << " cols " << cols << " n " << n);
        TestWeight tw(DType::BF16, rows, cols, rng);
        // Subnormal weights and inputs, and products whose sums underflow: the flushes.
        if (rows > 16) {
          tw.half[0] = 0x0005;
          for (std::int64_t k = 0; k < cols; ++k)
            tw.half[static_cast<std::size_t>(cols + k)] = 0x0180;
        }
        const Weight packed = backend.upload_weight(tw.w, WeightQuant::kNone);
        REQUIRE(packed.layout == WeightLayout::kPanels16Pairs);
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t k = 0; k < cols; ++k) {
            const std::uint16_t b = tw.half[static_cast<std::size_t>(r * cols + k)];
            REQUIRE(cpu::weight_element(packed, r, k) ==
                    ((b & 0x7f80) == 0 ? 0.0f * bf16_to_f32(b) : bf16_to_f32(b)));
          }
        auto x = random_floats(static_cast<std::size_t>(n * cols), rng);
        if (n > 1) x[static_cast<std::size_t>(cols)] = 1e-39f;
        if (rows > 16 && n > 2)
          for (std::int64_t k = 0; k < cols; ++k)
            x[static_cast<std::size_t>(2 * cols + k)] = 1e-30f;
        const auto bias = random_floats(static_cast<std::size_t>(rows), rng);
        for (cpu::Isa isa : cpu::supported_isas()) {
          INFO("isa " << cpu::isa_name(isa));
          backend.force_isa(isa);
          std::vector<float> y(static_cast<std::size_t>(n * rows));
          backend.linear(x.data(), n, packed, bias.data(), y.data());
          for (std::int64_t t = 0; t < n; ++t)
            for (std::int64_t r = 0; r < rows; ++r)
              REQUIRE(std::bit_cast<std::uint32_t>(y[t * rows + r]) ==
                      std::bit_cast<std::uint32_t>(bf16_dot_row(
                          x.data() + t * cols, tw.half.data() + r * cols, cols, bias[r])));
        }
      }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("int8 dot products (w8a8) match the integer reference on ragged shapes", "[kernels]") {
  std::mt19937 rng(17);
  CpuBackend backend(2, 16, 1);
  for (std::int64_t rows : {1, 3, 16, 17, 37, 70, 130})
    for (std::int64_t cols : {1, 3, 4, 15, 17, 100, 301})
      for (std::int64_t n : {1, 3, 5, 13, 30}) {
        INFO("rows " << rows << " cols " << cols << " n " << n);
        TestWeight tw(DType::BF16, rows, cols, rng);
        const Weight packed = backend.upload_weight(tw.w, WeightQuant::kW8A8);
        REQUIRE(packed.layout == WeightLayout::kPanels16Quads);
        REQUIRE(packed.dtype == DType::I8);
        // The weight codes and scales of the shared quantizer (kernels/quantize.h).
        std::vector<std::uint8_t> wq(static_cast<std::size_t>(rows * cols));
        std::vector<float> ws(static_cast<std::size_t>(rows));
        for (std::int64_t r = 0; r < rows; ++r) {
          ws[r] = quantize_row(DType::BF16, tw.half.data() + r * cols, cols, DType::I8, r,
                               wq.data() + r * cols);
          for (std::int64_t k = 0; k < cols; ++k)
            REQUIRE(cpu::weight_element(packed, r, k) ==
                    static_cast<float>(static_cast<std::int8_t>(wq[r * cols + k])) * ws[r]);
        }
        auto x = random_floats(static_cast<std::size_t>(n * cols), rng);
        if (n > 1) std::fill_n(x.begin() + cols, cols, 0.0f);  // an all-zero token: scale 0
        const auto bias = random_floats(static_cast<std::size_t>(rows), rng);
        for (cpu::Isa isa : cpu::supported_isas()) {
          INFO("isa " << cpu::isa_name(isa) << ", VNNI here: " << cpu::has_avx512_vnni());
          backend.force_isa(isa);
          std::vector<float> y(static_cast<std::size_t>(n * rows));
          backend.linear(x.data(), n, packed, bias.data(), y.data());
          for (std::int64_t t = 0; t < n; ++t) {
            // Per token: scale max |x| / 127, codes nearest even of x * 127 / max.
            const float* xt = x.data() + t * cols;
            float max = 0.0f;
            for (std::int64_t k = 0; k < cols; ++k) max = std::max(max, std::fabs(xt[k]));
            const float inv = max > 0 ? 127.0f / max : 0.0f;
            for (std::int64_t r = 0; r < rows; ++r) {
              std::int32_t sum = 0;
              for (std::int64_t k = 0; k < cols; ++k)
                sum += static_cast<std::int32_t>(std::nearbyint(xt[k] * inv)) *
                       static_cast<std::int8_t>(wq[r * cols + k]);
              const float want = static_cast<float>(sum) * (max / 127.0f * ws[r]) + bias[r];
              REQUIRE(y[t * rows + r] == want);
            }
          }
        }
      }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("AMX bf16 tiles match the reference where the CPU has them", "[kernels]") {
  // Off batch invariance only (cpu/linear_amx.h): the sums are the tiles' own order, so held to
  // the rounding bound of an fp32 sum against the double reference of the bf16-rounded inputs.
  if (!cpu::amx_available()) {
    WARN("no AMX-BF16 here: the AMX path is compile-tested only");
    CHECK_FALSE(cpu::amx_available());
    return;
  }
  std::mt19937 rng(19);
  CpuBackend backend(2, 16, 1, /*bf16_dot=*/true);
  backend.set_batch_invariant(false);
  for (std::int64_t rows : {1, 17, 70, 130})
    for (std::int64_t cols : {1, 31, 32, 33, 301})
      for (std::int64_t n : {16, 17, 40}) {
        INFO("rows " << rows << " cols " << cols << " n " << n);
        TestWeight tw(DType::BF16, rows, cols, rng);
        const Weight packed = backend.upload_weight(tw.w, WeightQuant::kNone);
        auto x = random_floats(static_cast<std::size_t>(n * cols), rng);
        for (float& v : x) v = round_to_bf16(v);
        const auto bias = random_floats(static_cast<std::size_t>(rows), rng);
        std::vector<double> want, mag;
        ref::linear(x.data(), n, tw.w, bias.data(), want, mag);
        std::vector<float> y(static_cast<std::size_t>(n * rows));
        backend.linear(x.data(), n, packed, bias.data(), y.data());
        for (std::size_t i = 0; i < y.size(); ++i)
          REQUIRE(std::fabs(y[i] - want[i]) <= 2 * dot_error_bound(cols + 1, mag[i]));
      }
}

TEST_CASE("int8 quantization keeps one scale per row and zero rows exact", "[kernels]") {
  std::mt19937 rng(3);
  CpuBackend backend(1, 16);
  TestWeight tw = quantization_rows(rng);
  const Weight q = backend.upload_weight(tw.w, WeightQuant::kInt8);
  CHECK(q.scales[2] == 0.0f);
  CHECK(q.scales[3] == 2.5f / 127.0f);
  CHECK(cpu::weight_element(q, 3, 7) == -127.0f * q.scales[3]);
  for (std::int64_t k = 0; k < 40; ++k) CHECK(cpu::weight_element(q, 2, k) == 0.0f);
  CHECK(weight_bytes(q) == 5 * 40 + 5 * 4);
  tw.half[7] = 0x7f80;  // +inf
  REQUIRE_THROWS_WITH(backend.upload_weight(tw.w, WeightQuant::kInt8),
                      Catch::Contains("row 0") && Catch::Contains("non-finite"));
  tw.half[7] = 0x7fc0;  // NaN, which a max over the row would pass over
  REQUIRE_THROWS_WITH(backend.upload_weight(tw.w, WeightQuant::kInt8),
                      Catch::Contains("row 0") && Catch::Contains("non-finite"));
}

TEST_CASE("fp8 quantization maps each row's largest magnitude to 448, codes as e4m3", "[kernels]") {
  std::mt19937 rng(5);
  CpuBackend backend(1, 16);
  TestWeight tw = quantization_rows(rng);
  const Weight q = backend.upload_weight(tw.w, WeightQuant::kFp8);
  CHECK(q.dtype == DType::F8E4M3);
  CHECK(q.scales[2] == 0.0f);
  CHECK(q.scales[3] == 2.5f / 448.0f);
  CHECK(cpu::weight_element(q, 3, 7) == -448.0f * q.scales[3]);
  for (std::int64_t k = 0; k < 40; ++k) CHECK(cpu::weight_element(q, 2, k) == 0.0f);
  // Every element is its e4m3 code's exact value times the row's scale (nearest even code).
  for (std::int64_t r = 0; r < 5; ++r)
    for (std::int64_t k = 0; k < 40; ++k) {
      const float w = bf16_to_f32(tw.half[static_cast<std::size_t>(r * 40 + k)]);
      const float code = q.scales[r] > 0 ? e4m3_to_f32(f32_to_e4m3(w / q.scales[r])) : 0.0f;
      CHECK(cpu::weight_element(q, r, k) == code * q.scales[r]);
    }
  CHECK(weight_bytes(q) == 5 * 40 + 5 * 4);
  tw.half[7] = 0x7fc0;  // NaN
  REQUIRE_THROWS_WITH(backend.upload_weight(tw.w, WeightQuant::kFp8),
                      Catch::Contains("row 0") && Catch::Contains("fp8"));
}

TEST_CASE("linear output does not depend on batch size or thread count", "[kernels]") {
  std::mt19937 rng(11);
  CpuBackend one(1, 16), two(2, 16, 1);
  for (int mode = 0; mode < 5; ++mode)  // kNone, int8, fp8, bf16 dot products, w8a8
    for (cpu::Isa isa : cpu::supported_isas()) {
      const WeightQuant quant = mode == 1   ? WeightQuant::kInt8
                                : mode == 2 ? WeightQuant::kFp8
                                : mode == 4 ? WeightQuant::kW8A8
                                            : WeightQuant::kNone;
      INFO("isa " << cpu::isa_name(isa) << quant_name(quant) << (mode == 3 ? " bf16 dot" : ""));
      one.force_isa(isa);
      two.force_isa(isa);
      one.set_bf16_dot(mode == 3);
      two.set_bf16_dot(mode == 3);
      TestWeight tw(DType::BF16, 67, 531, rng);
      const Weight w1 = one.upload_weight(tw.w, quant), w2 = two.upload_weight(tw.w, quant);
      const std::int64_t n = 29;  // token blocks of 6 x 4, 4 and 1 (AVX-512 and AVX2)
      const auto x = random_floats(static_cast<std::size_t>(n * 531), rng);
      std::vector<float> batched(static_cast<std::size_t>(n * 67));
      two.linear(x.data(), n, w2, nullptr, batched.data());
      for (std::int64_t t = 0; t < n; ++t) {
        std::vector<float> alone(67);
        one.linear(x.data() + t * 531, 1, w1, nullptr, alone.data());
        for (std::int64_t r = 0; r < 67; ++r) REQUIRE(alone[r] == batched[t * 67 + r]);
      }
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
  // Packed tables (an uploaded, tied lm_head) read the same values; int8 ones dequantized.
  for (WeightQuant quant : {WeightQuant::kNone, WeightQuant::kInt8, WeightQuant::kFp8}) {
    const Weight packed = backend.upload_weight(table.w, quant);
    backend.embedding(ids, packed, 0, e.data());
    for (std::size_t t = 0; t < ids.size(); ++t)
      for (std::int64_t k = 0; k < 9; ++k) {
        const double stored = ref::weight_at(table.w, ids[t], k);
        const float s = packed.scales ? packed.scales[ids[t]] : 1.0f;
        const double want = quant == WeightQuant::kNone ? stored
                            : quant == WeightQuant::kInt8
                                ? s * std::nearbyint(stored / s)
                                : s * e4m3_to_f32(f32_to_e4m3(static_cast<float>(stored / s)));
        REQUIRE(e[t * 9 + k] == static_cast<float>(want));
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
  const std::vector<float> table = rotary_table(500042.0f, 16, 64);
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
    const std::vector<float> slopes = alibi_slopes(sh.heads);
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

TEST_CASE("the reference passes read every element once and do the FLOPs asked", "[kernels]") {
  ThreadPool pool(2);
  // Buffers of ragged sizes, every element 1: the sum counts the elements each pass read.
  std::vector<std::vector<float>> store;
  for (std::size_t n : {1u, 15u, 16u, 17u, 1000u, 4099u})
    store.emplace_back(n + 16, 1.0f);  // the sizes below; aligned starts come from the allocator
  std::vector<std::span<const float>> spans;
  std::size_t total = 0;
  for (auto& s : store) {
    // 64-byte aligned start inside each buffer, as the weights' pages are.
    auto* p = s.data();
    while (reinterpret_cast<std::uintptr_t>(p) % 64 != 0) ++p;
    spans.emplace_back(p, s.size() - 16);
    total += spans.back().size();
    CHECK(cpu::read_pass(pool, p, static_cast<std::int64_t>(spans.back().size())) ==
          static_cast<float>(spans.back().size()));
  }
  CHECK(cpu::read_pass(pool, spans) == static_cast<float>(total));
  // FMA chains: the FLOPs done are the ones asked, to one round of every chain on every thread.
  const double done = cpu::fma_pass(pool, 1e7);
  CHECK(std::fabs(done - 1e7) <= 2.0 * 12 * 16 * pool.size());
  CHECK(cpu::measure_fma_peak(pool, 1) > 0);
}
