// Tensor-parallel runs against transformers, executed under mpirun at several tp sizes (see
// tests/CMakeLists.txt). All collective work of a test case happens before any assertion, so a
// failing check on one rank cannot leave the others waiting in a collective.
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include "tests/golden.h"

#include "engine/batch_engine.h"
#include "engine/model/falcon/falcon.h"
#include "engine/model/falcon/shard_plan.h"
#include "engine/step_runner.h"
#include "kernels/cpu/cpu_backend.h"
#include "parallel/collectives.h"
#include "tests/batch_invariance.h"
#include "tests/engine_api_cases.h"
#include "tests/json_validate.h"
#include "tests/mpi_fixture.h"
#include "tests/reference_generate.h"
#include "tests/spec_requests.h"
#include "tests/text_model.h"

using namespace saker;
using namespace saker::test;
namespace fs = std::filesystem;

namespace {

struct Sharded {
  FalconConfig config;
  Checkpoint checkpoint;
  ShardPlan plan;
  CpuBackend backend;
  FalconModel model;
  KvCache cache;
  StepRunner runner;
  explicit Sharded(const fs::path& dir, Communicator& comm)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        plan(config, comm.size()),
        backend(1, config.max_positions, 1),
        model(config, checkpoint, backend, ModelOptions{64, 64, 128},
              comm.size() > 1 ? TensorParallel{&plan.rank(comm.rank()), &comm} : TensorParallel{}),
        cache(backend, model.kv_shape(), 32, 4),
        runner(model, cache, comm) {}
};

}  // namespace

TEST_CASE("sharded prefill logits and greedy tokens match transformers", "[tp]") {
  Communicator& comm = test::world().tensor_parallel();
  for (const auto& dir : fixture_dirs()) {
    Sharded m(dir, comm);
    std::ifstream in(dir / "reference.json");
    const auto ref = nlohmann::json::parse(in);
    std::vector<std::int32_t> table(32);
    std::iota(table.begin(), table.end(), 0);
    double worst = 0;
    std::vector<std::vector<std::int32_t>> got, want;
    for (const auto& cs : ref["cases"]) {
      const auto prompt = cs["prompt_ids"].get<std::vector<std::int32_t>>();
      if (m.runner.is_driver()) {
        const SequenceStep step{prompt, 0, table, true};
        const auto logits = m.runner.step({&step, 1});
        const auto V = static_cast<std::size_t>(m.config.vocab_size);
        for (std::size_t p = 0; p < prompt.size(); ++p)
          worst = std::max(
              worst, rel_l2(logits.subspan(p * V, V), cs["logits"][p].get<std::vector<float>>()));
        GenerateOptions opt;
        want.push_back(cs["greedy_ids"].get<std::vector<std::int32_t>>());
        opt.max_new_tokens = static_cast<std::int64_t>(want.back().size());
        opt.ignore_eos = true;
        got.push_back(generate_sequence(m.runner, prompt, opt).tokens);
      }
    }
    if (m.runner.is_driver())
      m.runner.stop();
    else
      m.runner.serve();
    if (comm.rank() == 0) {
      INFO(dir.filename().string() << " at tp " << comm.size() << ": worst relative L2 " << worst);
      CHECK(worst < 1e-4);
      CHECK(got == want);
    }
  }
}

TEST_CASE("the trained demo model's greedy continuations are transformers' across ranks",
          "[tp][demo]") {
  Communicator& comm = test::world().tensor_parallel();
  // Its 3 KV groups split over 1, 2 or 3 ranks (4 + 2 query heads at tp 2, the demo's split);
  // CTest runs tp 1, 2 and 4.
  if (comm.size() > 3) return;
  const fs::path dir = kFixtures / ".." / ".." / "models" / "falcon-demo";
  Sharded m(dir, comm);
  std::ifstream in(kFixtures / "falcon-demo-reference.json");
  const auto ref = nlohmann::json::parse(in);
  std::vector<std::vector<std::int32_t>> got, want;
  if (m.runner.is_driver()) {
    for (const auto& c : ref["greedy"]) {
      const auto prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
      want.push_back(c["greedy_ids"].get<std::vector<std::int32_t>>());
      GenerateOptions opt;
      opt.max_new_tokens = static_cast<std::int64_t>(want.back().size());
      opt.ignore_eos = true;
      got.push_back(generate_sequence(m.runner, prompt, opt).tokens);
    }
    m.runner.stop();
  } else {
    m.runner.serve();
  }
  if (comm.rank() == 0) {
    INFO("tp " << comm.size());
    CHECK(want.size() == 20);
    CHECK(got == want);
  }
}

