// Speculative decoding (BatchEngine::set_speculation), by prompt lookup and by a draft model: on
// every fixture, with K = 1, 3 and 5, greedy and seeded-sampled requests generate exactly what
// they generate without it, token for token and log-probability for log-probability, including
// requests that stop mid-proposal (eos, stop string, max_new_tokens), under preemption in a tiny
// KV pool, and with a cancellation; proposals are accepted, so the comparison means something,
// and a draft equal to the target has every proposal accepted.
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/batch_engine.h"
#include "engine/speculative/rejection.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/draft_rig.h"
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

Run run(EngineRig& rig, const std::vector<BatchRequest>& reqs, const SpeculationConfig& spec,
        const Tokenizer* tok = nullptr, std::uint64_t cancel_id = 0) {
  SchedulerConfig cfg{8, 64, AdmissionPolicy::kMaxUtilization};
  BatchEngine engine(rig.runner, cfg, rig.config.eos_token_ids, tok);
  engine.set_speculation(spec);
  // K = 3 checks proposals from logit summaries (a GPU's way), the others from whole rows.
  engine.prefer_summaries(spec.num_tokens == 3);
  for (const auto& r : reqs) engine.add(r);
  int steps = 0;
  while (!engine.idle()) {
    engine.step();
    if (++steps == 4 && cancel_id) engine.cancel(cancel_id);
  }
  return {engine.results(), engine.stats(), engine.scheduler().preemptions(),
          engine.blocks().free_blocks(), engine.blocks().num_blocks()};
}

Run run(EngineRig& rig, const std::vector<BatchRequest>& reqs, int k,
        const Tokenizer* tok = nullptr, std::uint64_t cancel_id = 0) {
  SpeculationConfig c;
  if (k > 0) c = {SpecMethod::kNgram, k, 4, SpecAcceptance::kExact, false};
  return run(rig, reqs, c, tok, cancel_id);
}

// Copy-heavy prompts (a phrase three times), greedy and seeded, with and without eos, with
// log-probabilities, penalties and min_new_tokens, and one that ends after 3 tokens,
// mid-proposal.
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
    // Penalties and min_new_tokens: each position's choice depends on the tokens before it.
    if (id == 5) r.sampling.repetition_penalty = 1.3f;
    if (id == 6) {
      r.sampling.presence_penalty = 0.5f;
      r.sampling.frequency_penalty = 0.3f;
    }
    if (id == 7) r.min_new_tokens = 10;
    out.push_back(std::move(r));
  }
  return out;
}

