// The engine API on one rank: submit and stream, cancel, drain, and errors that name the field
// and the limit (the same cases run under mpirun at tp 2 and 4 in test_tensor_parallel.cpp).
#include <thread>

#include <catch2/catch.hpp>

#include "engine/model/kv_cache.h"
#include "engine/tokenizer/tokenizer.h"
#include "parallel/communicator.h"
#include "tests/engine_api_cases.h"
#include "tests/text_model.h"

using namespace saker;
using namespace saker::test;

namespace {

const auto kModel = kFixtures / "gqa8x2-fp32";

}  // namespace

TEST_CASE("the engine streams every token as transformers generated it, then the result",
          "[engine]") {
  SingleRankCommunicator single;
  Engine engine(engine_options(kModel), single);
  CHECK(engine.health() == Health::kReady);
  const StreamRun run = stream_and_cancel(engine, kModel);
  for (std::size_t i = 0; i < run.refs.size(); ++i) {
    const Heard& h = *run.heard[i];
    INFO("case " << i);
    CHECK(h.tokens() == run.refs[i].greedy);
    for (std::size_t k = 0; k < h.events.size(); ++k) CHECK(h.events[k].index == std::int64_t(k));
    REQUIRE(h.finished());
    CHECK(h.last().finish == FinishReason::kLength);
    REQUIRE(h.last().result);
    CHECK(h.last().result->tokens == run.refs[i].greedy);
    CHECK(h.last().result->prompt_tokens == std::int64_t(run.refs[i].prompt.size()));
  }
  // Cancelled from its own sink after the third token: it ends as cancelled, with what it had.
  REQUIRE(run.cancelled.finished());
  CHECK(run.cancelled.last().finish == FinishReason::kCancelled);
  const auto got = run.cancelled.tokens();
  CHECK(got.size() >= 3);
  CHECK(got.size() < 40);
  CHECK(std::equal(got.begin(), got.end(), run.refs.back().greedy.begin()));
  // Nothing is left behind: every KV block is free, every request counted.
  CHECK(run.after.kv_blocks_used == 0);
  CHECK(run.after.running == 0);
  CHECK(run.after.waiting == 0);
  CHECK(run.after.totals.finished == run.refs.size());
  CHECK(run.after.totals.cancelled == 1);
}

TEST_CASE("the engine's text events add up to the result's text", "[engine]") {
  const auto dir = text_model(kFixtures, "engine_api");
  SingleRankCommunicator single;
  EngineOptions o = engine_options(dir);
  o.text = true;
  Engine engine(o, single);
  REQUIRE(engine.tokenizer());
  Heard h;
  BatchRequest r = request(engine, engine.tokenizer()->encode("silver river"), 12);
  r.logprobs = 2;
  CHECK(engine.submit(std::move(r), h.sink()) == Admit::kQueued);
  engine.run();
  REQUIRE(h.finished());
  std::string text;
  for (const RequestEvent& e : h.events) {
    text += e.text;
    if (e.token >= 0) CHECK(e.top.size() == 2);
  }
  REQUIRE(h.last().result);
  CHECK(text == h.last().result->text);
  CHECK(h.last().result->text == engine.tokenizer()->decode(h.last().result->tokens));
}

TEST_CASE("serve drains a request in flight at shutdown, or cancels it with no drain time",
          "[engine]") {
  const auto prompt = references(kModel).front().prompt;
  SingleRankCommunicator single;
  {
    Engine engine(engine_options(kModel), single);
    const DrainRun run = drain(engine, prompt, 60);
    REQUIRE(run.heard.finished());
    CHECK(run.heard.last().finish == FinishReason::kLength);
    CHECK(run.heard.tokens().size() == 24);
    CHECK(run.health == Health::kStopped);
    CHECK(run.after_shutdown == Admit::kNotReady);
    CHECK(engine.stats().kv_blocks_used == 0);
  }
  {
    Engine engine(engine_options(kModel), single);
    const DrainRun run = drain(engine, prompt, 0);
    REQUIRE(run.heard.finished());
    CHECK(run.heard.last().finish == FinishReason::kCancelled);
    CHECK(run.heard.tokens().size() < 24);
    CHECK(engine.stats().kv_blocks_used == 0);
  }
}

TEST_CASE("serve takes requests from other threads until shutdown", "[engine]") {
  SingleRankCommunicator single;
  auto queue = std::make_shared<RequestQueue>(16);
  CHECK(queue->health() == Health::kLoading);
  CHECK(queue->submit({}, [](RequestEvent&&) {}) == Admit::kNotReady);  // before the model
  Engine engine(engine_options(kModel), single, {}, queue);
  const auto refs = references(kModel);
  std::vector<Heard> heard(refs.size());
  std::thread frontend([&] {
    for (std::size_t i = 0; i < refs.size(); ++i)
      queue->submit(request(engine, refs[i].prompt, 40), heard[i].sink());
    queue->shutdown(60);
  });
  engine.serve();
  frontend.join();
  for (std::size_t i = 0; i < refs.size(); ++i) {
    REQUIRE(heard[i].finished());
    CHECK(heard[i].tokens() == refs[i].greedy);
  }
}