TEST_CASE("each rank reads its share of the weights and no more", "[tp]") {
  Communicator& comm = test::world().tensor_parallel();
  const int tp = comm.size();
  for (const auto& dir : fixture_dirs()) {
    Sharded m(dir, comm);
    // What this rank should hold: its elements of every tensor, by the shard plan.
    std::size_t expected = 0;
    const bool has_lm_head = m.checkpoint.find("lm_head.weight") != nullptr;
    for (const auto& t : expected_tensors(m.config, has_lm_head)) {
      const TensorInfo& info = m.checkpoint.get(t.name);
      const std::int64_t elems =
          tp > 1 ? m.plan.elements(comm.rank(), t.name, t.shape) : info.numel();
      expected += static_cast<std::size_t>(elems) * dtype_size(info.dtype);
    }
    const std::size_t total = m.checkpoint.total_bytes();
    if (m.runner.is_driver())
      m.runner.stop();
    else
      m.runner.serve();
    INFO(dir.filename().string() << " rank " << comm.rank() << " of " << tp << ": read "
                                 << m.model.weight_bytes() << " of " << total);
    CHECK(m.model.weight_bytes() == expected);
    // About 1/tp of the checkpoint, plus the replicated norms and KV rows: well under half at tp 4.
    if (tp >= 2)
      CHECK(m.model.weight_bytes() < total * 3 / (2 * static_cast<std::size_t>(tp)) + total / 10);
  }
}

TEST_CASE("continuous batching across ranks generates what each request generates alone", "[tp]") {
  Communicator& comm = test::world().tensor_parallel();
  const auto dir = kFixtures / "mqa7-fp32";  // uneven head split at tp 2 and 4
  Sharded m(dir, comm);
  std::mt19937 rng(3);
  std::vector<BatchRequest> reqs;
  for (std::uint64_t id = 1; id <= 8; ++id) {
    BatchRequest r;
    r.id = id;
    r.prompt.resize(1 + rng() % 20);
    for (auto& t : r.prompt) t = static_cast<std::int32_t>(rng() % 384);
    r.max_new_tokens = 12;
    r.ignore_eos = true;
    if (id % 2 == 0) {
      r.sampling.temperature = 1.0f;
      r.sampling.seed = id;
    }
    reqs.push_back(r);
  }
  std::map<std::uint64_t, std::vector<std::int32_t>> batched, single_rank;
  if (m.runner.is_driver()) {
    BatchEngine engine(m.runner, {4, 16, AdmissionPolicy::kMaxUtilization}, m.config.eos_token_ids);
    for (const auto& r : reqs) engine.add(r);
    run_to_completion(engine);
    m.runner.stop();
    for (const auto& [id, res] : engine.results()) batched[id] = res.tokens;
    // The same requests one at a time on an unsharded copy of the model, on rank 0 alone.
    CpuBackend backend(1, m.config.max_positions, 1);
    FalconModel whole(m.config, m.checkpoint, backend, ModelOptions{64, 64, 128});
    for (const auto& r : reqs) {
      KvCache cache(backend, whole.kv_shape(), 16, 4);
      GenerateOptions opt;
      opt.max_new_tokens = r.max_new_tokens;
      opt.ignore_eos = true;
      opt.sampling = r.sampling;
      single_rank[r.id] = generate_sequence(whole, cache, r.prompt, opt).tokens;
    }
  } else {
    m.runner.serve();
  }
  if (comm.rank() == 0) {
    INFO("tp " << comm.size());
    CHECK(batched == single_rank);
    CHECK(batched.size() == reqs.size());
  }
}

