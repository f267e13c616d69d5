// Continuous batching on the real model: a request's tokens do not depend on what else is in
// the batch, on how its prompt was chunked, or on being preempted and recomputed.
#include <random>

#include <catch2/catch.hpp>

#include "engine/batch_engine.h"
#include "engine/model/falcon/falcon.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/batch_invariance.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;

namespace {

struct Loaded {
  FalconConfig config;
  Checkpoint checkpoint;
  CpuBackend backend;
  FalconModel model;
  explicit Loaded(const std::filesystem::path& dir)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        backend(2, config.max_positions, 1),
        model(config, checkpoint, backend, ModelOptions{64, 32, 256}) {}
};

std::vector<BatchRequest> requests(std::int64_t vocab, bool sampled) {
  std::mt19937 rng(13);
  std::vector<BatchRequest> out;
  for (std::uint64_t id = 1; id <= 12; ++id) {
    BatchRequest r;
    r.id = id;
    r.prompt.resize(1 + rng() % 30);
    for (auto& t : r.prompt)
      t = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(vocab));
    r.max_new_tokens = 16;
    r.ignore_eos = true;
    if (sampled) {
      r.sampling.temperature = 1.0f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = id;
    }
    out.push_back(r);
  }
  return out;
}

// Each request alone, through the single-sequence path.
std::vector<std::int32_t> alone(Loaded& m, const BatchRequest& r) {
  KvCache cache(m.backend, m.model.kv_shape(), 16, 4);
  GenerateOptions opt;
  opt.max_new_tokens = r.max_new_tokens;
  opt.ignore_eos = true;
  opt.sampling = r.sampling;
  return generate_sequence(m.model, cache, r.prompt, opt).tokens;
}

}  // namespace

TEST_CASE("batched, chunked and preempted requests generate what they generate alone", "[batch]") {
  for (const char* name : {"gqa8x2-fp32", "mqa7-bf16", "rw-alibi16-fp32"}) {
    Loaded m(kFixtures / name);
    for (const bool sampled : {false, true}) {
      const auto reqs = requests(m.config.vocab_size, sampled);
      for (const std::int64_t pool_blocks : {200, 24}) {  // 24 blocks of 4 cannot hold them all
        KvCache cache(m.backend, m.model.kv_shape(), pool_blocks, 4);
        SingleRankCommunicator single;
        StepRunner runner(m.model, cache, single);
        // 16 tokens a step: prompts of up to 30 tokens are prefilled in chunks beside decodes.
        BatchEngine engine(runner, {8, 16, AdmissionPolicy::kMaxUtilization},
                           m.config.eos_token_ids);
        for (const auto& r : reqs) engine.add(r);
        run_to_completion(engine);
        INFO(name << (sampled ? " sampled" : " greedy") << ", pool of " << pool_blocks
                  << " blocks");
        if (pool_blocks == 24) CHECK(engine.scheduler().preemptions() > 0);
        for (const auto& r : reqs) {
          REQUIRE(engine.results().count(r.id) == 1);
          CHECK(engine.results().at(r.id).tokens == alone(m, r));
          CHECK(engine.results().at(r.id).finish == FinishReason::kLength);
        }
        CHECK(engine.blocks().free_blocks() == engine.blocks().num_blocks());
      }
    }
  }
}

TEST_CASE("the batch engine stops a request at eos", "[batch]") {
  Loaded m(kFixtures / "gqa8x2-fp32");
  const auto ref = read_reference(kFixtures / "gqa8x2-fp32");
  const auto prompt = ref["cases"][1]["prompt_ids"].get<std::vector<std::int32_t>>();
  const auto want = ref["cases"][1]["greedy_ids"].get<std::vector<std::int32_t>>();
  KvCache cache(m.backend, m.model.kv_shape(), 64, 4);
  SingleRankCommunicator single;
  StepRunner runner(m.model, cache, single);
  // Declare transformers' 6th generated token the eos: generation must end right there.
  BatchEngine engine(runner, {4, 32, AdmissionPolicy::kMaxUtilization}, {want[5]});
  BatchRequest r;
  r.id = 7;
  r.prompt = prompt;
  r.max_new_tokens = 40;
  engine.add(r);
  run_to_completion(engine);
  const auto first = std::find(want.begin(), want.end(), want[5]);
  CHECK(engine.results().at(7).tokens == std::vector<std::int32_t>(want.begin(), first + 1));
  CHECK(engine.results().at(7).finish == FinishReason::kEosToken);
}

TEST_CASE("a request's logits are bit-identical alone and among 31 others, chunked or not",
          "[batch][invariance]") {
  for (const char* name : {"gqa8x2-fp32", "mqa7-bf16", "rw-alibi16-fp32"}) {
    const auto dir = kFixtures / name;
    const FalconConfig config = load_config(dir);
    const Checkpoint checkpoint = Checkpoint::open(dir);
    CpuBackend backend(2, config.max_positions, 1);
    FalconModel model(config, checkpoint, backend, ModelOptions{1024, 32, 256});
    KvCache cache(backend, model.kv_shape(), 512, 4);
    SingleRankCommunicator single;
    StepRunner runner(model, cache, single);
    const auto all = invariance_requests(config.vocab_size);
    for (const std::uint64_t target : {1u, 2u}) {
      const std::vector<BatchRequest> one{all[target - 1]};
      const Trace base = trace_run(runner, 1024, one, target);  // alone, prompt in one step
      REQUIRE(base.logits.size() == base.tokens.size());
      for (const std::int32_t budget : {1024, 16, 5}) {
        INFO(name << " request " << target << ", " << budget << " tokens per iteration");
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
