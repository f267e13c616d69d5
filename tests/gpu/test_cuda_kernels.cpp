// Every CUDA kernel against the CPU backend (the reference) on random inputs, with ragged shapes,
// every weight dtype, and outputs poisoned with NaN before each run.
#include <algorithm>
#include <iostream>
#include <numeric>
#include <random>

#include <catch2/catch.hpp>

#include "engine/model/positions.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "tests/gpu/attention_cases.h"
#include "tests/gpu/gpu_harness.h"

using namespace saker;
using namespace saker::gpu_test;

namespace {

constexpr std::int64_t kMaxContext = 1024;

CpuBackend& ref_cpu() {
  static CpuBackend b(2, kMaxContext, 1);
  return b;
}

cuda::CudaBackend& dev() {
  return shared_backend();
}

// The relative error allowed for a linear product: both sides accumulate in fp32 in different
// orders; split half-precision activations carry ~16 mantissa bits, unsplit ones 8 (bf16) or 11.
// The GEMV takes fp32 activations; the tensor-core kernel (by default on half-precision weights
// with K % 8 == 0, up to 64 tokens) always splits them; cuBLASLt as `split` says.
double linear_tolerance(DType d, std::int64_t n, std::int64_t K, bool split) {
  if (d == DType::F32) return 2e-5;
  if (K % 8 == 0 && n <= cuda::kMmaMaxTokens) return 5e-5;
  if (n <= cuda::kGemvMaxTokens) return 2e-5;
  if (split) return 5e-5;
  return d == DType::BF16 ? 2e-2 : 4e-3;
}

void check_linear(cuda::CudaBackend& g, DType dtype, std::int64_t N, std::int64_t K, std::int64_t n,
                  bool with_bias, bool gelu, bool split) {
  const auto seed = static_cast<std::uint32_t>(N * 131 + K * 7 + n);
  const HostWeight w = random_weight(dtype, N, K, seed, 1.0f / std::sqrt(static_cast<float>(K)));
  const auto x = random_floats(static_cast<std::size_t>(n * K), seed + 1);
  const auto bias = random_floats(static_cast<std::size_t>(N), seed + 2);
  std::vector<float> want(static_cast<std::size_t>(n * N));
  const float* cb = with_bias ? bias.data() : nullptr;
  if (gelu)
    ref_cpu().linear_gelu(x.data(), n, w.view(), cb, want.data());
  else
    ref_cpu().linear(x.data(), n, w.view(), cb, want.data());

  const Weight dw = g.upload_weight(w.view(), WeightQuant::kNone);
  auto dx = g.upload(x);
  auto db = g.upload(bias);
  auto dy = g.allocate(want.size());
  poison(g, dy->data(), want.size());
  if (gelu)
    g.linear_gelu(dx->data(), n, dw, with_bias ? db->data() : nullptr, dy->data());
  else
    g.linear(dx->data(), n, dw, with_bias ? db->data() : nullptr, dy->data());
  const auto got = download(g, dy->data(), want.size());
  const Diff d = compare(got, want);
  INFO(dtype_name(dtype) << " N=" << N << " K=" << K << " n=" << n << " bias=" << with_bias
                         << " gelu=" << gelu << " split=" << split << ": " << describe(d));
  CHECK(d.nans == 0);
  CHECK(d.rel() <= linear_tolerance(dtype, n, K, split));
}

}  // namespace

TEST_CASE("cuda linear and linear_gelu match the CPU backend", "[gpu][kernels]") {
  cuda::CudaOptions unsplit;
  unsplit.split_activations = false;
  cuda::CudaBackend fast(unsplit);
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {
      {37, 45}, {64, 128}, {130, 264}, {257, 1000}, {3, 4544}};
  for (const DType dtype : {DType::F32, DType::BF16, DType::F16})
    for (const auto& [N, K] : shapes)
      for (const std::int64_t n : {1, 2, 3, 5, 8, 9, 17, 64, 65, 100}) {
        const bool bias = (n + N) % 2 == 0;
        check_linear(dev(), dtype, N, K, n, bias, false, true);
        check_linear(dev(), dtype, N, K, n, !bias, true, true);
        if (n > cuda::kMmaMaxTokens || (n > cuda::kGemvMaxTokens && K % 8 != 0))
          check_linear(fast, dtype, N, K, n, bias, n % 2 == 1, false);
      }
}

