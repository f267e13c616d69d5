// Structured outputs through the rolling batch: constrained and free requests side by side on a
// random-weight fixture model with its 384-token tokenizer, greedy and sampled, through
// preemption in a tiny KV pool and cancellation; every constrained output validates, and the
// free requests generate what they generate alone.
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/batch_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/draft_rig.h"
#include "tests/engine_rig.h"
#include "tests/golden.h"
#include "tests/json_validate.h"
#include "tests/reference_generate.h"
#include "tests/text_model.h"

using namespace saker;
using namespace saker::test;
using json = nlohmann::ordered_json;  // the suite's order, as clients send schemas

namespace {

struct Run {
  std::map<std::uint64_t, BatchResult> results;
  std::uint64_t preemptions = 0;
  std::int32_t free_blocks = 0, total_blocks = 0;
};

Run run(EngineRig& rig, const Tokenizer& tok, const std::vector<BatchRequest>& reqs,
        std::int32_t max_batch, std::uint64_t cancel_id = 0, const SpeculationConfig& spec = {},
        EngineStats* stats = nullptr) {
  SchedulerConfig cfg{max_batch, 64, AdmissionPolicy::kMaxUtilization};
  BatchEngine engine(rig.runner, cfg, rig.config.eos_token_ids, &tok);
  engine.set_speculation(spec);
  for (const auto& r : reqs) engine.add(r);
  int steps = 0;
  while (!engine.idle()) {
    engine.step();
    if (++steps == 5 && cancel_id) CHECK(engine.cancel(cancel_id));
  }
  Run out;
  out.results = engine.results();
  out.preemptions = engine.scheduler().preemptions();
  out.free_blocks = engine.blocks().free_blocks();
  out.total_blocks = engine.blocks().num_blocks();
  if (stats) *stats = engine.stats();
  return out;
}

BatchRequest request(std::uint64_t id, const Tokenizer& tok, const std::string& schema_name,
                     float temperature) {
  BatchRequest r;
  r.id = id;
  r.prompt = tok.encode("Answer in JSON: " + schema_name);
  r.max_new_tokens = 220;
  if (!schema_name.empty())
    r.constraint = Constraint{
        Constraint::Kind::kJsonSchema, suite_schema(schema_name).dump(), {}, "guided_json"};
  if (temperature > 0) {
    r.sampling.temperature = temperature;
    r.sampling.seed = id;
  }
  return r;
}

}  // namespace

TEST_CASE("constrained requests in the rolling batch validate; free neighbours are unaffected",
          "[structured][batch]") {
  const auto dir = text_model(kFixtures, "structured_engine");
  const Tokenizer tok = Tokenizer::from_model_dir(dir);
  std::vector<BatchRequest> reqs;
  std::uint64_t id = 1;
  for (const std::string& s : kEngineSchemas)
    for (const float temperature : {0.0f, 1.0f}) reqs.push_back(request(id++, tok, s, temperature));
  const std::uint64_t free_greedy = id, free_sampled = id + 1;
  reqs.push_back(request(id++, tok, "", 0.0f));
  reqs.push_back(request(id++, tok, "", 1.0f));
  for (auto& r : reqs)
    if (!r.constraint.active()) r.max_new_tokens = 24;

  for (const std::int64_t blocks : {256, 64}) {  // 64 blocks of 4: preemption
    EngineRig rig(dir, blocks);
    const Run batched = run(rig, tok, reqs, 16);
    if (blocks == 64) CHECK(batched.preemptions > 0);
    CHECK(batched.free_blocks == batched.total_blocks);
    for (const auto& r : reqs) {
      const BatchResult& res = batched.results.at(r.id);
      if (!r.constraint.active()) continue;
      std::string ids;
      for (auto t : res.tokens) ids += std::to_string(t) + " ";
      INFO(ids);
      INFO("request " << r.id << " (" << kEngineSchemas[(r.id - 1) / 2] << ", blocks " << blocks
                      << "): " << res.text);
      REQUIRE(res.finish == FinishReason::kEosToken);
      json doc;
      REQUIRE_NOTHROW(doc = json::parse(res.text));
      CHECK(validation_errors(json::parse(r.constraint.text), doc).empty());
    }
    // Each free request generates what it generates alone.
    for (const std::uint64_t f : {free_greedy, free_sampled}) {
      const Run alone = run(rig, tok, {reqs[f - 1]}, 16);
      CHECK(alone.results.at(f).tokens == batched.results.at(f).tokens);
    }
  }

  // A constrained request cancelled mid-generation gives its blocks back.
  EngineRig rig(dir, 256);
  const Run cancelled = run(rig, tok, reqs, 16, 3);
  CHECK(cancelled.results.at(3).finish == FinishReason::kCancelled);
  CHECK(cancelled.free_blocks == cancelled.total_blocks);
}

