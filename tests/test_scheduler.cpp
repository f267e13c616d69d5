// The rolling-batch scheduler against a stand-in model whose next token depends only on the
// sequence and the position, so every request's output is known whatever the batching,
// chunking or preemption did to it.
#include <map>
#include <random>

#include <catch2/catch.hpp>

#include "engine/scheduler.h"

using namespace saker;

namespace {

std::int32_t model_token(std::uint64_t id, std::int64_t position) {
  return static_cast<std::int32_t>((id * 131 + static_cast<std::uint64_t>(position) * 7) % 1000);
}

struct Request {
  std::uint64_t id;
  std::vector<std::int32_t> prompt;
  std::int64_t max_new;
};

std::vector<std::int32_t> expected_output(const Request& r) {
  std::vector<std::int32_t> out;
  for (std::int64_t i = 0; i < r.max_new; ++i)
    out.push_back(model_token(r.id, static_cast<std::int64_t>(r.prompt.size()) + i));
  return out;
}

// Runs the scheduler until every request is done, adding request k at step arrivals[k]. Checks
// the per-step limits and the KV invariants on the way; returns each request's output.
std::map<std::uint64_t, std::vector<std::int32_t>> drive(Scheduler& sched, BlockManager& blocks,
                                                         const SchedulerConfig& cfg,
                                                         const std::vector<Request>& reqs,
                                                         const std::vector<int>& arrivals,
                                                         int* steps_out = nullptr) {
  std::map<std::uint64_t, std::vector<std::int32_t>> outputs;
  std::size_t next = 0;
  int step = 0;
  while (outputs.size() < reqs.size()) {
    REQUIRE(step < 100000);  // no request waits forever
    while (next < reqs.size() && arrivals[next] <= step) {
      sched.add(reqs[next].id, reqs[next].prompt, reqs[next].max_new);
      ++next;
    }
    const Schedule s = sched.schedule();
    REQUIRE(sched.running() <= static_cast<std::size_t>(cfg.max_batch_size));
    std::int64_t tokens = 0;
    std::vector<std::int32_t> sampled(s.run.size(), -1);
    for (std::size_t i = 0; i < s.run.size(); ++i) {
      const auto& r = s.run[i];
      tokens += r.count;
      const SequenceState& seq = sched.sequence(r.id);
      REQUIRE(r.start == seq.computed);
      REQUIRE(blocks.blocks_for(r.start + r.count) <= static_cast<std::int64_t>(seq.blocks.size()));
      if (r.samples) sampled[i] = model_token(r.id, r.start + r.count);
    }
    REQUIRE(tokens <= cfg.max_tokens_per_step);
    for (const auto& done : sched.complete(s, sampled))
      outputs[done.id].assign(done.tokens.begin() + done.prompt_len, done.tokens.end());
    ++step;
  }
  if (steps_out) *steps_out = step;
  return outputs;
}

std::vector<Request> mixed_requests(int n, std::mt19937& rng) {
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    // The seed workload's shape, scaled down: half short in / long out, half long in / short out.
    const bool long_prompt = i % 2 == 1;
    const auto len = static_cast<std::size_t>(long_prompt ? 40 + rng() % 20 : 2 + rng() % 4);
    std::vector<std::int32_t> prompt(len);
    for (auto& t : prompt) t = static_cast<std::int32_t>(rng() % 1000);
    reqs.push_back({static_cast<std::uint64_t>(i + 1), prompt,
                    long_prompt ? 3 : 30 + static_cast<std::int64_t>(rng() % 10)});
  }
  return reqs;
}

}  // namespace

TEST_CASE("every request completes with its own tokens, blocks all returned", "[scheduler]") {
  std::mt19937 rng(5);
  const auto reqs = mixed_requests(24, rng);
  for (const auto policy :
       {AdmissionPolicy::kMaxUtilization, AdmissionPolicy::kGuaranteedNoEvict}) {
    BlockManager blocks(200, 4);
    const SchedulerConfig cfg{8, 32, policy};
    Scheduler sched(cfg, blocks);
    const auto out = drive(sched, blocks, cfg, reqs, std::vector<int>(reqs.size(), 0));
    for (const auto& r : reqs) CHECK(out.at(r.id) == expected_output(r));
    CHECK(blocks.free_blocks() == blocks.num_blocks());
    CHECK(sched.running() == 0);
    CHECK(sched.waiting() == 0);
  }
}