TEST_CASE("cuda linear paths each match the CPU backend; the tensor-core one is batch-invariant",
          "[gpu][kernels]") {
  // Every path forced (set_linear_path), on ragged shapes: rows not a multiple of 16, K a multiple
  // of 8 but not of 64 (a partial last chunk), tokens across the kernel's tile sizes.
  cuda::CudaBackend g;
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {
      {1, 8}, {17, 72}, {100, 264}, {257, 1000}, {3, 4544}};
  for (const cuda::LinearPath path :
       {cuda::LinearPath::kGemv, cuda::LinearPath::kMma, cuda::LinearPath::kLt}) {
    g.set_linear_path(path);
    INFO("path " << cuda::linear_path_name(path));
    for (const DType dtype : {DType::BF16, DType::F16})
      for (const auto& [N, K] : shapes)
        for (const std::int64_t n : {1, 2, 7, 8, 9, 16, 17, 31, 33, 64}) {
          const bool bias = (n + N) % 2 == 0;
          check_linear(g, dtype, N, K, n, bias, n % 3 == 0, true);
        }
    // Falcon-7B's qkv shape (the CPU reference is slow there: a few token counts).
    for (const std::int64_t n : {1, 9, 64})
      check_linear(g, DType::BF16, 4672, 4544, n, true, false, true);
  }

  // Batch invariance: each token's outputs from the tensor-core kernel are the same bits in a
  // step of n tokens as alone, with the epilogue (bias, GELU, add, residual).
  g.set_linear_path(cuda::LinearPath::kMma);
  for (const DType dtype : {DType::BF16, DType::F16})
    for (const auto& [N, K] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{257, 1000}, {4544, 4544}, {100, 72}}) {
      constexpr std::int64_t kMost = cuda::kMmaMaxTokens;
      const auto seed = static_cast<std::uint32_t>(N + K);
      const HostWeight w =
          random_weight(dtype, N, K, seed, 1.0f / std::sqrt(static_cast<float>(K)));
      const auto x = random_floats(static_cast<std::size_t>(kMost * K), seed + 1);
      const auto bias = random_floats(static_cast<std::size_t>(N), seed + 2);
      const auto add = random_floats(static_cast<std::size_t>(kMost * N), seed + 3);
      const Weight dw = g.upload_weight(w.view(), WeightQuant::kNone);
      auto dx = g.upload(x), db = g.upload(bias), da = g.upload(add);
      auto dy = g.allocate(static_cast<std::size_t>(kMost * N));
      auto dr = g.allocate(static_cast<std::size_t>(kMost * N));
      // Token t of a step of n tokens: rows [t * N, (t + 1) * N) of y.
      auto run = [&](std::int64_t first, std::int64_t n, bool gelu) {
        poison(g, dy->data(), static_cast<std::size_t>(n * N));
        if (gelu)
          g.linear_gelu(dx->data() + first * K, n, dw, db->data(), dy->data());
        else
          g.linear_add(dx->data() + first * K, n, dw, db->data(), da->data() + first * N,
                       dy->data(), dr->data());
        return download(g, dy->data(), static_cast<std::size_t>(n * N));
      };
      for (const bool gelu : {false, true}) {
        std::vector<std::vector<float>> alone;
        for (std::int64_t t = 0; t < kMost; ++t) alone.push_back(run(t, 1, gelu));
        for (const std::int64_t n : {2, 5, 8, 9, 16, 17, 32, 33, 64}) {
          const auto batch = run(0, n, gelu);
          int differ = 0;
          for (std::int64_t t = 0; t < n; ++t)
            differ += !std::equal(alone[static_cast<std::size_t>(t)].begin(),
                                  alone[static_cast<std::size_t>(t)].end(), batch.begin() + t * N);
          INFO(dtype_name(dtype) << " N=" << N << " K=" << K << " n=" << n << " gelu=" << gelu);
          CHECK(differ == 0);
        }
      }
    }
}

