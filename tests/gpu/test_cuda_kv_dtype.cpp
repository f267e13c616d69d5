// The CUDA backend's 16- and 8-bit KV caches against the CPU backend's: kv_write stores the same
// bytes (codes and scales), attention over them gives the CPU's output within fp32 reordering,
// the fused and separate kernels agree bit for bit, and the whole model at each KV dtype follows
// the CPU backend at that dtype.
#include <cstring>
#include <iostream>

#include <catch2/catch.hpp>

#include "tests/gpu/gpu_harness.h"
// golden.h reads the fixtures from SAKER_FIXTURES_DIR, which names the harness's fixtures_root().
#include "tests/golden.h"

#include "engine/model/falcon/falcon.h"
#include "engine/model/positions.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/attention_cases.h"
#include "tests/kv_dtype_bounds.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::gpu_test;

namespace {

constexpr std::int64_t kMaxContext = 1024;
constexpr DType kNarrowTypes[] = {DType::BF16, DType::F16, DType::I8, DType::F8E4M3};

// A KV pool of one layer in host memory and its device copy; floats are raw storage of `dtype`.
struct Pool {
  std::int64_t slots, kv_heads, head_dim;
  DType dtype;
  std::vector<float> k, v, ks, vs;  // codes, scales (8-bit types)
  std::size_t floats() const {
    return (static_cast<std::size_t>(slots * kv_heads * head_dim) * dtype_size(dtype) + 3) / 4;
  }
  std::size_t scales() const {
    return kv_dtype_has_scales(dtype) ? static_cast<std::size_t>(slots * kv_heads) : 0;
  }
  Pool(std::int64_t s, std::int64_t h, std::int64_t d, DType t)
      : slots(s), kv_heads(h), head_dim(d), dtype(t) {
    k.assign(floats(), 0.0f);
    v.assign(floats(), 0.0f);
    ks.assign(std::max<std::size_t>(1, scales()), 0.0f);
    vs.assign(std::max<std::size_t>(1, scales()), 0.0f);
  }
  KvLayer layer(std::int64_t block_size) {
    return KvLayer{k.data(),
                   v.data(),
                   kv_heads,
                   head_dim,
                   block_size,
                   dtype,
                   scales() ? ks.data() : nullptr,
                   scales() ? vs.data() : nullptr};
  }
};

struct DevicePool {
  std::unique_ptr<Buffer> k, v, ks, vs;
  DType dtype;
  std::int64_t kv_heads, head_dim;
  DevicePool(Backend& b, const Pool& p)
      : k(b.upload(p.k)),
        v(b.upload(p.v)),
        ks(b.upload(p.ks)),
        vs(b.upload(p.vs)),
        dtype(p.dtype),
        kv_heads(p.kv_heads),
        head_dim(p.head_dim) {}
  KvLayer layer(std::int64_t block_size) const {
    const bool scaled = kv_dtype_has_scales(dtype);
    return KvLayer{k->data(),
                   v->data(),
                   kv_heads,
                   head_dim,
                   block_size,
                   dtype,
                   scaled ? ks->data() : nullptr,
                   scaled ? vs->data() : nullptr};
  }
};

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

CpuBackend& ref_cpu() {
  static CpuBackend b(2, kMaxContext, 1);
  return b;
}

}  // namespace

