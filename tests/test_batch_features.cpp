// The batch engine's request features on a real fixture model: stop strings, stop ids,
// min_new_tokens, log-probabilities against transformers, cancellation and dynamic batching.
#include <cmath>

#include <catch2/catch.hpp>

#include "tests/engine_rig.h"

#include "engine/batch_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;

namespace {

using Rig = test::EngineRig;

const std::filesystem::path kTextModel = kFixtures / "gqa8x4-bf16-sharded";  // vocab 384

Tokenizer small_tokenizer() {
  return Tokenizer::load(kFixtures / "tokenizers" / "small384" / "tokenizer.json");
}

BatchResult run_one(Rig& rig, const BatchRequest& r, std::vector<std::int64_t> eos = {},
                    const Tokenizer* tok = nullptr, std::string* streamed = nullptr) {
  BatchEngine engine(rig.runner, {4, 32, AdmissionPolicy::kMaxUtilization}, std::move(eos), tok);
  if (streamed) engine.set_listener([&](const TokenEvent& ev) { streamed->append(ev.text); });
  engine.add(r);
  run_to_completion(engine);
  REQUIRE(engine.blocks().free_blocks() == engine.blocks().num_blocks());
  return *engine.take_result(r.id);
}

}  // namespace

TEST_CASE("a stop string spanning tokens ends generation and is cut exactly", "[batch][stop]") {
  Rig rig(kTextModel);
  const Tokenizer tok = small_tokenizer();
  BatchRequest r;
  r.id = 1;
  r.prompt = tok.encode("The falcon flies");
  r.max_new_tokens = 32;
  r.ignore_eos = true;
  const BatchResult plain = run_one(rig, r, {}, &tok);
  REQUIRE(plain.text == tok.decode(plain.tokens, true));
  // A two-character stop string whose characters come from two different tokens.
  std::string stop;
  std::size_t boundary = 0;
  for (std::size_t i = 0; i + 1 < plain.tokens.size() && stop.empty(); ++i) {
    boundary += tok.decode(std::span(plain.tokens).subspan(i, 1), true).size();
    const std::string prefix = tok.decode(std::span(plain.tokens).first(i + 1), true);
    if (prefix.size() != boundary || boundary == 0 || boundary >= plain.text.size()) continue;
    const auto a = static_cast<unsigned char>(plain.text[boundary - 1]);
    const auto b = static_cast<unsigned char>(plain.text[boundary]);
    if (a < 0x80 && b < 0x80) stop = plain.text.substr(boundary - 1, 2);
  }
  REQUIRE_FALSE(stop.empty());
  INFO("output '" << plain.text << "', stop '" << stop << "'");
  r.stop = {stop};
  std::string streamed;
  const BatchResult cut = run_one(rig, r, {}, &tok, &streamed);
  const std::size_t at = plain.text.find(stop);
  CHECK(cut.text == plain.text.substr(0, at));
  CHECK(streamed == cut.text);
  CHECK(cut.finish == FinishReason::kStopSequence);
  // Generation ends with the token that completed the stop string.
  const std::size_t n = cut.tokens.size();
  CHECK(std::equal(cut.tokens.begin(), cut.tokens.end(), plain.tokens.begin()));
  CHECK(tok.decode(std::span(plain.tokens).first(n), true).find(stop) != std::string::npos);
  CHECK(tok.decode(std::span(plain.tokens).first(n - 1), true).find(stop) == std::string::npos);
  // Stop strings need the tokenizer.
  Rig bare(kTextModel);
  BatchEngine no_text(bare.runner, {4, 32, AdmissionPolicy::kMaxUtilization}, {});
  CHECK_THROWS_WITH(no_text.add(r), Catch::Contains("stop strings need the model's tokenizer"));
}

