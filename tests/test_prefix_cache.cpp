// Automatic prefix caching: the block manager's hash chain, reuse and LRU eviction; the
// scheduler's reuse at admission; and, on every fixture model, that reusing a cached prefix gives
// bit-identical logits and tokens to computing it (batch invariance is what makes it hold).
#include <numeric>
#include <random>

#include <catch2/catch.hpp>

#include "engine/batch_engine.h"
#include "engine/block_manager.h"
#include "engine/scheduler.h"
#include "tests/batch_invariance.h"
#include "tests/engine_rig.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;

namespace {

std::vector<std::int32_t> iota_tokens(std::size_t n, std::int32_t first) {
  std::vector<std::int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Enters every full block of `table` (holding `tokens`) into the cache, as the scheduler does.
void cache_all(BlockManager& m, const BlockTable& table, std::span<const std::int32_t> tokens,
               std::uint64_t root = 0) {
  const auto bs = static_cast<std::size_t>(m.block_size());
  std::uint64_t parent = root;
  for (std::size_t i = 0; i < tokens.size() / bs; ++i) {
    const auto chunk = tokens.subspan(i * bs, bs);
    const std::uint64_t h = m.hash(parent, chunk);
    m.cache(table[i], h, parent, chunk);
    parent = h;
  }
}

std::int32_t reuse(BlockManager& m, std::span<const std::int32_t> tokens, BlockTable& t,
                   std::uint64_t root = 0, std::int32_t max_blocks = 1 << 20) {
  std::vector<std::uint64_t> hashes;
  return m.reuse(tokens, root, max_blocks, hashes, t);
}

}  // namespace

TEST_CASE("block hashes chain over the parent and the tokens", "[prefix]") {
  const auto a = iota_tokens(4, 1), b = iota_tokens(4, 2);
  CHECK(BlockManager::hash_block(0, a) == BlockManager::hash_block(0, a));
  CHECK(BlockManager::hash_block(0, a) != BlockManager::hash_block(0, b));
  CHECK(BlockManager::hash_block(0, a) != BlockManager::hash_block(1, a));
  // A well-defined function: the same value everywhere, not std::hash's.
  CHECK(BlockManager::hash_block(0, a) == BlockManager::hash_block(0, std::vector{1, 2, 3, 4}));
  CHECK(BlockManager::root_hash("") == 0);
  CHECK(BlockManager::root_hash("x") != 0);
  CHECK(BlockManager::root_hash("x") != BlockManager::root_hash("y"));
}

TEST_CASE("the longest chain of cached blocks is reused, shared and counted", "[prefix]") {
  BlockManager m(8, 4);
  const auto tokens = iota_tokens(14, 100);  // 3 full blocks and 2 tokens
  BlockTable a;
  REQUIRE(m.ensure(a, 14));
  cache_all(m, a, tokens);
  CHECK(m.cached_blocks() == 3);
  // Another sequence sharing the first 9 tokens reuses the 2 blocks they fill, while a runs.
  auto other = tokens;
  other[9] = 7;
  BlockTable b;
  CHECK(reuse(m, other, b) == 2);
  CHECK(b == BlockTable{a[0], a[1]});
  CHECK(m.ref_count(a[0]) == 2);
  CHECK(m.ref_count(a[2]) == 1);
  BlockTable c;
  CHECK(reuse(m, tokens, c, 0, 1) == 1);  // at most what it is allowed
  m.release(a);
  m.release(c);
  // Released, the cached blocks stay cached and count as available.
  CHECK(m.cached_blocks() == 3);
  CHECK(m.free_blocks() == 6);
  m.release(b);
  CHECK(m.free_blocks() == 8);
  CHECK(m.used_blocks() == 0);
  BlockTable d;
  CHECK(reuse(m, tokens, d) == 3);
  CHECK(m.free_blocks() == 5);
  m.release(d);
  CHECK(m.free_blocks() == 8);
}

TEST_CASE("unreferenced cached blocks are evicted least recently released first", "[prefix]") {
  BlockManager m(6, 2);
  const auto x = iota_tokens(4, 10), y = iota_tokens(4, 20);
  BlockTable a, b;
  REQUIRE(m.ensure(a, 4));
  REQUIRE(m.ensure(b, 4));
  cache_all(m, a, x);
  cache_all(m, b, y);
  const BlockTable a0 = a, b0 = b;
  m.release(a);  // x's blocks go first, its tail before its head
  m.release(b);
  CHECK(m.free_blocks() == 6);
  CHECK(m.cached_blocks() == 4);
  BlockTable t;
  REQUIRE(m.ensure(t, 4));  // the two uncached blocks
  CHECK(m.cached_blocks() == 4);
  REQUIRE(m.ensure(t, 6));  // one eviction: x's tail
  CHECK(t.back() == a0[1]);
  CHECK(m.cached_blocks() == 3);
  BlockTable r;
  CHECK(reuse(m, x, r) == 1);  // x's head is still there
  m.release(r);                // and now released most recently
  REQUIRE(m.ensure(t, 10));    // two more evictions: y's tail, then y's head
  CHECK(BlockTable(t.end() - 2, t.end()) == BlockTable{b0[1], b0[0]});
  CHECK(reuse(m, y, r) == 0);
  CHECK(reuse(m, x, r) == 1);
  m.release(r);
  m.release(t);
  CHECK(m.free_blocks() == 6);
}

TEST_CASE("a salt keeps identical prompts apart", "[prefix]") {
  BlockManager m(8, 4);
  const auto tokens = iota_tokens(9, 1);
  BlockTable a;
  REQUIRE(m.ensure(a, 9));
  cache_all(m, a, tokens, BlockManager::root_hash("alice"));
  BlockTable b;
  CHECK(reuse(m, tokens, b) == 0);
  CHECK(reuse(m, tokens, b, BlockManager::root_hash("bob")) == 0);
  CHECK(reuse(m, tokens, b, BlockManager::root_hash("alice")) == 2);
  m.release(b);
  m.release(a);
  CHECK(m.free_blocks() == 8);
}

TEST_CASE("a hash collision never hands out another prefix's blocks", "[prefix]") {
  // Every block hashes alike: only the stored parent and tokens tell them apart.
  BlockManager m(8, 4, [](std::uint64_t, std::span<const std::int32_t>) { return 42ULL; });
  const auto x = iota_tokens(4, 1), y = iota_tokens(4, 50);
  BlockTable a;
  REQUIRE(m.ensure(a, 4));
  cache_all(m, a, x);
  BlockTable b;
  CHECK(reuse(m, y, b) == 0);
  CHECK(reuse(m, x, b) == 1);
  m.release(b);
  // The second block of x+x has x's hash and tokens but another parent.
  std::vector<std::int32_t> xx = x;
  xx.insert(xx.end(), x.begin(), x.end());
  CHECK(reuse(m, xx, b) == 1);
  m.release(b);
  m.release(a);
  CHECK(m.free_blocks() == 8);
}

TEST_CASE("the scheduler reuses cached prompt blocks, never the last prompt token", "[prefix]") {
  BlockManager blocks(16, 4);
  Scheduler sched({4, 64, AdmissionPolicy::kMaxUtilization}, blocks);
  const auto prompt = iota_tokens(8, 1);
  auto run = [&](std::uint64_t id, std::vector<std::int32_t> p, std::string_view salt = {}) {
    sched.add(id, p, 2, 0, salt);
    std::int64_t cached = -1;
    while (!sched.idle()) {
      const Schedule s = sched.schedule();
      std::vector<std::int32_t> sampled(s.run.size(), 5);
      for (const auto& r : s.run)
        if (r.id == id) cached = sched.sequence(id).cached_tokens;
      sched.complete(s, sampled);
    }
    return cached;
  };
  CHECK(run(1, prompt) == 0);
  // Two full blocks are cached, but the last prompt token is computed again: one is reused.
  CHECK(run(2, prompt) == 4);
  auto longer = prompt;
  longer.insert(longer.end(), {5, 9, 9});  // two full cached blocks, then its own
  CHECK(run(3, longer) == 8);
  CHECK(run(4, prompt, "salted") == 0);
  CHECK(sched.prefix_hits() == 12);
  CHECK(sched.prefix_queries() == 8 + 8 + 11 + 8);
  CHECK(blocks.free_blocks() == 16);

  BlockManager off_blocks(16, 4);
  SchedulerConfig off{4, 64, AdmissionPolicy::kMaxUtilization};
  off.enable_prefix_caching = false;
  Scheduler plain(off, off_blocks);
  plain.add(1, prompt, 1);
  plain.complete(plain.schedule(), std::vector<std::int32_t>{5});
  plain.add(2, prompt, 1);
  const Schedule s = plain.schedule();
  CHECK(s.run.at(0).start == 0);
  CHECK(off_blocks.cached_blocks() == 0);
}

namespace {

// Runs `target` on `engine` (after whatever was added before) and traces its logits and tokens.
Trace trace(BatchEngine& engine, const BatchRequest& target) {
  Trace t;
  engine.observe_logits([&](std::uint64_t id, std::int64_t pos, std::span<const float> row) {
    if (id == target.id) t.logits[pos].assign(row.begin(), row.end());
  });
  engine.add(target);
  run_to_completion(engine);
  engine.observe_logits({});
  t.tokens = engine.results().at(target.id).tokens;
  return t;
}

BatchRequest make_request(std::uint64_t id, std::vector<std::int32_t> prompt, bool sampled) {
  BatchRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.max_new_tokens = 8;
  r.ignore_eos = true;
  if (sampled) {
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.9f;
    r.sampling.seed = 4242;
  }
  return r;
}

std::vector<std::int32_t> random_tokens(std::size_t n, std::int64_t vocab, std::mt19937& rng) {
  std::vector<std::int32_t> v(n);
  for (auto& t : v) t = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(vocab));
  return v;
}

}  // namespace