TEST_CASE("cuda linear without batch invariance times each path once and keeps the fastest",
          "[gpu][kernels]") {
  cuda::CudaOptions o;
  o.batch_invariant = false;
  cuda::CudaBackend g(o);
  for (const std::int64_t n : {1, 4, 8, 16, 64, 65})
    check_linear(g, DType::BF16, 1024, 4544, n, true, false, true);
  check_linear(g, DType::BF16, 1024, 4544, 4, true, false, true);  // the same shape again
  const auto choices = g.linear_choices();
  REQUIRE(choices.size() == 5);  // one per token count up to 64, none repeated, none above
  for (const cuda::LinearChoice& c : choices) {
    INFO(c.tokens << " tokens: " << cuda::linear_path_name(c.path) << ", gemv " << c.us_gemv
                  << " us, mma " << c.us_mma << " us, cublaslt " << c.us_lt << " us");
    CHECK(c.rows == 1024);
    CHECK(c.cols == 4544);
    CHECK(c.us_mma > 0);
    CHECK((c.tokens <= cuda::kGemvMaxTokens) == (c.us_gemv > 0));
    const double chosen = c.path == cuda::LinearPath::kGemv  ? c.us_gemv
                          : c.path == cuda::LinearPath::kMma ? c.us_mma
                                                             : c.us_lt;
    for (const double us : {c.us_gemv, c.us_mma, c.us_lt})
      if (us > 0) CHECK(chosen <= us);
    std::cout << "tuned: 1024x4544 bf16, " << c.tokens << " tokens: gemv " << c.us_gemv
              << " us, mma " << c.us_mma << " us, cublaslt " << c.us_lt << " us -> "
              << cuda::linear_path_name(c.path) << "\n";
  }
}

TEST_CASE("cuda int8 and fp8 weights give the CPU backend's products and embeddings",
          "[gpu][kernels]") {
  // The same quantizer on both backends (kernels/quantize.h): the same codes and scales, so the
  // products differ only in fp32 summation order.
  for (const WeightQuant quant : {WeightQuant::kInt8, WeightQuant::kFp8})
    for (const DType dtype : {DType::BF16, DType::F16, DType::F32})
      for (const auto& [N, K] :
           std::vector<std::pair<std::int64_t, std::int64_t>>{{37, 45}, {130, 272}, {3, 4544}})
        for (const std::int64_t n : {1, 3, 8, 9, 40}) {
          const auto seed = static_cast<std::uint32_t>(N * 7 + K + n);
          const HostWeight w =
              random_weight(dtype, N, K, seed, 1.0f / std::sqrt(static_cast<float>(K)));
          const auto x = random_floats(static_cast<std::size_t>(n * K), seed + 1);
          const auto bias = random_floats(static_cast<std::size_t>(N), seed + 2);
          const Weight cw = ref_cpu().upload_weight(w.view(), quant);
          std::vector<float> want(static_cast<std::size_t>(n * N));
          ref_cpu().linear_gelu(x.data(), n, cw, bias.data(), want.data());
          const Weight dw = dev().upload_weight(w.view(), quant);
          REQUIRE(dw.scales != nullptr);
          auto dx = dev().upload(x), db = dev().upload(bias);
          auto dy = dev().allocate(want.size());
          poison(dev(), dy->data(), want.size());
          dev().linear_gelu(dx->data(), n, dw, db->data(), dy->data());
          const Diff d = compare(download(dev(), dy->data(), want.size()), want);
          INFO((quant == WeightQuant::kInt8 ? "int8 " : "fp8 ")
               << dtype_name(dtype) << " N=" << N << " K=" << K << " n=" << n << ": "
               << describe(d));
          CHECK(d.nans == 0);
          CHECK(d.rel() <= 2e-5);
          // A quantized table (a tied lm_head) looks up the CPU's dequantized rows exactly.
          const std::vector<std::int32_t> ids{0, static_cast<std::int32_t>(N - 1),
                                              static_cast<std::int32_t>(1 % N)};
          std::vector<float> e_want(ids.size() * static_cast<std::size_t>(K));
          ref_cpu().embedding(ids, cw, 0, e_want.data());
          auto de = dev().allocate(e_want.size());
          dev().embedding(ids, dw, 0, de->data());
          CHECK(download(dev(), de->data(), e_want.size()) == e_want);
        }
}