TEST_CASE("stop token ids end like eos, and min_new_tokens suppresses both", "[batch][stop]") {
  Rig rig(kFixtures / "gqa8x2-fp32");
  const auto ref = read_reference(kFixtures / "gqa8x2-fp32");
  BatchRequest r;
  r.id = 3;
  r.prompt = ref["cases"][1]["prompt_ids"].get<std::vector<std::int32_t>>();
  const auto want = ref["cases"][1]["greedy_ids"].get<std::vector<std::int32_t>>();
  r.max_new_tokens = 30;
  const std::int32_t stop_id = want[5];
  const auto first =
      static_cast<std::size_t>(std::find(want.begin(), want.end(), stop_id) - want.begin());

  r.stop_token_ids = {stop_id};
  BatchResult res = run_one(rig, r);
  CHECK(res.tokens == std::vector<std::int32_t>(want.begin(), want.begin() + first + 1));
  CHECK(res.finish == FinishReason::kEosToken);

  // The same id as eos, with min_new_tokens past it: the id is masked until then.
  for (const bool as_eos : {false, true}) {
    BatchRequest m = r;
    if (as_eos) m.stop_token_ids.clear();
    m.min_new_tokens = static_cast<std::int64_t>(first) + 4;
    res =
        run_one(rig, m, as_eos ? std::vector<std::int64_t>{stop_id} : std::vector<std::int64_t>{});
    INFO("as eos: " << as_eos);
    CHECK(std::equal(want.begin(), want.begin() + first, res.tokens.begin()));
    REQUIRE(res.tokens.size() > first);
    CHECK(res.tokens[first] != stop_id);
    const auto hit = std::find(res.tokens.begin(), res.tokens.end(), stop_id);
    CHECK(hit - res.tokens.begin() >= m.min_new_tokens);
    CHECK(res.finish ==
          (hit == res.tokens.end() ? FinishReason::kLength : FinishReason::kEosToken));
  }
  // ignore_eos leaves stop ids in force.
  BatchRequest ig = r;
  ig.ignore_eos = true;
  CHECK(run_one(rig, ig, {stop_id}).finish == FinishReason::kEosToken);
}

TEST_CASE("log-probabilities match transformers' logits", "[batch][logprobs]") {
  for (const char* name : {"gqa8x2-fp32", "mqa7-fp32", "rw-alibi16-fp32"}) {
    Rig rig(kFixtures / name);
    const auto ref = read_reference(kFixtures / name);
    for (const auto& c : ref["cases"]) {
      BatchRequest r;
      r.id = 9;
      r.prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
      r.max_new_tokens = 1;
      r.logprobs = 5;
      const BatchResult res = run_one(rig, r);
      // log_softmax of transformers' last prompt row, in double.
      const auto row = c["logits"].back().get<std::vector<double>>();
      const double mx = *std::max_element(row.begin(), row.end());
      double z = 0;
      for (const double l : row) z += std::exp(l - mx);
      auto ref_lp = [&](std::int32_t id) {
        return row[static_cast<std::size_t>(id)] - mx - std::log(z);
      };
      INFO(name << " prompt of " << r.prompt.size());
      REQUIRE(res.tokens.size() == 1);
      CHECK(res.tokens[0] == c["greedy_ids"][0].get<std::int32_t>());
      CHECK(res.logprobs[0] == Approx(ref_lp(res.tokens[0])).margin(1e-4));
      REQUIRE(res.top_logprobs[0].size() == 5);
      CHECK(res.top_logprobs[0][0].id == res.tokens[0]);  // greedy: the best is the chosen one
      for (std::size_t i = 0; i < 5; ++i) {
        CHECK(res.top_logprobs[0][i].logprob ==
              Approx(ref_lp(res.top_logprobs[0][i].id)).margin(1e-4));
        if (i) CHECK(res.top_logprobs[0][i].logprob <= res.top_logprobs[0][i - 1].logprob);
      }
    }
  }
}