namespace {
// Reusing a cached prefix against computing it, on one fixture with a KV cache of `kv_dtype`.
void check_prefix_reuse(const std::filesystem::path& dir, DType kv_dtype) {
  {
    EngineRig rig(dir, 128, kv_dtype);
    std::mt19937 rng(5);
    const std::int64_t vocab = rig.config.vocab_size;
    const auto prompt = random_tokens(23, vocab, rng);  // 5 full blocks of 4 and 3 tokens
    auto partial = std::vector<std::int32_t>(prompt.begin(), prompt.begin() + 13);
    const auto tail = random_tokens(6, vocab, rng);
    partial.insert(partial.end(), tail.begin(), tail.end());
    for (const bool sampled : {false, true}) {
      INFO(dir.filename().string() << (sampled ? " sampled" : " greedy"));
      SchedulerConfig off{8, 16, AdmissionPolicy::kMaxUtilization};
      off.enable_prefix_caching = false;
      BatchEngine fresh_engine(rig.runner, off, rig.config.eos_token_ids);
      const Trace fresh = trace(fresh_engine, make_request(1, prompt, sampled));
      REQUIRE(fresh.logits.size() == 8);
      // The same prompt again (all but its last block's worth reused), and after a request
      // sharing only its first 13 tokens (3 blocks reused).
      for (const auto& [warm, want_cached] :
           {std::pair{prompt, std::int64_t{20}}, std::pair{partial, std::int64_t{12}}}) {
        BatchEngine engine(rig.runner, {8, 16, AdmissionPolicy::kMaxUtilization},
                           rig.config.eos_token_ids);
        engine.add(make_request(7, warm, !sampled));
        run_to_completion(engine);
        const Trace reused = trace(engine, make_request(1, prompt, sampled));
        CHECK(engine.results().at(1).cached_tokens == want_cached);
        CHECK(reused.tokens == fresh.tokens);
        CHECK(reused.logits == fresh.logits);  // bit for bit
        CHECK(engine.blocks().used_blocks() == 0);
      }
    }
  }
}
}  // namespace