TEST_CASE("cuda linear_add matches the CPU backend; fused equals separate kernels bit for bit",
          "[gpu][kernels]") {
  cuda::CudaBackend plain(plain_options());
  cuda::CudaOptions any_opt;  // fused at any number of tokens: the GEMM path's adds too
  any_opt.fuse_max_tokens = 1 << 20;
  cuda::CudaBackend any(any_opt);
  for (const DType dtype : {DType::F32, DType::BF16})
    for (const auto& [N, K] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{37, 45}, {257, 1000}, {3, 4544}})
      for (const std::int64_t n : {1, 3, 8, 9, 17})
        for (const int form : {0, 1, 2}) {  // add and residual, add only, residual only
          const bool with_add = form != 2, with_res = form != 1;
          const auto seed = static_cast<std::uint32_t>(N * 17 + K + n * 3 + form);
          const HostWeight w =
              random_weight(dtype, N, K, seed, 1.0f / std::sqrt(static_cast<float>(K)));
          const auto count = static_cast<std::size_t>(n * N);
          const auto x = random_floats(static_cast<std::size_t>(n * K), seed + 1);
          const auto bias = random_floats(static_cast<std::size_t>(N), seed + 2);
          const auto add = random_floats(count, seed + 3);
          const auto res0 = random_floats(count, seed + 4, -4, 4);
          std::vector<float> want(count), want_res = res0;
          ref_cpu().linear_add(x.data(), n, w.view(), bias.data(), with_add ? add.data() : nullptr,
                               want.data(), with_res ? want_res.data() : nullptr);

          std::vector<std::vector<float>> ys, residuals;
          for (cuda::CudaBackend* g : {&dev(), &plain, &any}) {
            const Weight dw = g->upload_weight(w.view(), WeightQuant::kNone);
            auto dx = g->upload(x), db = g->upload(bias), da = g->upload(add), dr = g->upload(res0);
            auto dy = g->allocate(count);
            poison(*g, dy->data(), count);
            g->linear_add(dx->data(), n, dw, db->data(), with_add ? da->data() : nullptr,
                          dy->data(), with_res ? dr->data() : nullptr);
            ys.push_back(download(*g, dy->data(), count));
            residuals.push_back(download(*g, dr->data(), count));
          }
          INFO(dtype_name(dtype) << " N=" << N << " K=" << K << " n=" << n << " add=" << with_add
                                 << " residual=" << with_res);
          const Diff dy = compare(ys[0], want), dr = compare(residuals[0], want_res);
          INFO("y: " << describe(dy) << "; residual: " << describe(dr));
          CHECK(dy.nans == 0);
          CHECK(dy.rel() <= linear_tolerance(dtype, n, K, true));
          CHECK(dr.nans == 0);
          CHECK(dr.rel() <= linear_tolerance(dtype, n, K, true));
          CHECK(ys[0] == ys[1]);
          CHECK(residuals[0] == residuals[1]);
          CHECK(ys[2] == ys[1]);
          CHECK(residuals[2] == residuals[1]);
        }
}

