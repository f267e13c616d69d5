// Logit summaries (kernels/logit_summary.h): the host implementation against a naive reference,
// the sampler and log-probabilities from a summary against the full row, and the batch engine's
// summary path against its full-row path on the fixtures.
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include <catch2/catch.hpp>

#include "tests/engine_rig.h"

#include "engine/batch_engine.h"
#include "engine/logprobs.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/logit_summary.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;

namespace {

// Values from a small set (many ties), some -inf, or a normal spread.
std::vector<float> random_row(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::uniform_int_distribution<int> coarse(-3, 3), pick(0, 9);
  const int kind = static_cast<int>(seed % 3);
  for (auto& x : v) {
    x = kind == 0 ? d(rng) : static_cast<float>(coarse(rng));
    if (kind == 2 && pick(rng) == 0) x = -std::numeric_limits<float>::infinity();
    if (kind == 1 && pick(rng) == 0) x = -0.0f;  // equal to +0: a tie, not an order
  }
  return v;
}

// The obvious way: sort every (logit, id) pair; log-sum-exp in long double.
void check_against_naive(const std::vector<float>& row, const LogitSummary& s) {
  std::vector<std::int32_t> ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](std::int32_t a, std::int32_t b) {
    return row[static_cast<std::size_t>(a)] > row[static_cast<std::size_t>(b)];
  });
  CHECK(s.argmax == ids[0]);
  CHECK(s.max == row[static_cast<std::size_t>(ids[0])]);
  if (std::isinf(s.max)) {  // every logit -inf: no distribution (NaN), as before summaries
    CHECK(std::isnan(s.log_z));
  } else {
    long double z = 0;
    // The same float differences (their rounding is part of the definition), summed exactly.
    for (const float l : row) z += std::exp(static_cast<long double>(l - s.max));
    CHECK(s.log_z == Approx(static_cast<double>(s.max + std::log(z))).epsilon(1e-12));
  }
  const auto k = std::min<std::size_t>(kSummaryTopK, row.size());
  REQUIRE(s.count == static_cast<std::int32_t>(k));
  for (std::size_t i = 0; i < k; ++i) {
    CHECK(s.top_ids[i] == ids[i]);
    CHECK(s.top_logits[i] == row[static_cast<std::size_t>(ids[i])]);
  }
}

}  // namespace

TEST_CASE("logit summaries match a naive sort, with ties, -inf and K > vocab", "[summary]") {
  CpuBackend backend(1, 16, 1);
  std::vector<std::int32_t> order;
  for (const std::size_t n : {1, 5, 63, 64, 65, 384, 5000}) {
    for (std::uint32_t seed = 0; seed < 6; ++seed) {
      INFO("vocab " << n << " seed " << seed);
      const auto row = random_row(n, seed * 7 + static_cast<std::uint32_t>(n));
      LogitSummary s;
      summarize_logits(row, s, order);
      check_against_naive(row, s);
      // The backend's default is the same function, row by row.
      std::vector<float> two(row);
      two.insert(two.end(), row.rbegin(), row.rend());
      LogitSummary b[2];
      backend.logit_summary(two.data(), 2, static_cast<std::int64_t>(n), b);
      CHECK(std::memcmp(&b[0], &s, sizeof s) == 0);
      check_against_naive({row.rbegin(), row.rend()}, b[1]);
    }
  }
}

TEST_CASE("sampling and log-probabilities from a summary equal the full row's", "[summary]") {
  std::vector<std::int32_t> order;
  for (std::uint32_t seed = 0; seed < 30; ++seed) {
    const auto row = random_row(seed % 2 ? 384 : 40, seed);
    LogitSummary s;
    summarize_logits(row, s, order);
    Sampler full(std::ssize(row)), top(std::ssize(row));
    SamplingParams p;
    p.seed = seed;
    for (const std::int32_t k : {1, 2, 17, 40, 64}) {
      for (const float t : {0.0f, 0.3f, 1.0f, 2.5f}) {
        p.top_k = k;
        p.temperature = t;
        p.top_p = seed % 3 == 0 ? 0.8f : 1.0f;
        p.typical_p = seed % 5 == 0 ? 0.7f : 1.0f;
        p.min_p = seed % 4 == 0 ? 0.1f : 0.0f;
        for (std::int64_t pos = 0; pos < 8; ++pos) {
          auto copy = row;
          const std::int32_t want = full.sample(copy, p, {}, {}, pos);
          const auto c = static_cast<std::size_t>(s.count);
          INFO("seed " << seed << " top_k " << k << " temperature " << t << " pos " << pos);
          CHECK(top.sample_top({s.top_ids, c}, {s.top_logits, c}, p, pos) == want);
        }
      }
    }
    std::vector<TokenLogprob> a, b;
    for (const std::int32_t n : {0, 1, 5, 20}) {
      for (std::size_t i = 0; i < static_cast<std::size_t>(s.count); i += 7) {
        const float lp_full = log_probabilities(row, s.top_ids[i], n, a, order);
        const float lp_sum = log_probabilities(s, s.top_logits[i], n, b);
        CHECK(lp_full == lp_sum);
        REQUIRE(a.size() == b.size());
        for (std::size_t j = 0; j < a.size(); ++j) {
          CHECK(a[j].id == b[j].id);
          CHECK(a[j].logprob == b[j].logprob);
        }
      }
    }
  }
}

