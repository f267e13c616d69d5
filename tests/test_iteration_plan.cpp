// The iteration plan's wire format: round trips, and every malformed input rejected cleanly.
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "parallel/iteration_plan.h"
#include "parallel/watchdog.h"

using namespace saker;

namespace {

IterationPlan random_plan(std::mt19937& rng) {
  std::uniform_int_distribution<int> small(0, 5), tok(0, 65023);
  IterationPlan p;
  p.iteration = rng();
  p.stop = small(rng) == 0;
  p.draft = small(rng) == 1;
  p.heartbeat = small(rng) == 2;
  p.sequences.resize(static_cast<std::size_t>(small(rng)));
  for (auto& s : p.sequences) {
    s.id = (static_cast<std::uint64_t>(rng()) << 32) | rng();
    s.start_pos = small(rng) * 100;
    s.all_logits = small(rng) % 2;
    s.tokens.resize(static_cast<std::size_t>(small(rng) + 1));
    for (auto& t : s.tokens) t = tok(rng);
    s.block_table.resize(static_cast<std::size_t>(small(rng)));
    for (auto& b : s.block_table) b = tok(rng);
  }
  p.freed.resize(static_cast<std::size_t>(small(rng)));
  for (auto& f : p.freed) f = rng();
  return p;
}

std::vector<std::byte> encoded(const IterationPlan& p) {
  std::vector<std::byte> out;
  encode_plan(p, out);
  return out;
}

}  // namespace

TEST_CASE("plans round-trip through the wire format", "[plan]") {
  std::mt19937 rng(42);
  std::vector<std::byte> buf;
  IterationPlan reused;
  for (int i = 0; i < 500; ++i) {
    const IterationPlan p = random_plan(rng);
    encode_plan(p, buf);  // the buffer is reused
    REQUIRE(decode_plan(buf) == p);
    decode_plan(buf, reused);  // and so is a decoded plan's storage
    REQUIRE(reused == p);
  }
  const IterationPlan empty;
  CHECK(decode_plan(encoded(empty)) == empty);
}

TEST_CASE("every truncation of a plan is rejected with a message", "[plan]") {
  std::mt19937 rng(1);
  IterationPlan p = random_plan(rng);
  p.sequences.push_back({7, 3, true, {1, 2, 3}, {4, 5}});
  const auto bytes = encoded(p);
  for (std::size_t n = 0; n < bytes.size(); ++n)
    REQUIRE_THROWS_AS(decode_plan(std::span(bytes).first(n)), PlanError);
  CHECK_THROWS_WITH(decode_plan(std::span(bytes).first(5)), Catch::Contains("truncated"));
}

TEST_CASE("malformed plans name what is wrong", "[plan]") {
  IterationPlan p;
  p.sequences.push_back({9, 0, false, {1, 2}, {0}});
  const auto good = encoded(p);
  auto bad = good;
  bad[0] = std::byte{'X'};
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("bad magic"));
  bad = good;
  bad[4] = std::byte{7};
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("version 7 is not supported"));
  bad = good;
  bad[6] = std::byte{8};
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("unknown flags"));
  bad = good;
  bad.push_back(std::byte{0});
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("payload bytes but carries"));
  // Header offsets: 20 bytes of header, then the sequence count.
  bad = good;
  bad[20] = std::byte{0xff};
  bad[21] = std::byte{0xff};
  bad[22] = std::byte{0xff};
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("over the limit"));
  bad = good;
  bad[24 + 8 + 3] = std::byte{0x80};  // start_pos sign bit
  CHECK_THROWS_WITH(decode_plan(bad), Catch::Contains("negative start position"));
  PlanLimits tight;
  tight.max_tokens = 1;
  CHECK_THROWS_WITH(decode_plan(good, tight), Catch::Contains("2 tokens in one sequence"));
}

TEST_CASE("corrupted plans are rejected or read back faithfully", "[plan]") {
  std::mt19937 rng(3);
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    auto bytes = encoded(random_plan(rng));
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
    IterationPlan plan;
    try {
      plan = decode_plan(bytes);
    } catch (const PlanError&) {
      ++rejected;
      continue;
    }
    // A corruption that still decodes (e.g. inside a token id) must mean exactly those bytes.
    REQUIRE(encoded(plan) == bytes);
  }
  CHECK(rejected > 0);
}

TEST_CASE("the collective watchdog names the wait, its limit and who is blamed", "[plan]") {
  std::mutex mu;
  std::string said;
  {
    CollectiveWatchdog w(
        600,
        [&](const std::string& m) {
          std::lock_guard lock(mu);
          said = m;
        },
        "--peer-timeout", "rank 1 on host h1 is gone");
    w.arm(7, 0.05, "the heartbeat's barrier");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    w.disarm();
  }
  CHECK_THAT(said, Catch::StartsWith("collective watchdog: the heartbeat's barrier has not "
                                     "completed after") &&
                       Catch::Contains("(--peer-timeout 0.05 s); rank 1 on host h1 is gone"));
  // A disarmed watchdog says nothing, however long it lives.
  said.clear();
  {
    CollectiveWatchdog w(0.05, [&](const std::string& m) {
      std::lock_guard lock(mu);
      said = m;
    });
    w.arm(1);
    w.disarm();
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  CHECK(said.empty());
}
