// Speculative decoding by prompt lookup (BatchEngine::set_speculation): on every fixture, with
// K = 1, 3 and 5, greedy and seeded-sampled requests generate exactly what they generate without
// it, token for token and log-probability for log-probability, including requests that stop
// mid-proposal (eos, stop string, max_new_tokens), under preemption in a tiny KV pool, and with a
// cancellation; and proposals are accepted, so the comparison means something.
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/batch_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine_rig.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"
#include "tests/text_model.h"

using namespace saker;
using namespace saker::test;

namespace {

struct Run {
  std::map<std::uint64_t, BatchResult> results;
  EngineStats stats;
  std::uint64_t preemptions = 0;
  std::int32_t free_blocks = 0, total_blocks = 0;
};

Run run(EngineRig& rig, const std::vector<BatchRequest>& reqs, int k,
        const Tokenizer* tok = nullptr, std::uint64_t cancel_id = 0) {
  SchedulerConfig cfg{8, 64, AdmissionPolicy::kMaxUtilization};
  BatchEngine engine(rig.runner, cfg, rig.config.eos_token_ids, tok);
  engine.set_speculation(k);
  for (const auto& r : reqs) engine.add(r);
  int steps = 0;
  while (!engine.idle()) {
    engine.step();
    if (++steps == 4 && cancel_id) engine.cancel(cancel_id);
  }
  return {engine.results(), engine.stats(), engine.scheduler().preemptions(),
          engine.blocks().free_blocks(), engine.blocks().num_blocks()};
}

// Copy-heavy prompts (a phrase three times), greedy and seeded, with and without eos, with
// log-probabilities, and one that ends after 3 tokens, mid-proposal.
std::vector<BatchRequest> requests(std::int64_t vocab) {
  std::vector<BatchRequest> out;
  std::uint64_t x = 12345;
  for (std::uint64_t id = 1; id <= 8; ++id) {
    BatchRequest r;
    r.id = id;
    std::vector<std::int32_t> phrase;
    for (int i = 0; i < 6; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      phrase.push_back(static_cast<std::int32_t>((x >> 33) % static_cast<std::uint64_t>(vocab)));
    }
    for (int rep = 0; rep < 3; ++rep) r.prompt.insert(r.prompt.end(), phrase.begin(), phrase.end());
    r.max_new_tokens = id == 8 ? 3 : 24;
    r.ignore_eos = id % 2 == 0;
    r.logprobs = id % 3 == 0 ? 2 : -1;
    if (id % 4 >= 2) {
      r.sampling.temperature = 1.0f;
      r.sampling.seed = id;
    }
    out.push_back(std::move(r));
  }
  return out;
}

void check_same(const Run& plain, const Run& spec, const std::vector<BatchRequest>& reqs) {
  for (const auto& r : reqs) {
    const BatchResult& a = plain.results.at(r.id);
    const BatchResult& b = spec.results.at(r.id);
    INFO("request " << r.id);
    CHECK(b.tokens == a.tokens);
    CHECK(b.text == a.text);
    CHECK(b.finish == a.finish);
    REQUIRE(b.logprobs.size() == a.logprobs.size());
    for (std::size_t i = 0; i < a.logprobs.size(); ++i) {
      CHECK(b.logprobs[i] == a.logprobs[i]);  // bit for bit
      REQUIRE(b.top_logprobs[i].size() == a.top_logprobs[i].size());
      for (std::size_t j = 0; j < a.top_logprobs[i].size(); ++j) {
        CHECK(b.top_logprobs[i][j].id == a.top_logprobs[i][j].id);
        CHECK(b.top_logprobs[i][j].logprob == a.top_logprobs[i][j].logprob);
      }
    }
  }
  CHECK(spec.free_blocks == spec.total_blocks);
}

}  // namespace

TEST_CASE("prompt-lookup speculation changes no token or log-probability, on every fixture",
          "[speculative][batch]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      for (const std::int64_t blocks : {256, 24}) {  // 24 blocks of 4: preemption
        EngineRig rig(dir, blocks);
        const auto reqs = requests(rig.config.vocab_size);
        const Run plain = run(rig, reqs, 0);
        CHECK(plain.stats.spec_drafts == 0);
        std::uint64_t accepted = 0;
        for (const int k : {1, 3, 5}) {
          INFO("K = " << k << ", " << blocks << " blocks");
          const Run spec = run(rig, reqs, k);
          check_same(plain, spec, reqs);
          CHECK(spec.stats.spec_draft_tokens >= spec.stats.spec_accepted_tokens);
          accepted += spec.stats.spec_accepted_tokens;
          // Never more steps for the same tokens (proposals use only what the budget leaves).
          CHECK(spec.stats.iterations <= plain.stats.iterations);
          if (blocks == 24) CHECK(spec.preemptions + plain.preemptions > 0);
        }
        CHECK(accepted > 0);
      }
    }
  }
}

TEST_CASE("speculation stops mid-proposal on a stop string, and a cancelled request frees all",
          "[speculative][batch]") {
  const auto dir = text_model(kFixtures, "speculative");
  const Tokenizer tok = Tokenizer::from_model_dir(dir);
  EngineRig rig(dir, 256);
  auto reqs = requests(rig.config.vocab_size);
  // Stop strings: the text of a plain run's middle tokens, so that they fire mid-generation.
  const Run probe = run(rig, reqs, 0, &tok);
  for (auto& r : reqs) {
    const auto& t = probe.results.at(r.id).tokens;
    if (t.size() > 8)
      r.stop = {tok.decode(std::vector<std::int32_t>(t.begin() + 5, t.begin() + 7))};
  }
  const Run plain = run(rig, reqs, 0, &tok);
  int stopped = 0;
  for (const auto& [id, res] : plain.results) stopped += res.finish == FinishReason::kStopSequence;
  CHECK(stopped > 0);
  for (const int k : {1, 3, 5}) {
    INFO("K = " << k);
    check_same(plain, run(rig, reqs, k, &tok), reqs);
  }
  // Cancelled after a few steps: what it produced is a prefix of its plain run, blocks all back.
  const Run cancelled = run(rig, reqs, 3, &tok, 3);
  CHECK(cancelled.results.at(3).finish == FinishReason::kCancelled);
  const auto& part = cancelled.results.at(3).tokens;
  const auto& whole = plain.results.at(3).tokens;
  REQUIRE(part.size() <= whole.size());
  CHECK(std::equal(part.begin(), part.end(), whole.begin()));
  CHECK(cancelled.free_blocks == cancelled.total_blocks);
}