TEST_CASE("cuda embedding matches the CPU backend, zeros outside the shard", "[gpu][kernels]") {
  for (const DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    const HostWeight table = random_weight(dtype, 50, 37, 11);
    const std::vector<std::int32_t> ids = {0, 10, 59, 60, 3, 12, 49, 200, 10};
    const std::int64_t first = 10;  // the shard holds ids [10, 60)
    std::vector<float> want(ids.size() * 37);
    ref_cpu().embedding(ids, table.view(), first, want.data());
    const Weight dt = dev().upload_weight(table.view(), WeightQuant::kNone);
    auto dy = dev().allocate(want.size());
    poison(dev(), dy->data(), want.size());
    dev().embedding(ids, dt, first, dy->data());
    const auto got = download(dev(), dy->data(), want.size());
    INFO(dtype_name(dtype));
    CHECK(got == want);
  }
}

TEST_CASE("cuda layer_norm and add_layer_norm match the CPU backend", "[gpu][kernels]") {
  for (const std::int64_t dim : {5, 300, 4544, 9001})  // 9001: past the register-resident kernel
    for (const std::int64_t n : {1, 7}) {
      const auto count = static_cast<std::size_t>(n * dim);
      const auto x = random_floats(count, 21, -3, 5);
      const auto a = random_floats(count, 22);
      const auto gamma = random_floats(static_cast<std::size_t>(dim), 23, 0.5f, 1.5f);
      const auto beta = random_floats(static_cast<std::size_t>(dim), 24);
      auto dx = dev().upload(x);
      auto da = dev().upload(a);
      auto dg = dev().upload(gamma);
      auto dbeta = dev().upload(beta);
      auto dy = dev().allocate(count);

      std::vector<float> want(count);
      ref_cpu().layer_norm(x.data(), n, dim, gamma.data(), beta.data(), 1e-5f, want.data());
      poison(dev(), dy->data(), count);
      dev().layer_norm(dx->data(), n, dim, dg->data(), dbeta->data(), 1e-5f, dy->data());
      Diff d = compare(download(dev(), dy->data(), count), want);
      INFO("layer_norm dim=" << dim << " n=" << n << ": " << describe(d));
      CHECK(d.nans == 0);
      CHECK(d.rel() <= 1e-6);

      std::vector<float> xs = x;
      ref_cpu().add_layer_norm(a.data(), n, dim, xs.data(), gamma.data(), beta.data(), 1e-5f,
                               want.data());
      poison(dev(), dy->data(), count);
      dev().add_layer_norm(da->data(), n, dim, dx->data(), dg->data(), dbeta->data(), 1e-5f,
                           dy->data());
      d = compare(download(dev(), dy->data(), count), want);
      INFO("add_layer_norm: " << describe(d));
      CHECK(d.nans == 0);
      CHECK(d.rel() <= 1e-6);
      CHECK(download(dev(), dx->data(), count) == xs);  // the residual sum, bit for bit
    }
}

TEST_CASE("cuda gelu, add and gather_rows match the CPU backend", "[gpu][kernels]") {
  const std::size_t count = 5000;
  const auto x = random_floats(count, 31, -6, 6);
  const auto y0 = random_floats(count, 32);
  std::vector<float> want = x;
  ref_cpu().gelu(want.data(), static_cast<std::int64_t>(count));
  auto dx = dev().upload(x);
  dev().gelu(dx->data(), static_cast<std::int64_t>(count));
  const Diff d = compare(download(dev(), dx->data(), count), want);
  INFO("gelu: " << describe(d));
  CHECK(d.nans == 0);
  CHECK(d.rel() <= 1e-6);  // erff differs from glibc's by an ulp or two

  std::vector<float> sum = y0;
  ref_cpu().add(x.data(), static_cast<std::int64_t>(count), sum.data());
  auto dx2 = dev().upload(x);
  auto dy = dev().upload(y0);
  dev().add(dx2->data(), static_cast<std::int64_t>(count), dy->data());
  CHECK(download(dev(), dy->data(), count) == sum);

  const std::int64_t dim = 50;
  const std::vector<std::int64_t> rows = {99, 0, 17, 17, 42};
  std::vector<float> gathered(rows.size() * dim);
  ref_cpu().gather_rows(x.data(), rows, dim, gathered.data());
  auto dg = dev().allocate(gathered.size());
  poison(dev(), dg->data(), gathered.size());
  dev().gather_rows(dx2->data(), rows, dim, dg->data());
  CHECK(download(dev(), dg->data(), gathered.size()) == gathered);
}