TEST_CASE("the engine refuses bad requests and options, naming the field and the limit",
          "[engine]") {
  SingleRankCommunicator single;
  auto queue = std::make_shared<RequestQueue>(1);
  EngineOptions o = engine_options(kModel);
  o.kv_cache_tokens = 32;  // 8 blocks of 4 tokens
  Engine engine(o, single, {}, queue);
  const RequestLimits& limits = engine.limits();
  auto refused = [&](BatchRequest r) {
    try {
      engine.submit(std::move(r), [](RequestEvent&&) {});
    } catch (const RequestError& e) {
      return e;
    }
    return RequestError(RequestError::Kind::kInvalid, "accepted", "not refused");
  };
  BatchRequest r = request(engine, {1, 2, 3}, 4);
  r.prompt[1] = static_cast<std::int32_t>(limits.vocab);
  RequestError e = refused(r);
  CHECK(e.field() == "prompt");
  CHECK_THAT(e.what(),
             Catch::Contains("outside the vocabulary of " + std::to_string(limits.vocab)));

  r = request(engine, {1, 2, 3}, limits.max_context);
  e = refused(r);
  CHECK(e.kind() == RequestError::Kind::kTooLong);
  CHECK(e.field() == "max_new_tokens");
  CHECK_THAT(e.what(), Catch::Contains(std::to_string(limits.max_context)));

  r = request(engine, {1, 2, 3}, 4);
  r.sampling.top_p = 2;
  CHECK(refused(r).field() == "top_p");
  r = request(engine, {1, 2, 3}, 4);
  r.stop = {"x"};
  CHECK(refused(r).field() == "stop");  // stop strings need the tokenizer (text off)
  r = request(engine, {}, 4);
  CHECK(refused(r).field() == "prompt");

  // What only the engine knows: a prompt the KV pool can never hold ends as an error event.
  Heard big;
  CHECK(engine.submit(request(engine, std::vector<std::int32_t>(30, 1), 8), big.sink()) ==
        Admit::kQueued);
  // The queue holds one waiting request: the next one is turned away until it is taken.
  CHECK(engine.submit(request(engine, {1}, 2), [](RequestEvent&&) {}) == Admit::kQueueFull);
  engine.run();
  REQUIRE(big.finished());
  CHECK(big.last().finish == FinishReason::kCancelled);
  CHECK_THAT(big.last().error, Catch::Contains("blocks"));
  CHECK(engine.stats().kv_blocks_used == 0);

  // Options: each error names its field.
  auto option_field = [&](auto&& change) {
    EngineOptions bad = engine_options(kModel);
    change(bad);
    try {
      Engine broken(bad, single);
    } catch (const OptionError& err) {
      return err.field();
    }
    return std::string("accepted");
  };
  CHECK(option_field([](EngineOptions& b) { b.block_size = 0; }) == "block_size");
  CHECK(option_field([](EngineOptions& b) { b.max_batch_size = 0; }) == "max_batch_size");
  CHECK(option_field([](EngineOptions& b) { b.kv_cache_fraction = 1.5; }) == "kv_cache_fraction");
  CHECK(option_field([](EngineOptions& b) { b.dtype = "int4"; }) == "dtype");
  CHECK(option_field([](EngineOptions& b) {
          b.kv_cache_tokens = 0;
          b.kv_cache_bytes = 100;
        }) == "kv_cache_bytes");
}