TEST_CASE("across ranks, prompt-lookup speculation gives plain decoding's tokens and logprobs",
          "[tp][speculative]") {
  Communicator& comm = test::world().tensor_parallel();
  Sharded m(kFixtures / "mqa7-fp32", comm);  // uneven head split at tp 2 and 4
  const auto reqs = test::copy_requests(m.config.vocab_size, 6, 5, 12);
  std::map<int, std::map<std::uint64_t, BatchResult>> out;
  std::uint64_t accepted = 0;
  if (m.runner.is_driver()) {
    for (const int k : {0, 3}) {
      BatchEngine engine(m.runner, {4, 32, AdmissionPolicy::kMaxUtilization},
                         m.config.eos_token_ids);
      engine.set_speculation(k);
      for (const auto& r : reqs) engine.add(r);
      run_to_completion(engine);
      out[k] = engine.results();
      accepted += engine.stats().spec_accepted_tokens;
    }
    m.runner.stop();
  } else {
    m.runner.serve();
  }
  if (comm.rank() == 0) {
    INFO("tp " << comm.size());
    CHECK(accepted > 0);
    for (const auto& r : reqs) {
      CHECK(out[3].at(r.id).tokens == out[0].at(r.id).tokens);
      CHECK(out[3].at(r.id).logprobs == out[0].at(r.id).logprobs);
    }
  }
}

TEST_CASE("across ranks, on every fixture, each proposer and K gives plain decoding's tokens",
          "[tp][speculative][draft]") {
  Communicator& comm = test::world().tensor_parallel();
  for (const auto& dir : fixture_dirs()) {
    Sharded m(dir, comm);
    // Drafts split like the target: the target itself (every proposal accepted), and another
    // model (most rejected).
    const auto other = kFixtures / (dir.filename() == "mqa7-fp32" ? "falcon11b-fp32" : "mqa7-fp32");
    for (const auto& draft_dir : {dir, other}) {
      Sharded d(draft_dir, comm);
      m.runner.attach_draft(d.model, d.cache);
      const auto reqs = test::copy_requests(m.config.vocab_size, 6, 7, 12, true);
      struct Case {
        SpecMethod method;
        int k;
      };
      std::vector<Case> cases = {{SpecMethod::kNone, 0}};
      for (const int k : {1, 3, 5}) {
        cases.push_back({SpecMethod::kDraft, k});
        if (draft_dir == dir) cases.push_back({SpecMethod::kNgram, k});
      }
      std::vector<std::map<std::uint64_t, BatchResult>> out;
      std::vector<EngineStats> stats;
      if (m.runner.is_driver()) {
        for (const Case& c : cases) {
          BatchEngine engine(m.runner, {4, 32, AdmissionPolicy::kMaxUtilization},
                             m.config.eos_token_ids);
          engine.set_speculation({c.method, c.k, 4, SpecAcceptance::kExact, false});
          for (const auto& r : reqs) engine.add(r);
          run_to_completion(engine);
          out.push_back(engine.results());
          stats.push_back(engine.stats());
        }
        m.runner.stop();
      } else {
        m.runner.serve();
      }
      if (comm.rank() == 0) {
        for (std::size_t c = 1; c < cases.size(); ++c) {
          INFO("tp " << comm.size() << ", " << dir.filename().string() << ", draft "
                     << draft_dir.filename().string() << ", "
                     << (cases[c].method == SpecMethod::kDraft ? "draft" : "ngram")
                     << " K = " << cases[c].k);
          CHECK(stats[c].spec_draft_tokens > 0);
          if (cases[c].method == SpecMethod::kDraft && draft_dir == dir)
            CHECK(stats[c].spec_accepted_tokens == stats[c].spec_draft_tokens);
          for (const auto& r : reqs) {
            CHECK(out[c].at(r.id).tokens == out[0].at(r.id).tokens);
            CHECK(out[c].at(r.id).logprobs == out[0].at(r.id).logprobs);
          }
        }
      }
    }
  }
}