namespace {

using Rig = test::EngineRig;

// Runs every request in one engine, summaries allowed or not.
std::map<std::uint64_t, BatchResult> run_all(Rig& rig, const std::vector<BatchRequest>& reqs,
                                             bool full, std::uint64_t* summary_iterations) {
  BatchEngine engine(rig.runner, {4, 32, AdmissionPolicy::kMaxUtilization}, {});
  engine.force_full_logits(full);
  engine.prefer_summaries(true);  // the CPU's default is whole rows
  for (const auto& r : reqs) engine.add(r);
  run_to_completion(engine);
  *summary_iterations = engine.stats().summary_iterations;
  return engine.results();
}

}  // namespace

TEST_CASE("the batch engine's summary path equals its full-row path", "[summary][batch]") {
  for (const char* name : {"gqa8x2-fp32", "mqa7-bf16", "rw-alibi16-fp32"}) {
    Rig rig(kFixtures / name);
    const auto ref = read_reference(kFixtures / name);
    std::vector<BatchRequest> reqs;
    std::uint64_t id = 1;
    for (const auto& c : ref["cases"]) {
      for (int variant = 0; variant < 4; ++variant) {
        BatchRequest r;
        r.id = id++;
        r.prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
        r.max_new_tokens = 6;
        r.logprobs = variant % 2 ? 5 : (variant ? 0 : -1);
        if (variant >= 2) {  // sampled: the candidates lie in the summary's top list
          r.sampling.temperature = 0.9f;
          r.sampling.top_k = variant == 2 ? 40 : kSummaryTopK;
          r.sampling.top_p = 0.95f;
          r.sampling.seed = r.id;
        }
        reqs.push_back(r);
      }
    }
    std::uint64_t with_summary = 0, without = 0;
    const auto a = run_all(rig, reqs, false, &with_summary);
    const auto b = run_all(rig, reqs, true, &without);
    INFO(name);
    CHECK(with_summary > 0);
    CHECK(without == 0);
    REQUIRE(a.size() == b.size());
    for (const auto& [rid, ra] : a) {
      const BatchResult& rb = b.at(rid);
      INFO("request " << rid);
      CHECK(ra.tokens == rb.tokens);
      CHECK(ra.logprobs == rb.logprobs);
      REQUIRE(ra.top_logprobs.size() == rb.top_logprobs.size());
      for (std::size_t t = 0; t < ra.top_logprobs.size(); ++t) {
        REQUIRE(ra.top_logprobs[t].size() == rb.top_logprobs[t].size());
        for (std::size_t j = 0; j < ra.top_logprobs[t].size(); ++j) {
          CHECK(ra.top_logprobs[t][j].id == rb.top_logprobs[t][j].id);
          CHECK(ra.top_logprobs[t][j].logprob == rb.top_logprobs[t][j].logprob);
        }
      }
    }
  }
}

TEST_CASE("a row the summary cannot serve makes the step read full rows", "[summary][batch]") {
  Rig rig(kFixtures / "gqa8x2-fp32");
  const auto ref = read_reference(kFixtures / "gqa8x2-fp32");
  BatchRequest r;
  r.id = 1;
  r.prompt = ref["cases"][0]["prompt_ids"].get<std::vector<std::int32_t>>();
  r.max_new_tokens = 3;
  r.sampling.temperature = 1.0f;
  r.sampling.top_k = 0;  // the whole vocabulary is a candidate
  std::uint64_t summary_iterations = 0;
  run_all(rig, {r}, false, &summary_iterations);
  CHECK(summary_iterations == 0);
  r.sampling.top_k = 5;
  r.sampling.repetition_penalty = 1.2f;  // penalties reorder the row
  run_all(rig, {r}, false, &summary_iterations);
  CHECK(summary_iterations == 0);
  r.sampling.repetition_penalty = 1.0f;
  r.min_new_tokens = 2;  // masking eos: the first two steps need rows
  run_all(rig, {r}, false, &summary_iterations);
  CHECK(summary_iterations == 1);
}