TEST_CASE("kv_cache_dtype: the pool holds twice the tokens in 16 bits, auto follows the checkpoint",
          "[engine][kv_dtype]") {
  SingleRankCommunicator single;
  auto built = [&](const std::filesystem::path& dir, const std::string& dtype) {
    EngineOptions o = engine_options(dir);
    o.kv_cache_tokens = 0;
    o.kv_cache_bytes = std::size_t{1} << 20;
    o.kv_cache_dtype = dtype;
    return std::make_unique<Engine>(o, single);
  };
  const auto f32 = built(kModel, "fp32");
  CHECK(f32->kv_cache_dtype() == DType::F32);
  for (const char* d : {"bf16", "fp16"}) {
    const auto e = built(kModel, d);
    CHECK(e->kv_cache_dtype() == (std::string(d) == "bf16" ? DType::BF16 : DType::F16));
    CHECK(e->kv_blocks() / 2 == f32->kv_blocks());  // floor(2x / per_block) is 2n or 2n + 1
  }
  // 8 bits: a byte per element plus an fp32 scale per head vector, so per block
  // 4 * hd / (hd + 4) times fewer bytes than fp32 (the budget counts the scales too).
  constexpr std::int64_t kModelHeadDim = 8;  // gqa8x2-fp32: hidden 64 over 8 heads
  const KvShape f32_shape{1, 1, kModelHeadDim, DType::F32};
  for (const char* d : {"fp8_e4m3", "fp8", "int8"}) {
    const auto e = built(kModel, d);
    const DType t = std::string(d) == "int8" ? DType::I8 : DType::F8E4M3;
    CHECK(e->kv_cache_dtype() == t);
    const KvShape shape{1, 1, kModelHeadDim, t};
    const double ratio = static_cast<double>(f32_shape.bytes_per_token()) /
                         static_cast<double>(shape.bytes_per_token());
    CHECK(std::abs(static_cast<double>(e->kv_blocks()) -
                   ratio * static_cast<double>(f32->kv_blocks())) <= ratio + 1);
  }
  CHECK(built(kModel, "auto")->kv_cache_dtype() == DType::F32);  // an fp32 checkpoint
  CHECK(built(kFixtures / "mqa7-bf16", "auto")->kv_cache_dtype() == DType::BF16);
  for (const char* d : {"fp64", "int4"}) {
    EngineOptions o = engine_options(kModel);
    o.kv_cache_dtype = d;
    try {
      Engine broken(o, single);
      FAIL("accepted kv_cache_dtype " << d);
    } catch (const OptionError& err) {
      CHECK(err.field() == "kv_cache_dtype");
      CHECK_THAT(err.what(), Catch::Contains("fp8_e4m3 or int8"));
    }
  }
}

TEST_CASE("speculative_model: the draft's KV shares the budget, bad drafts are named",
          "[engine][speculative][draft]") {
  SingleRankCommunicator single;
  auto built = [&](const std::string& draft) {
    EngineOptions o = engine_options(kModel);
    o.kv_cache_tokens = 0;
    o.kv_cache_bytes = std::size_t{1} << 20;
    o.speculative_model = draft;
    return std::make_unique<Engine>(o, single);
  };
  const auto alone = built("");
  const auto with_self = built(kModel.string());
  // Each block now holds the draft's KV of its tokens too: half the blocks for a twin.
  CHECK(with_self->kv_blocks() == alone->kv_blocks() / 2);
  // A smaller draft (mqa7: 2 layers of 1 KV head of 8, against 3 layers of 2) takes less.
  const auto with_small = built((kFixtures / "mqa7-fp32").string());
  CHECK(with_small->kv_blocks() > with_self->kv_blocks());
  CHECK(with_small->kv_blocks() < alone->kv_blocks());
  // The same tokens as without the draft, every proposal kept (the twin drafts exactly).
  BatchRequest r;
  r.id = with_self->requests().next_id();
  r.prompt = {1, 2, 3, 1, 2, 3, 1, 2};
  r.max_new_tokens = 20;
  r.ignore_eos = true;
  std::vector<std::int32_t> got[2];
  int i = 0;
  for (Engine* e : {alone.get(), with_self.get()}) {
    BatchRequest q = r;
    q.id = e->requests().next_id();
    e->submit(q, [&got, i](RequestEvent&& ev) {
      if (ev.token >= 0) got[i].push_back(ev.token);
    });
    e->run();
    ++i;
  }
  CHECK(got[0].size() == 20);
  CHECK(got[1] == got[0]);
  CHECK(with_self->stats().totals.spec_accepted_tokens ==
        with_self->stats().totals.spec_draft_tokens);
  auto field_of = [&](auto edit) {
    EngineOptions o = engine_options(kModel);
    edit(o);
    try {
      Engine broken(o, single);
    } catch (const OptionError& e) {
      return e.field() + ": " + e.what();
    }
    return std::string("accepted");
  };
  CHECK_THAT(field_of([](EngineOptions& o) { o.speculative_model = "/nonexistent"; }),
             Catch::StartsWith("speculative_model: speculative_model /nonexistent"));
  CHECK_THAT(field_of([&](EngineOptions& o) {
               o.speculative_model =
                   (kFixtures / ".." / ".." / "models" / "falcon-demo-draft").string();
             }),
             Catch::Contains("vocabulary of 8192 tokens; the target's has 384"));
  CHECK_THAT(field_of([](EngineOptions& o) { o.speculative_method = "draft"; }),
             Catch::StartsWith("speculative_model: speculative_method draft needs"));
  CHECK_THAT(field_of([](EngineOptions& o) { o.speculative_acceptance = "lenient"; }),
             Catch::StartsWith("speculative_acceptance: speculative_acceptance must be exact or"));
}