TEST_CASE("cuda kv_write stores the CPU backend's bytes and attention reads them, every KV dtype",
          "[gpu][kernels][kv_dtype]") {
  const std::vector<Shape> shapes = {
      {7, 1, 16, false},
      {8, 2, 32, false},
      {71, 1, 64, false},
      {6, 6, 8, true},
      {8, 2, 64, true},
      {4, 2, 12, false},  // head_dim 12: 4-element loads of 16-bit rows at
                          // 8-byte alignment
      {4, 4, 6, false},   // head_dim 6: the element-at-a-time load path
  };
  struct Scenario {
    const char* name;
    std::vector<std::int32_t> starts, lengths;
  };
  const std::vector<Scenario> scenarios = {
      {"decode", {0, 16, 99, 699}, {1, 17, 100, 700}},
      {"mixed", {0, 40, 0, 299}, {70, 41, 3, 300}},
  };
  const std::int64_t bs = 16;
  cuda::CudaBackend& dev = shared_backend();
  for (const DType t : kNarrowTypes)
    for (const Shape& sh : shapes)
      for (const Scenario& sc : scenarios) {
        DYNAMIC_SECTION(dtype_name(t) << " " << sh.heads << "x" << sh.kv_heads << "x" << sh.head_dim
                                      << (sh.alibi ? " alibi " : " rotary ") << sc.name) {
          const std::vector<float> slopes = alibi_slopes(sh.heads);
          auto dslopes = dev.upload(slopes);
          const AttentionShape cs = shape_of(sh, slopes.data());
          const AttentionShape gs = shape_of(sh, dslopes->data());
          const Batch b = make_batch(sc.starts, sc.lengths, bs, 11);
          const std::int64_t stride = sh.kv_heads * (sh.heads / sh.kv_heads + 2) * sh.head_dim;
          const std::int64_t out_dim = sh.heads * sh.head_dim;

          // Earlier positions written by the CPU backend from random keys and values; the device
          // starts from a copy of those bytes.
          Pool pool(b.blocks * bs, sh.kv_heads, sh.head_dim, t);
          std::vector<TokenPlace> history;
          for (std::size_t i = 0; i < b.tables.size(); ++i)
            for (std::int32_t p = 0; p < sc.starts[i]; ++p)
              history.push_back(TokenPlace{p, b.tables[i].data()});
          const auto past = random_floats(history.size() * static_cast<std::size_t>(stride), 61);
          ref_cpu().kv_write(past.data(), history, cs, pool.layer(bs));
          DevicePool dpool(dev, pool);

          const auto n = static_cast<std::int64_t>(b.places.size());
          // Some rows far from 1, some all zero (scale 0), so every code path is taken.
          std::vector<float> qkv = random_floats(static_cast<std::size_t>(n * stride), 62, -3, 3);
          for (std::int64_t d = 0; d < stride; ++d) qkv[static_cast<std::size_t>(d)] *= 1e-3f;
          if (n > 1) std::fill_n(qkv.begin() + stride, stride, 0.0f);
          auto dqkv = dev.upload(qkv);
          const auto gpu_tables = b.tables;
          const auto gpu_places = rebind(b, gpu_tables);
          dev.begin_step();
          ref_cpu().kv_write(qkv.data(), b.places, cs, pool.layer(bs));
          dev.kv_write(dqkv->data(), gpu_places, gs, dpool.layer(bs));
          CHECK(same_bytes(download(dev, dpool.k->data(), pool.k.size()), pool.k));
          CHECK(same_bytes(download(dev, dpool.v->data(), pool.v.size()), pool.v));
          CHECK(same_bytes(download(dev, dpool.ks->data(), pool.ks.size()), pool.ks));
          CHECK(same_bytes(download(dev, dpool.vs->data(), pool.vs.size()), pool.vs));

          std::vector<float> want(static_cast<std::size_t>(n * out_dim));
          ref_cpu().attention(qkv.data(), b.places, cs, pool.layer(bs), want.data());
          auto dout = dev.allocate(want.size());
          poison(dev, dout->data(), want.size());
          dev.attention(dqkv->data(), gpu_places, gs, dpool.layer(bs), dout->data());
          const Diff d = compare(download(dev, dout->data(), want.size()), want);
          INFO("attention over " << n << " tokens: " << describe(d));
          CHECK(d.nans == 0);
          CHECK(d.rel() <= 1e-5);

          // Rotary with the KV write (fused for 16 bits, rotary then kv_write for 8) against
          // separate kernels on a plain backend, from the same inputs: the same bits.
          if (!sh.alibi) {
            const std::vector<float> table = rotary_table(10000.0f, sh.head_dim, kMaxContext);
            cuda::CudaBackend plain(plain_options());
            std::vector<std::vector<float>> outs;
            for (cuda::CudaBackend* g : {&dev, &plain}) {
              DevicePool gp(*g, pool);
              auto q = g->upload(qkv), tb = g->upload(table);
              auto o = g->allocate(want.size());
              poison(*g, o->data(), want.size());
              g->begin_step();
              g->rotary_kv_write(q->data(), gpu_places, gs, tb->data(), gp.layer(bs));
              g->attention(q->data(), gpu_places, gs, gp.layer(bs), o->data());
              outs.push_back(download(*g, gp.k->data(), pool.k.size()));
              outs.push_back(download(*g, gp.v->data(), pool.v.size()));
              outs.push_back(download(*g, gp.ks->data(), pool.ks.size()));
              outs.push_back(download(*g, o->data(), want.size()));
            }
            for (std::size_t i = 0; i < 4; ++i) CHECK(same_bytes(outs[i], outs[i + 4]));
          }
        }
      }
}

TEST_CASE("cuda model at each KV dtype follows the CPU backend at that dtype",
          "[gpu][model][kv_dtype]") {
  using namespace saker::test;
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const FalconConfig config = load_config(dir);
      const Checkpoint ck = Checkpoint::open(dir);
      const auto ref = read_reference(dir);
      const auto V = static_cast<std::size_t>(config.vocab_size);
      CpuBackend cpu(2, config.max_positions, 1);
      cuda::CudaBackend gpu;
      FalconModel on_cpu(config, ck, cpu, ModelOptions{128, 128, 256});
      FalconModel on_gpu(config, ck, gpu, ModelOptions{128, 128, 256});
      for (const DType t : kNarrowTypes) {
        double vs_cpu = 0;
        for (const auto& c : ref["cases"]) {
          const auto prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
          const auto want = prompt_logits(on_cpu, cpu, t, prompt);
          const auto got = prompt_logits(on_gpu, gpu, t, prompt);
          REQUIRE(got.size() == want.size());
          for (std::size_t p = 0; p < prompt.size(); ++p)
            vs_cpu = std::max(vs_cpu, rel_l2(std::span(got).subspan(p * V, V),
                                             std::vector<float>(want.begin() + p * V,
                                                                want.begin() + (p + 1) * V)));
        }
        std::cout << dir.filename().string() << " KV " << dtype_name(t)
                  << ": prefill logits, worst relative L2 error vs the CPU backend at the same "
                     "KV dtype "
                  << vs_cpu << "\n";
        // Keys and values differ from the CPU's in the last fp32 bits before they are narrowed;
        // an element that lands on the other side of a rounding boundary moves by one step of
        // the dtype, so the bound is the dtype's own error against the fp32 cache.
        CHECK(vs_cpu < kv_logit_bound(t));
      }
    }
  }
}