TEST_CASE("cancelling a running request frees its blocks at once, the rest unaffected",
          "[batch][cancel]") {
  Rig rig(kFixtures / "gqa8x2-fp32");
  std::vector<BatchRequest> reqs(3);
  for (std::uint64_t i = 0; i < 3; ++i) {
    reqs[i].id = i + 1;
    reqs[i].prompt = {static_cast<std::int32_t>(10 + i), 20, 30, 40, 50};
    reqs[i].max_new_tokens = 20;
    reqs[i].ignore_eos = true;
  }
  std::vector<std::vector<std::int32_t>> alone;
  for (const auto& r : reqs) alone.push_back(run_one(rig, r).tokens);

  BatchEngine engine(rig.runner, {4, 32, AdmissionPolicy::kMaxUtilization}, {});
  std::vector<TokenEvent> cancelled;
  engine.set_listener([&](const TokenEvent& ev) {
    if (ev.finish == FinishReason::kCancelled) cancelled.push_back(ev);
  });
  for (const auto& r : reqs) engine.add(r);
  for (int i = 0; i < 6; ++i) engine.step();
  const auto used = engine.blocks().used_blocks();
  const auto held = static_cast<std::int32_t>(engine.scheduler().sequence(2).blocks.size());
  CHECK(engine.cancel(2));
  CHECK(engine.blocks().used_blocks() == used - held);
  CHECK_FALSE(engine.cancel(2));
  run_to_completion(engine);
  CHECK(engine.blocks().free_blocks() == engine.blocks().num_blocks());
  REQUIRE(cancelled.size() == 1);
  CHECK(cancelled[0].id == 2);
  const auto& res = engine.results();
  CHECK(res.at(2).finish == FinishReason::kCancelled);
  CHECK(res.at(2).tokens.size() == 6);  // the prompt step gives one token, each later step one
  CHECK(std::equal(res.at(2).tokens.begin(), res.at(2).tokens.end(), alone[1].begin()));
  CHECK(res.at(1).tokens == alone[0]);
  CHECK(res.at(3).tokens == alone[2]);
  CHECK(engine.stats().cancelled == 1);
  // A waiting request can be cancelled too, and an unknown id is refused.
  BatchRequest late = reqs[0];
  late.id = 10;
  engine.add(late);
  CHECK(engine.cancel(10));
  CHECK_FALSE(engine.cancel(99));
  CHECK(engine.idle());
}

TEST_CASE("dynamic batching gathers a batch, runs it to its end, then takes the next",
          "[batch][dynamic]") {
  Rig rig(kFixtures / "gqa8x2-fp32");
  SchedulerConfig cfg{4, 32, AdmissionPolicy::kMaxUtilization, Batching::kDynamic, 0.05};
  BatchEngine engine(rig.runner, cfg, {});
  double now = 0;
  engine.set_clock([&] { return now; });
  std::map<std::uint64_t, std::int64_t> first_step, last_step;
  std::int64_t step = 0;
  engine.set_listener([&](const TokenEvent& ev) {
    if (ev.index == 0) first_step[ev.id] = step;
    if (ev.finish != FinishReason::kNone) last_step[ev.id] = step;
  });
  std::vector<BatchRequest> reqs;
  for (std::uint64_t i = 1; i <= 6; ++i) {
    BatchRequest r;
    r.id = i;
    r.prompt = {static_cast<std::int32_t>(i), 7, 8};
    r.max_new_tokens = static_cast<std::int64_t>(2 + 3 * i);  // different lengths
    r.ignore_eos = true;
    reqs.push_back(r);
  }
  // One request waits for the batch delay.
  engine.add(reqs[0]);
  CHECK_FALSE(engine.step());
  now = 0.049;
  CHECK_FALSE(engine.step());
  now = 0.051;
  CHECK(engine.step());
  ++step;
  // Whatever arrives while a batch runs waits for the whole batch, even when batch_size requests
  // are there at once.
  for (std::size_t i = 1; i < reqs.size(); ++i) engine.add(reqs[i]);
  while (!engine.idle()) {
    REQUIRE(engine.scheduler().running() <= 4u);
    if (engine.step()) ++step;
    now += 0.001;
  }
  CHECK(first_step.at(2) > last_step.at(1));  // request 1 ran alone (its batch had one)
  const auto batch2_end =
      std::max({last_step.at(2), last_step.at(3), last_step.at(4), last_step.at(5)});
  CHECK(first_step.at(6) > batch2_end);  // 2..5 filled the second batch
  CHECK(engine.blocks().free_blocks() == engine.blocks().num_blocks());
  for (const auto& r : reqs) CHECK(engine.results().at(r.id).tokens == run_one(rig, r).tokens);
}