TEST_CASE("constrained requests with a tight max_new_tokens close in time in the rolling batch",
          "[structured][batch]") {
  const auto dir = text_model(kFixtures, "structured_engine");
  const Tokenizer tok = Tokenizer::from_model_dir(dir);
  EngineRig rig(dir, 64);  // preemption: the plan survives a re-prefill
  const ConstraintCompiler compiler(tok, rig.config.vocab_size, rig.config.eos_token_ids);
  std::vector<BatchRequest> reqs;
  std::vector<std::int64_t> least;
  std::uint64_t id = 1;
  for (const std::string& s : kEngineSchemas)
    for (const float temperature : {0.0f, 1.0f}) {
      BatchRequest r = request(id, tok, s, temperature);
      const auto n = tokens_to_close(*compiler.compile(r.constraint));
      REQUIRE(n.has_value());
      least.push_back(*n);
      r.max_new_tokens = *n + static_cast<std::int64_t>(id % 4) * 3;  // n, n+3, n+6, n+9
      reqs.push_back(std::move(r));
      ++id;
    }
  const Run batched = run(rig, tok, reqs, 16);
  CHECK(batched.free_blocks == batched.total_blocks);
  int by_length = 0;
  for (const auto& r : reqs) {
    const BatchResult& res = batched.results.at(r.id);
    INFO("request " << r.id << " (max_new_tokens " << r.max_new_tokens << "): " << res.text);
    CHECK(static_cast<std::int64_t>(res.tokens.size()) <= r.max_new_tokens);
    if (res.finish == FinishReason::kLength) ++by_length;
    json doc;
    REQUIRE_NOTHROW(doc = json::parse(res.text));
    CHECK(validation_errors(json::parse(r.constraint.text), doc).empty());
  }
  CHECK(by_length > 0);  // some answers used the whole budget, and still closed

  // Below the shortest answer: refused at add, naming max_new_tokens; nothing is left behind.
  SchedulerConfig cfg{16, 64, AdmissionPolicy::kMaxUtilization};
  BatchEngine engine(rig.runner, cfg, rig.config.eos_token_ids, &tok);
  BatchRequest low = reqs.front();
  low.max_new_tokens = least.front() - 1;
  try {
    engine.add(low);
    FAIL("a budget below the shortest answer was accepted");
  } catch (const RequestError& e) {
    CHECK(e.field() == "max_new_tokens");
  }
  CHECK(engine.idle());
}

TEST_CASE("constrained requests speculate and generate exactly what they generate without it",
          "[structured][batch][speculative]") {
  const auto dir = text_model(kFixtures, "structured_engine");
  const Tokenizer tok = Tokenizer::from_model_dir(dir);
  EngineRig rig(dir, 256);
  const ConstraintCompiler compiler(tok, rig.config.vocab_size, rig.config.eos_token_ids);
  std::vector<BatchRequest> reqs;
  std::uint64_t id = 1;
  for (const std::string& s : kEngineSchemas)
    for (const float temperature : {0.0f, 1.0f}) {
      BatchRequest r = request(id, tok, s, temperature);
      // Half of them with the tightest budget: the budget rule's closing decides per position.
      if (id % 2 == 1) r.max_new_tokens = *tokens_to_close(*compiler.compile(r.constraint));
      reqs.push_back(std::move(r));
      ++id;
    }
  const Run plain = run(rig, tok, reqs, 16);
  DraftRig draft(rig, dir);
  for (const auto& spec :
       {SpeculationConfig{SpecMethod::kNgram, 3, 4, SpecAcceptance::kExact, false},
        draft_spec(3)}) {
    INFO((spec.method == SpecMethod::kDraft ? "draft" : "ngram"));
    EngineStats stats;
    const Run fast = run(rig, tok, reqs, 16, 0, spec, &stats);
    CHECK(stats.spec_drafts > 0);
    CHECK(fast.free_blocks == fast.total_blocks);
    for (const auto& r : reqs) {
      INFO("request " << r.id);
      CHECK(fast.results.at(r.id).tokens == plain.results.at(r.id).tokens);
      CHECK(fast.results.at(r.id).finish == plain.results.at(r.id).finish);
    }
  }
}