TEST_CASE("cuda rotary, kv_write and attention match the CPU backend", "[gpu][kernels]") {
  const std::vector<Shape> shapes = {
      {7, 1, 16, false}, {8, 2, 32, false}, {4, 4, 8, false}, {71, 1, 64, false},
      {6, 6, 8, true},   {16, 16, 4, true}, {8, 2, 64, true},
  };
  struct Scenario {
    const char* name;
    std::vector<std::int32_t> starts, lengths;
  };
  const std::vector<Scenario> scenarios = {
      {"decode", {0, 16, 32, 99, 699}, {1, 17, 33, 100, 700}},
      {"prefill", {0}, {45}},
      {"chunk", {20}, {50}},
      {"mixed", {0, 40, 0, 299}, {70, 41, 3, 300}},
  };
  const std::int64_t block_size = 16;
  for (const Shape& sh : shapes)
    for (const Scenario& sc : scenarios) {
      DYNAMIC_SECTION(sh.heads << "x" << sh.kv_heads << "x" << sh.head_dim
                               << (sh.alibi ? " alibi " : " rotary ") << sc.name) {
        const std::vector<float> slopes = alibi_slopes(sh.heads);
        auto dslopes = dev().upload(slopes);
        const AttentionShape cs = shape_of(sh, slopes.data());
        const AttentionShape gs = shape_of(sh, dslopes->data());
        const Batch b = make_batch(sc.starts, sc.lengths, block_size, 7);
        const auto n = static_cast<std::int64_t>(b.places.size());
        const std::int64_t stride = sh.kv_heads * (sh.heads / sh.kv_heads + 2) * sh.head_dim;
        const std::int64_t out_dim = sh.heads * sh.head_dim;

        // Random KV pools (earlier positions) and qkv rows; the device gets the same.
        const auto pool_floats =
            static_cast<std::size_t>(b.blocks * block_size * sh.kv_heads * sh.head_dim);
        std::vector<float> k = random_floats(pool_floats, 41), v = random_floats(pool_floats, 42);
        std::vector<float> qkv = random_floats(static_cast<std::size_t>(n * stride), 43, -2, 2);
        const std::vector<float> k0 = k, v0 = v, qkv0 = qkv;
        const std::vector<float> table = rotary_table(10000.0f, sh.head_dim, kMaxContext);
        auto dk = dev().upload(k), dv = dev().upload(v), dqkv = dev().upload(qkv);
        auto dtable = dev().upload(table);

        // The device reads block tables through its own staged copy: give it separate host
        // tables so a kernel reading the CPU's memory by mistake would be caught.
        const auto gpu_tables = b.tables;
        const auto gpu_places = rebind(b, gpu_tables);
        dev().begin_step();

        if (!sh.alibi) {
          ref_cpu().rotary(qkv.data(), b.places, cs, table.data());
          dev().rotary(dqkv->data(), gpu_places, gs, dtable->data());
          const Diff d = compare(download(dev(), dqkv->data(), qkv.size()), qkv);
          INFO("rotary: " << describe(d));
          CHECK(d.nans == 0);
          CHECK(d.rel() <= 1e-6);
          // Continue from identical inputs whatever the rounding.
          auto fresh = dev().upload(qkv);
          std::swap(dqkv, fresh);
        }

        const KvLayer ckv{k.data(), v.data(), sh.kv_heads, sh.head_dim, block_size};
        const KvLayer gkv{dk->data(), dv->data(), sh.kv_heads, sh.head_dim, block_size};
        ref_cpu().kv_write(qkv.data(), b.places, cs, ckv);
        dev().kv_write(dqkv->data(), gpu_places, gs, gkv);
        CHECK(download(dev(), dk->data(), pool_floats) == k);
        CHECK(download(dev(), dv->data(), pool_floats) == v);

        std::vector<float> want(static_cast<std::size_t>(n * out_dim));
        ref_cpu().attention(qkv.data(), b.places, cs, ckv, want.data());
        auto dout = dev().allocate(want.size());
        poison(dev(), dout->data(), want.size());
        dev().attention(dqkv->data(), gpu_places, gs, gkv, dout->data());
        const auto got = download(dev(), dout->data(), want.size());
        const Diff d = compare(got, want);
        INFO("attention over " << n << " tokens: " << describe(d));
        CHECK(d.nans == 0);
        CHECK(d.rel() <= 1e-5);

        // The fused forms (rotary with the KV write; the key ranges combined by the attention's
        // last block) against separate kernels on a plain backend, from the same inputs.
        cuda::CudaBackend plain(plain_options());
        std::vector<std::vector<float>> outs;
        for (cuda::CudaBackend* g : {&dev(), &plain}) {
          auto q = g->upload(qkv0), kk = g->upload(k0), vv = g->upload(v0), tb = g->upload(table),
               sl = g->upload(slopes);
          const KvLayer kvl{kk->data(), vv->data(), sh.kv_heads, sh.head_dim, block_size};
          const AttentionShape as = shape_of(sh, sl->data());
          auto o = g->allocate(want.size());
          poison(*g, o->data(), want.size());
          g->begin_step();
          g->rotary_kv_write(q->data(), gpu_places, as, sh.alibi ? nullptr : tb->data(), kvl);
          g->attention(q->data(), gpu_places, as, kvl, o->data());
          outs.push_back(download(*g, q->data(), qkv0.size()));
          outs.push_back(download(*g, kk->data(), pool_floats));
          outs.push_back(download(*g, vv->data(), pool_floats));
          outs.push_back(download(*g, o->data(), want.size()));
        }
        CHECK(outs[0] == outs[4]);  // qkv, rotated
        CHECK(outs[1] == outs[5]);  // K pool
        CHECK(outs[2] == outs[6]);  // V pool
        CHECK(outs[3] == outs[7]);  // attention
        CHECK(compare(outs[3], want).rel() <= 1e-5);
      }
    }
}