TEST_CASE("a pool too small for everyone preempts, recomputes and still gets it right",
          "[scheduler]") {
  std::mt19937 rng(9);
  const auto reqs = mixed_requests(16, rng);
  BlockManager blocks(24, 4);  // 96 tokens for requests of up to ~60
  const SchedulerConfig cfg{16, 64, AdmissionPolicy::kMaxUtilization};
  Scheduler sched(cfg, blocks);
  const auto out = drive(sched, blocks, cfg, reqs, std::vector<int>(reqs.size(), 0));
  CHECK(sched.preemptions() > 0);
  for (const auto& r : reqs) CHECK(out.at(r.id) == expected_output(r));
  CHECK(blocks.free_blocks() == blocks.num_blocks());

  // The guaranteed policy admits only what will finish, so it never preempts.
  BlockManager blocks2(24, 4);
  const SchedulerConfig cfg2{16, 64, AdmissionPolicy::kGuaranteedNoEvict};
  Scheduler sched2(cfg2, blocks2);
  const auto out2 = drive(sched2, blocks2, cfg2, reqs, std::vector<int>(reqs.size(), 0));
  CHECK(sched2.preemptions() == 0);
  for (const auto& r : reqs) CHECK(out2.at(r.id) == expected_output(r));
}

TEST_CASE("long prompts are chunked within the token budget and mixed with decodes",
          "[scheduler]") {
  BlockManager blocks(64, 4);
  const SchedulerConfig cfg{4, 16, AdmissionPolicy::kMaxUtilization};
  Scheduler sched(cfg, blocks);
  sched.add(1, std::vector<std::int32_t>(5, 1), 20);
  Schedule s = sched.schedule();
  sched.complete(s, std::vector<std::int32_t>{7});
  sched.add(2, std::vector<std::int32_t>(50, 2), 2);
  s = sched.schedule();
  // The running sequence decodes one token; the new prompt takes the other 15 of the budget.
  REQUIRE(s.run.size() == 2);
  CHECK(s.run[0].id == 1);
  CHECK(s.run[0].count == 1);
  CHECK(s.run[1].id == 2);
  CHECK(s.run[1].count == 15);
  CHECK_FALSE(s.run[1].samples);
}

TEST_CASE("continuous arrivals: nobody waits forever, first come first served", "[scheduler]") {
  std::mt19937 rng(21);
  const auto reqs = mixed_requests(60, rng);
  std::vector<int> arrivals;
  for (int i = 0; i < 60; ++i) arrivals.push_back(i * 3);
  BlockManager blocks(40, 4);
  const SchedulerConfig cfg{6, 48, AdmissionPolicy::kMaxUtilization};
  Scheduler sched(cfg, blocks);
  int steps = 0;
  const auto out = drive(sched, blocks, cfg, reqs, arrivals, &steps);
  for (const auto& r : reqs) CHECK(out.at(r.id) == expected_output(r));
  CHECK(blocks.free_blocks() == blocks.num_blocks());
}

TEST_CASE("cancelling frees blocks at once, and impossible requests are refused", "[scheduler]") {
  BlockManager blocks(10, 4);
  Scheduler sched({4, 64, AdmissionPolicy::kMaxUtilization}, blocks);
  sched.add(1, std::vector<std::int32_t>(12, 1), 4);
  sched.add(2, std::vector<std::int32_t>(3, 1), 4);
  const Schedule s = sched.schedule();
  CHECK(blocks.used_blocks() == 3 + 1);
  CHECK(sched.cancel(1));
  CHECK(blocks.used_blocks() == 1);
  CHECK_FALSE(sched.cancel(1));
  sched.complete(s, std::vector<std::int32_t>{9, 5});  // the cancelled one's entry is skipped
  CHECK(sched.sequence(2).tokens.back() == 5);
  CHECK_THROWS_WITH(sched.add(3, std::vector<std::int32_t>(40, 1), 10),
                    Catch::Contains("needs 13 KV blocks; the pool has 10"));
  CHECK_THROWS_WITH(sched.add(2, {1}, 1), Catch::Contains("in use"));
  CHECK_THROWS_WITH(sched.add(4, {}, 1), Catch::Contains("empty prompt"));
}