TEST_CASE("across ranks too, a request's logits do not depend on its batch or its chunking",
          "[tp][invariance]") {
  Communicator& comm = test::world().tensor_parallel();
  const auto dir = kFixtures / "mqa7-fp32";
  const FalconConfig config = load_config(dir);
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const ShardPlan plan(config, comm.size());
  CpuBackend backend(1, config.max_positions, 1);
  FalconModel model(
      config, checkpoint, backend, ModelOptions{1024, 32, 128},
      comm.size() > 1 ? TensorParallel{&plan.rank(comm.rank()), &comm} : TensorParallel{});
  const auto all = test::invariance_requests(config.vocab_size);
  // At every KV cache dtype: each rank narrows its own heads' keys and values, per token.
  for (const DType t : {DType::F32, DType::BF16, DType::F16, DType::I8, DType::F8E4M3}) {
    KvShape kv = model.kv_shape();
    kv.dtype = t;
    KvCache cache(backend, kv, 512, 4);
    StepRunner runner(model, cache, comm);
    for (const std::uint64_t target : {1u, 2u}) {
      const std::vector<BatchRequest> one{all[target - 1]};
      const test::Trace base = test::trace_run(runner, 1024, one, target);
      for (const std::int32_t budget : {1024, 16}) {
        const test::Trace crowd = test::trace_run(runner, budget, all, target);
        if (comm.rank() != 0) continue;
        INFO("tp " << comm.size() << ", KV " << dtype_name(t) << ", request " << target << ", "
                   << budget << " tokens per iteration");
        CHECK(crowd.tokens == base.tokens);
        CHECK(crowd.logits == base.logits);
        CHECK(base.logits.size() == base.tokens.size());
      }
    }
  }
}

TEST_CASE("across ranks, a cached prefix gives the tokens computing it gives", "[tp][prefix]") {
  Communicator& comm = test::world().tensor_parallel();
  Sharded m(kFixtures / "mqa7-fp32", comm);
  std::mt19937 rng(11);
  std::vector<std::int32_t> shared(13);
  for (auto& t : shared) t = static_cast<std::int32_t>(rng() % 384);
  std::vector<BatchRequest> reqs;
  for (std::uint64_t id = 1; id <= 4; ++id) {
    BatchRequest r;
    r.id = id;
    r.prompt = shared;
    for (std::uint32_t i = 0, n = 1 + rng() % 6; i < n; ++i)
      r.prompt.push_back(static_cast<std::int32_t>(rng() % 384));
    r.max_new_tokens = 8;
    r.ignore_eos = true;
    if (id % 2 == 0) {
      r.sampling.temperature = 1.0f;
      r.sampling.seed = id;
    }
    reqs.push_back(r);
  }
  std::map<std::uint64_t, std::vector<std::int32_t>> fresh, reused;
  std::uint64_t hits = 0;
  for (const bool caching : {false, true}) {
    if (!m.runner.is_driver()) {
      m.runner.serve();
      continue;
    }
    SchedulerConfig cfg{4, 16, AdmissionPolicy::kMaxUtilization};
    cfg.enable_prefix_caching = caching;
    BatchEngine engine(m.runner, cfg, m.config.eos_token_ids);
    for (const auto& r : reqs) {  // one after another: each finds the prefix cached
      engine.add(r);
      run_to_completion(engine);
    }
    m.runner.stop();
    for (const auto& [id, res] : engine.results()) (caching ? reused : fresh)[id] = res.tokens;
    if (caching) hits = engine.scheduler().prefix_hits();
  }
  if (comm.rank() == 0) {
    INFO("tp " << comm.size());
    CHECK(reused == fresh);
    CHECK(fresh.size() == reqs.size());
    CHECK(hits >= 3 * 12);  // the 3 shared full blocks, for each request after the first
  }
}