TEST_CASE("cuda attention sees block tables that change between steps", "[gpu][kernels]") {
  // Same places (positions and table pointers) in two steps, different table contents: after
  // begin_step the backend must read the new tables.
  const Shape sh{8, 2, 16, false};
  const AttentionShape s = shape_of(sh, nullptr);
  const std::int64_t bs = 4, blocks = 16;
  const auto pool = static_cast<std::size_t>(blocks * bs * sh.kv_heads * sh.head_dim);
  std::vector<float> k = random_floats(pool, 51), v = random_floats(pool, 52);
  const std::int64_t stride = sh.kv_heads * (sh.heads / sh.kv_heads + 2) * sh.head_dim;
  const auto qkv = random_floats(static_cast<std::size_t>(stride), 53);
  auto dk = dev().upload(k), dv = dev().upload(v), dqkv = dev().upload(qkv);
  const KvLayer ckv{k.data(), v.data(), sh.kv_heads, sh.head_dim, bs};
  const KvLayer gkv{dk->data(), dv->data(), sh.kv_heads, sh.head_dim, bs};
  std::vector<std::int32_t> table = {3, 1, 2, 0};
  const std::vector<TokenPlace> places = {TokenPlace{13, table.data()}};
  std::vector<float> want(static_cast<std::size_t>(sh.heads * sh.head_dim));
  auto dout = dev().allocate(want.size());
  for (int step = 0; step < 2; ++step) {
    if (step == 1) table = {9, 8, 7, 6};
    dev().begin_step();
    ref_cpu().attention(qkv.data(), places, s, ckv, want.data());
    poison(dev(), dout->data(), want.size());
    dev().attention(dqkv->data(), places, s, gkv, dout->data());
    const Diff d = compare(download(dev(), dout->data(), want.size()), want);
    INFO("step " << step << ": " << describe(d));
    CHECK(d.nans == 0);
    CHECK(d.rel() <= 1e-5);
  }
}