TEST_CASE("a reused prefix gives bit-identical logits and tokens on every fixture", "[prefix]") {
  for (const auto& dir : fixture_dirs()) check_prefix_reuse(dir, DType::F32);
}

// Per-token scales make a token's 8-bit KV independent of the tokens around it, so a block
// computed for another request holds exactly the codes and scales this one would write.
TEST_CASE("a reused prefix stays bit-identical with an int8 KV cache", "[prefix][kv8]") {
  for (const char* name : {"gqa8x2-fp32", "rw-alibi16-fp32"})
    check_prefix_reuse(kFixtures / name, DType::I8);
}

TEST_CASE("prefix reuse under preemption in a tiny pool gives what each request gives alone",
          "[prefix]") {
  EngineRig rig(kFixtures / "gqa8x2-fp32", 14);  // 56 tokens for requests of 24-30 each
  std::mt19937 rng(9);
  const std::int64_t vocab = rig.config.vocab_size;
  const auto shared = random_tokens(16, vocab, rng);
  std::vector<BatchRequest> reqs;
  for (std::uint64_t id = 1; id <= 6; ++id) {
    auto p = shared;
    const auto tail = random_tokens(1 + rng() % 8, vocab, rng);
    p.insert(p.end(), tail.begin(), tail.end());
    reqs.push_back(make_request(id, p, id % 2 == 0));
  }
  std::map<std::uint64_t, std::vector<std::int32_t>> alone;
  SchedulerConfig off{8, 16, AdmissionPolicy::kMaxUtilization};
  off.enable_prefix_caching = false;
  for (const auto& r : reqs) {
    BatchEngine e(rig.runner, off, rig.config.eos_token_ids);
    e.add(r);
    run_to_completion(e);
    alone[r.id] = e.results().at(r.id).tokens;
  }
  BatchEngine engine(rig.runner, {8, 16, AdmissionPolicy::kMaxUtilization},
                     rig.config.eos_token_ids);
  for (const auto& r : reqs) engine.add(r);
  run_to_completion(engine);
  CHECK(engine.scheduler().preemptions() > 0);
  CHECK(engine.scheduler().prefix_hits() > 0);
  for (const auto& r : reqs) {
    INFO("request " << r.id);
    CHECK(engine.results().at(r.id).tokens == alone[r.id]);
  }
  CHECK(engine.blocks().used_blocks() == 0);
}