// A request cancelled mid-generation produced a prefix of what it produces uncancelled, and
// every block came back.
void check_cancelled(const Run& cancelled, const Run& whole, std::uint64_t id) {
  CHECK(cancelled.results.at(id).finish == FinishReason::kCancelled);
  const auto& part = cancelled.results.at(id).tokens;
  const auto& all = whole.results.at(id).tokens;
  REQUIRE(part.size() <= all.size());
  CHECK(std::equal(part.begin(), part.end(), all.begin()));
  CHECK(cancelled.free_blocks == cancelled.total_blocks);
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

TEST_CASE("speculation stops mid-proposal on a stop string; a cancelled request frees all",
          "[speculative][batch][draft]") {
  const auto dir = text_model(kFixtures, "speculative");
  const Tokenizer tok = Tokenizer::from_model_dir(dir);
  EngineRig rig(dir, 256);
  DraftRig draft(rig, dir);
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
  // Cancelled after a few steps (without stop strings, which the self-draft would reach first):
  // what it produced is a prefix of its uncancelled run, blocks all back.
  auto nostop = reqs;
  for (auto& r : nostop) r.stop.clear();
  for (const SpecMethod method : {SpecMethod::kNgram, SpecMethod::kDraft}) {
    for (const int k : {1, 3, 5}) {
      INFO((method == SpecMethod::kDraft ? "draft" : "ngram") << ", K = " << k);
      const SpeculationConfig spec{method, k, 4, SpecAcceptance::kExact, false};
      check_same(plain, run(rig, reqs, spec, &tok), reqs);
      if (k == 3) check_cancelled(run(rig, nostop, spec, &tok, 3), probe, 3);
    }
  }
}

TEST_CASE("draft-model speculation changes no token or log-probability, on every fixture",
          "[speculative][batch][draft]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      // Another fixture as the draft (same vocabulary, other weights), and the target itself.
      const auto other = kFixtures / (dir.filename() == "mqa7-fp32" ? "gqa8x2-fp32" : "mqa7-fp32");
      for (const std::int64_t blocks : {256, 24}) {  // 24 blocks of 4: preemption
        EngineRig rig(dir, blocks);
        const auto reqs = requests(rig.config.vocab_size);
        const Run plain = run(rig, reqs, 0);
        for (const auto& draft_dir : {other, dir}) {
          DraftRig draft(rig, draft_dir);
          const bool same = draft_dir == dir;
          for (const int k : {1, 3, 5}) {
            INFO("draft " << draft_dir.filename().string() << ", K = " << k << ", " << blocks
                          << " blocks");
            const Run spec = run(rig, reqs, draft_spec(k));
            check_same(plain, spec, reqs);
            CHECK(spec.stats.spec_drafts > 0);
            // A tiny pool may preempt more: proposals take blocks ahead of need.
            if (blocks == 256) CHECK(spec.stats.iterations <= plain.stats.iterations);
            if (blocks == 24) CHECK(spec.preemptions + plain.preemptions > 0);
            // The draft equal to the target, greedy or seeded: every proposal is the target's
            // own choice, except those cut off by an end (eos, max_new_tokens).
            if (same && blocks == 256) {
              auto all = reqs;
              for (auto& r : all) r.ignore_eos = true;
              const Run every = run(rig, all, draft_spec(k));
              CHECK(every.stats.spec_accepted_tokens == every.stats.spec_draft_tokens);
              CHECK(every.stats.spec_accepted_tokens > 0);
              CHECK(every.stats.iterations < plain.stats.iterations);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("speculative sampling's verdict yields the target's distribution, whatever the draft's",
          "[speculative]") {
  // p and q over 6 tokens, q far from p (and zero where p is not); x ~ q, then the verdict.
  const std::vector<float> p = {0.4f, 0.25f, 0.15f, 0.1f, 0.1f, 0.0f};
  const std::vector<float> q = {0.05f, 0.5f, 0.0f, 0.3f, 0.05f, 0.1f};
  constexpr int kDraws = 200000;
  for (const bool deterministic : {false, true}) {
    std::vector<double> count(p.size(), 0);
    std::vector<float> scratch;
    int kept = 0;
    for (int i = 0; i < kDraws; ++i) {
      // Deterministic proposals (prompt lookup): x is fixed, q all on it.
      const std::int32_t x = deterministic ? 1 : draw(q, uniform_at(1, i));
      scratch = p;
      const std::int32_t y = speculative_verdict(
          scratch, deterministic ? std::span<const float>{} : std::span<const float>(q), x,
          uniform_at(2, i), uniform_at(3, i));
      kept += y == x;
      ++count[static_cast<std::size_t>(y)];
    }
    INFO((deterministic ? "a deterministic proposal" : "a draft distribution"));
    for (std::size_t v = 0; v < p.size(); ++v)
      CHECK(count[v] / kDraws == Approx(p[v]).margin(0.005));
    // Acceptance is sum over x of min(p, q): 0.05 + 0.25 + 0 + 0.1 + 0.05 = 0.45 (0.25 for x = 1).
    CHECK(static_cast<double>(kept) / kDraws == Approx(deterministic ? 0.25 : 0.45).margin(0.005));
  }
}

TEST_CASE("rejection acceptance: greedy requests stay exact, sampled ones accept more",
          "[speculative][batch][draft]") {
  // The target with int8 weights drafts: close to it, not equal.
  EngineRig rig(kFixtures / "mqa7-fp32", 256);
  DraftRig draft(rig, kFixtures / "mqa7-fp32", WeightQuant::kInt8);
  auto reqs = requests(rig.config.vocab_size);
  for (auto& r : reqs) {
    r.ignore_eos = true;
    r.logprobs = -1;
  }
  const Run plain = run(rig, reqs, 0);
  const Run exact = run(rig, reqs, draft_spec(3));
  const Run rejection = run(rig, reqs, draft_spec(3, SpecAcceptance::kRejection));
  for (const auto& r : reqs) {
    INFO("request " << r.id);
    CHECK(rejection.results.at(r.id).tokens.size() == plain.results.at(r.id).tokens.size());
    if (r.sampling.greedy())
      CHECK(rejection.results.at(r.id).tokens == plain.results.at(r.id).tokens);
  }
  CHECK(rejection.free_blocks == rejection.total_blocks);
  // Per sampled request, what exact acceptance keeps is what the two models' same-seed draws
  // agree on; speculative sampling keeps min(p, q) of the mass, which is never less on average.
  CHECK(rejection.stats.spec_accepted_tokens * exact.stats.spec_draft_tokens >=
        exact.stats.spec_accepted_tokens * rejection.stats.spec_draft_tokens);
}
