// The model-level checks every KV cache dtype passes (tests/test_kv_dtype.cpp for 16 bits,
// tests/test_kv_8bit.cpp for 8): a request's logits bit-identical alone, batched and chunked,
// and prefill logits close to the fp32 cache's on every fixture.
#pragma once

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/model/falcon/falcon.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/batch_invariance.h"
#include "tests/golden.h"
#include "tests/kv_dtype_bounds.h"
#include "tests/reference_generate.h"

namespace saker::test {

// Alone (whole prompt in one step), alone chunked at 16 and 5 tokens per iteration, and among 31
// other requests: the same tokens and the same logits bit for bit, at each KV dtype.
inline void check_kv_dtype_invariance(std::span<const DType> types) {
  for (const char* name : {"gqa8x2-fp32", "mqa7-bf16", "rw-alibi16-fp32"})
    for (const DType t : types) {
      const auto dir = kFixtures / name;
      const FalconConfig config = load_config(dir);
      const Checkpoint checkpoint = Checkpoint::open(dir);
      CpuBackend backend(2, config.max_positions, 1);
      FalconModel model(config, checkpoint, backend, ModelOptions{1024, 32, 256});
      KvShape kv = model.kv_shape();
      kv.dtype = t;
      KvCache cache(backend, kv, 512, 4);
      SingleRankCommunicator single;
      StepRunner runner(model, cache, single);
      const auto all = invariance_requests(config.vocab_size);
      for (const std::uint64_t target : {1u, 2u}) {
        const std::vector<BatchRequest> one{all[target - 1]};
        const Trace base = trace_run(runner, 1024, one, target);
        REQUIRE(base.logits.size() == base.tokens.size());
        for (const std::int32_t budget : {16, 5}) {
          INFO(name << " " << dtype_name(t) << " request " << target << ", " << budget
                    << " tokens per iteration");
          const Trace alone = trace_run(runner, budget, one, target);
          const Trace crowd = trace_run(runner, budget, all, target);
          CHECK(alone.tokens == base.tokens);
          CHECK(crowd.tokens == base.tokens);
          CHECK(alone.logits == base.logits);
          CHECK(crowd.logits == base.logits);
        }
      }
    }
}

// The worst relative L2 error of prefill logits against the fp32 cache and against
// transformers' fp32 logits (the fixture's reference), over every fixture's cases, below each
// dtype's bound (tests/kv_dtype_bounds.h); greedy agreement over 64 tokens with the fp32 cache's
// continuation, and over the reference's greedy tokens with transformers', is printed for the docs.
inline void check_kv_dtype_accuracy(std::span<const DType> types) {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const FalconConfig config = load_config(dir);
      const Checkpoint checkpoint = Checkpoint::open(dir);
      CpuBackend backend(2, config.max_positions, 1);
      FalconModel model(config, checkpoint, backend, ModelOptions{128, 128, 256});
      const auto ref = read_reference(dir);
      auto greedy = [&](DType t, const std::vector<std::int32_t>& prompt, std::int64_t tokens) {
        KvShape kv = model.kv_shape();
        kv.dtype = t;
        KvCache cache(backend, kv, 64, 4);
        GenerateOptions opt;
        opt.max_new_tokens = tokens;
        opt.ignore_eos = true;
        return generate_sequence(model, cache, prompt, opt).tokens;
      };
      auto agreeing = [](const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
        std::size_t same = 0;
        while (same < a.size() && same < b.size() && a[same] == b[same]) ++same;
        return same;
      };
      const auto V = static_cast<std::size_t>(config.vocab_size);
      for (const DType t : types) {
        double worst = 0, worst_hf = 0;
        std::size_t agree = 0, total = 0, agree_hf = 0, total_hf = 0;
        for (const auto& cs : ref["cases"]) {
          const auto prompt = cs["prompt_ids"].get<std::vector<std::int32_t>>();
          const auto base = prompt_logits(model, backend, DType::F32, prompt);
          const auto got = prompt_logits(model, backend, t, prompt);
          for (std::size_t p = 0; p < prompt.size(); ++p) {
            const auto row = std::span(got).subspan(p * V, V);
            const std::vector<float> want(base.begin() + p * V, base.begin() + (p + 1) * V);
            worst = std::max(worst, rel_l2(row, want));
            worst_hf = std::max(worst_hf, rel_l2(row, cs["logits"][p].get<std::vector<float>>()));
          }
          const auto a = greedy(DType::F32, prompt, 64), b = greedy(t, prompt, 64);
          agree += agreeing(a, b);
          total += a.size();
          const auto hf = cs["greedy_ids"].get<std::vector<std::int32_t>>();
          agree_hf += agreeing(hf, greedy(t, prompt, static_cast<std::int64_t>(hf.size())));
          total_hf += hf.size();
        }
        std::printf(
            "kv_dtype accuracy: %s %s: worst prefill logit rel L2 vs fp32 KV %.3g, vs "
            "transformers %.3g; greedy tokens agreeing before the first difference: with fp32 KV "
            "%zu/%zu, with transformers %zu/%zu\n",
            dir.filename().string().c_str(), std::string(dtype_name(t)).c_str(), worst, worst_hf,
            agree, total, agree_hf, total_hf);
        INFO(dir.filename().string()
             << " " << dtype_name(t) << ": worst " << worst << ", vs transformers " << worst_hf);
        CHECK(worst < kv_logit_bound(t));
        CHECK(worst_hf < kv_logit_bound(t));
      }
    }
  }
}

}  // namespace saker::test
