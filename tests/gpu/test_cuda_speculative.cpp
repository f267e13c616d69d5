// Speculative decoding on the CUDA backend: the rolling batch with the target on the GPU, by
// prompt lookup and by a draft model (the target itself, so every proposal must be accepted),
// gives the tokens and log-probabilities of decoding without it, on every fixture. This holds
// only where the verification step's logits equal a one-token step's bit for bit, which is
// what this test checks of the CUDA kernels (the CPU's are batch-invariant by construction).
#include <map>

#include <catch2/catch.hpp>

#include "tests/gpu/gpu_harness.h"
// golden.h reads the fixtures from SAKER_FIXTURES_DIR (the harness's fixtures_root()).
#include "tests/golden.h"

#include "engine/batch_engine.h"
#include "engine/model/falcon/falcon.h"
#include "engine/step_runner.h"
#include "parallel/communicator.h"
#include "tests/reference_generate.h"
#include "tests/spec_requests.h"

using namespace saker;
using namespace saker::test;
using namespace saker::gpu_test;
namespace fs = std::filesystem;

namespace {

struct GpuModel {
  FalconConfig config;
  Checkpoint ck;
  FalconModel model;
  KvCache cache;
  GpuModel(const fs::path& dir, Backend& b)
      : config(load_config(dir)),
        ck(Checkpoint::open(dir)),
        model(config, ck, b, ModelOptions{64, 32, 256}),
        cache(b, model.kv_shape(), 128, 4) {}
};

struct Outcome {
  std::map<std::uint64_t, BatchResult> results;
  EngineStats stats;
};

Outcome run(StepRunner& runner, const FalconConfig& c, const std::vector<BatchRequest>& reqs,
            const SpeculationConfig& spec) {
  BatchEngine engine(runner, {4, 64, AdmissionPolicy::kMaxUtilization}, c.eos_token_ids);
  engine.set_speculation(spec);
  for (const auto& r : reqs) engine.add(r);
  run_to_completion(engine);
  return {engine.results(), engine.stats()};
}

}  // namespace

TEST_CASE("cuda: speculative decoding gives plain decoding's tokens and log-probabilities",
          "[gpu][speculative]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      cuda::CudaBackend gpu;
      GpuModel target(dir, gpu), draft(dir, gpu);
      SingleRankCommunicator single;
      StepRunner runner(target.model, target.cache, single);
      runner.attach_draft(draft.model, draft.cache);
      const auto reqs = copy_requests(target.config.vocab_size, 6, 99, 16);
      const Outcome plain = run(runner, target.config, reqs, {});
      for (const auto method : {SpecMethod::kNgram, SpecMethod::kDraft}) {
        for (const int k : {1, 3, 5}) {
          INFO((method == SpecMethod::kDraft ? "draft" : "ngram") << ", K = " << k);
          const Outcome spec =
              run(runner, target.config, reqs, {method, k, 4, SpecAcceptance::kExact, false});
          CHECK(spec.stats.spec_draft_tokens > 0);
          if (method == SpecMethod::kDraft)
            CHECK(spec.stats.spec_accepted_tokens == spec.stats.spec_draft_tokens);
          for (const auto& r : reqs) {
            INFO("request " << r.id);
            CHECK(spec.results.at(r.id).tokens == plain.results.at(r.id).tokens);
            CHECK(spec.results.at(r.id).logprobs == plain.results.at(r.id).logprobs);
          }
        }
      }
    }
  }
}