TEST_CASE("every rank learns the smallest KV capacity of the group", "[tp][kv]") {
  Communicator& comm = test::world().tensor_parallel();
  const std::int64_t mine =
      1000 - 7 * ((comm.rank() + 1) % comm.size());  // rank size-1 holds least
  CHECK(min_over_ranks(comm, mine) == 1000 - 7 * (comm.size() - 1));
  CHECK_THROWS_AS(min_over_ranks(comm, std::int64_t{1} << 24), std::out_of_range);
}

TEST_CASE("the engine API streams, cancels and drains across ranks as on one", "[tp][engine]") {
  Communicator& comm = test::world().tensor_parallel();
  const fs::path dir = kFixtures / "gqa8x2-fp32";
  Engine engine(engine_options(dir), comm);
  const StreamRun run = stream_and_cancel(engine, dir);
  const DrainRun drained = drain(engine, run.refs.front().prompt, 60);
  if (comm.rank() != 0) return;
  for (std::size_t i = 0; i < run.refs.size(); ++i) {
    INFO("case " << i);
    CHECK(run.heard[i]->tokens() == run.refs[i].greedy);
    REQUIRE(run.heard[i]->finished());
    CHECK(run.heard[i]->last().finish == FinishReason::kLength);
  }
  REQUIRE(run.cancelled.finished());
  CHECK(run.cancelled.last().finish == FinishReason::kCancelled);
  CHECK(run.cancelled.tokens().size() < 40);
  CHECK(run.after.kv_blocks_used == 0);
  REQUIRE(drained.heard.finished());
  CHECK(drained.heard.last().finish == FinishReason::kLength);
  CHECK(drained.heard.tokens().size() == 24);
  CHECK(drained.after_shutdown == Admit::kNotReady);
}

TEST_CASE("a bad engine option fails on every rank, naming its field", "[tp][engine]") {
  Communicator& comm = test::world().tensor_parallel();
  EngineOptions o = engine_options(kFixtures / "gqa8x2-fp32");
  o.kv_cache_tokens = 0;
  o.kv_cache_bytes = 100;  // not one block
  std::string field;
  try {
    Engine engine(o, comm);
  } catch (const OptionError& e) {
    field = e.field();
  }
  CHECK(field == "kv_cache_bytes");
}

TEST_CASE("across ranks, structured outputs validate against their schemas", "[tp][structured]") {
  Communicator& comm = test::world().tensor_parallel();
  // A copy per rank: ranks start together and must not rewrite each other's files.
  const fs::path dir = test::text_model(kFixtures, "tp_structured_" + std::to_string(comm.rank()));
  EngineOptions o = engine_options(dir);
  o.text = true;
  o.max_batch_size = 16;
  o.kv_cache_tokens = 4096;
  Engine engine(o, comm);
  std::vector<std::unique_ptr<Heard>> heard;
  std::vector<nlohmann::ordered_json> schemas;
  if (engine.is_driver()) {
    for (const std::string& name : kEngineSchemas)
      for (const float temperature : {0.0f, 1.0f}) {
        schemas.push_back(suite_schema(name));
        BatchRequest r = request(engine, {5, 17, 42, 7}, 220);
        r.ignore_eos = false;
        r.constraint = {Constraint::Kind::kJsonSchema, schemas.back().dump(), {}, "guided_json"};
        if (temperature > 0) {
          r.sampling.temperature = temperature;
          r.sampling.seed = schemas.size();
        }
        heard.push_back(std::make_unique<Heard>());
        REQUIRE(engine.submit(std::move(r), heard.back()->sink()) == Admit::kQueued);
      }
  }
  engine.run();
  if (comm.rank() != 0) return;
  for (std::size_t i = 0; i < heard.size(); ++i) {
    REQUIRE(heard[i]->finished());
    const RequestEvent& last = heard[i]->last();
    REQUIRE(last.result);
    INFO("tp " << comm.size() << ", " << kEngineSchemas[i / 2] << ": " << last.result->text);
    CHECK(last.finish == FinishReason::kEosToken);
    nlohmann::json doc;
    REQUIRE_NOTHROW(doc = nlohmann::json::parse(last.result->text));
    CHECK(validation_errors(schemas[i], doc).empty());
  }
  CHECK(engine.stats().kv_blocks_used == 0);
}
