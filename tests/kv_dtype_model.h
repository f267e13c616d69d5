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

// The worst relative L2 error of prefill logits against the fp32 cache, over every fixture's
// cases, below each dtype's bound; greedy agreement over 64 tokens is printed for the docs.
inline void check_kv_dtype_accuracy(std::span<const std::pair<DType, double>> bounds) {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const FalconConfig config = load_config(dir);
      const Checkpoint checkpoint = Checkpoint::open(dir);
      CpuBackend backend(2, config.max_positions, 1);
      FalconModel model(config, checkpoint, backend, ModelOptions{128, 128, 256});
      const auto ref = read_reference(dir);
      auto run = [&](DType t, const std::vector<std::int32_t>& prompt) {
        KvShape kv = model.kv_shape();
        kv.dtype = t;
        KvCache cache(backend, kv, 64, 4);
        std::vector<std::int32_t> table(64);
        std::iota(table.begin(), table.end(), 0);
        const SequenceStep step{prompt, 0, table, true};
        const auto logits = model.forward({&step, 1}, cache);
        return std::vector<float>(logits.begin(), logits.end());
      };
      auto greedy = [&](DType t, const std::vector<std::int32_t>& prompt) {
        KvShape kv = model.kv_shape();
        kv.dtype = t;
        KvCache cache(backend, kv, 64, 4);
        GenerateOptions opt;
        opt.max_new_tokens = 64;
        opt.ignore_eos = true;
        return generate_sequence(model, cache, prompt, opt).tokens;
      };
      const auto V = static_cast<std::size_t>(config.vocab_size);
      for (const auto& [t, bound] : bounds) {
        double worst = 0;
        std::size_t agree = 0, total = 0;
        for (const auto& cs : ref["cases"]) {
          const auto prompt = cs["prompt_ids"].get<std::vector<std::int32_t>>();
          const auto base = run(DType::F32, prompt), got = run(t, prompt);
          for (std::size_t p = 0; p < prompt.size(); ++p) {
            const std::vector<float> want(base.begin() + p * V, base.begin() + (p + 1) * V);
            worst = std::max(worst, rel_l2(std::span(got).subspan(p * V, V), want));
          }
          const auto a = greedy(DType::F32, prompt), b = greedy(t, prompt);
          std::size_t same = 0;
          while (same < a.size() && a[same] == b[same]) ++same;
          agree += same;
          total += a.size();
        }
        std::printf(
            "kv_dtype accuracy: %s %s: worst prefill logit rel L2 vs fp32 KV %.3g; greedy "
            "tokens agreeing before the first difference %zu/%zu\n",
            dir.filename().string().c_str(), std::string(dtype_name(t)).c_str(), worst, agree,
            total);
        INFO(dir.filename().string() << " " << dtype_name(t) << ": worst " << worst);
        CHECK(worst < bound);
      }
    }
  }
}

}  // namespace saker::test