TEST_CASE("cancelling a request mid-prefill leaves the one it shares a prefix with intact",
          "[prefix]") {
  EngineRig rig(kFixtures / "gqa8x2-fp32");
  std::mt19937 rng(21);
  const std::int64_t vocab = rig.config.vocab_size;
  const auto shared = random_tokens(16, vocab, rng);
  auto pa = shared, pb = shared;
  const auto ta = random_tokens(2, vocab, rng), tb = random_tokens(20, vocab, rng);
  pa.insert(pa.end(), ta.begin(), ta.end());
  pb.insert(pb.end(), tb.begin(), tb.end());
  BatchRequest a = make_request(1, pa, false);
  a.max_new_tokens = 12;
  SchedulerConfig off{8, 8, AdmissionPolicy::kMaxUtilization};
  off.enable_prefix_caching = false;
  BatchEngine fresh(rig.runner, off, rig.config.eos_token_ids);
  fresh.add(a);
  run_to_completion(fresh);

  BatchEngine engine(rig.runner, {8, 8, AdmissionPolicy::kMaxUtilization},
                     rig.config.eos_token_ids);
  engine.add(a);
  for (int i = 0; i < 4; ++i) REQUIRE(engine.step());  // 8 + 8 + 2 prompt tokens, then a decode
  REQUIRE(engine.scheduler().sequence(1).computed == 19);
  engine.add(make_request(2, pb, false));
  REQUIRE(engine.step());
  const SequenceState& b = engine.scheduler().sequence(2);
  CHECK(b.cached_tokens == 16);
  CHECK(b.computed == 16 + 7);  // mid-prefill: a decode and 7 of its 20 own tokens ran
  CHECK(engine.cancel(2));
  run_to_completion(engine);
  CHECK(engine.results().at(1).tokens == fresh.results().at(1).tokens);
  CHECK(engine.results().at(1).cached_tokens == 0);
  CHECK(engine.blocks().used_blocks() == 0);
  // The shared prefix is still cached for whoever comes next.
  const Trace again = trace(engine, make_request(3, pb, false));
  CHECK(engine.results().at(3).cached_tokens == 20);  // the cancelled one computed 5 blocks
  BatchEngine fresh_b(rig.runner, off, rig.config.eos_token_ids);
  CHECK(trace(fresh_b, make_request(3, pb, false)).logits == again.logits);
}
