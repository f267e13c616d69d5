// Sampling: each parameter's effect, seeded reproducibility, and validation messages.
#include <cmath>
#include <random>

#include <catch2/catch.hpp>

#include "engine/sampler.h"

using namespace saker;

namespace {

std::vector<float> random_logits(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::int32_t argmax(const std::vector<float>& v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Samples `draws` times at successive positions and counts each id.
std::vector<int> histogram(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler s(static_cast<std::int64_t>(logits.size()));
  std::vector<int> h(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    auto l = logits;
    ++h[static_cast<std::size_t>(s.sample(l, p, {}, {}, i))];
  }
  return h;
}

}  // namespace

TEST_CASE("greedy, temperature 0 and top_k 1 all take the argmax", "[sampler]") {
  for (std::uint32_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(300, seed);
    Sampler s(300);
    SamplingParams t0;
    t0.temperature = 0;
    SamplingParams k1;
    k1.top_k = 1;
    k1.seed = seed;
    auto a = logits, b = logits;
    CHECK(s.sample(a, t0, {}, {}, 5) == argmax(logits));
    CHECK(s.sample(b, k1, {}, {}, 5) == argmax(logits));
  }
}

TEST_CASE("seeded sampling depends on seed and position only", "[sampler]") {
  const auto logits = random_logits(500, 1);
  SamplingParams p;
  p.seed = 1234;
  Sampler a(500), b(500);
  for (int pos = 0; pos < 200; ++pos) {
    auto l1 = logits, l2 = logits;
    // A different sampler, called in a different order, draws the same token.
    CHECK(a.sample(l1, p, {}, {}, pos) == b.sample(l2, p, {}, {}, pos));
  }
  std::vector<int> ids_a, ids_b;
  p.seed = 1;
  for (int pos = 0; pos < 50; ++pos) {
    auto l = logits;
    ids_a.push_back(a.sample(l, p, {}, {}, pos));
  }
  p.seed = 2;
  for (int pos = 0; pos < 50; ++pos) {
    auto l = logits;
    ids_b.push_back(a.sample(l, p, {}, {}, pos));
  }
  CHECK(ids_a != ids_b);
}

TEST_CASE("draws follow the softmax at the temperature", "[sampler]") {
  const std::vector<float> logits{2.0f, 1.0f, 0.0f, -1.0f};
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    SamplingParams p;
    p.temperature = temperature;
    p.seed = 99;
    const int draws = 40000;
    const auto h = histogram(logits, p, draws);
    double z = 0;
    for (float l : logits) z += std::exp(l / temperature);
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const double want = std::exp(logits[i] / temperature) / z;
      // Four standard deviations of a binomial count.
      CHECK(std::fabs(h[i] - want * draws) < 4 * std::sqrt(draws * want * (1 - want)) + 1);
    }
  }
}

TEST_CASE("top_k, top_p, min_p and typical_p only ever return tokens they keep", "[sampler]") {
  const std::vector<float> logits{3.0f, 2.5f, 2.0f, 0.0f, -1.0f, -3.0f};
  // Probabilities at temperature 1: about .47 .28 .17 .02 .01 .001
  SamplingParams k;
  k.top_k = 2;
  auto h = histogram(logits, k, 5000);
  CHECK(h[0] + h[1] == 5000);
  CHECK(h[1] > 0);
  SamplingParams tp;
  tp.top_p = 0.7f;  // .47 + .28 reaches it: two tokens
  h = histogram(logits, tp, 5000);
  CHECK(h[0] + h[1] == 5000);
  SamplingParams mp;
  mp.min_p = 0.3f;  // keeps p >= .3 * .47: tokens 0, 1, 2
  h = histogram(logits, mp, 5000);
  CHECK(h[0] + h[1] + h[2] == 5000);
  CHECK(h[2] > 0);
  SamplingParams ty;
  ty.typical_p = 0.2f;  // only the token closest to the entropy
  h = histogram(logits, ty, 2000);
  CHECK(std::count_if(h.begin(), h.end(), [](int c) { return c > 0; }) == 1);
}

TEST_CASE("penalties push repeated tokens down as HF and OpenAI define them", "[sampler]") {
  Sampler s(4);
  std::vector<float> l{2.0f, -2.0f, 1.0f, 0.5f};
  SamplingParams rp;
  rp.repetition_penalty = 2.0f;
  rp.temperature = 0;
  const std::vector<std::int32_t> prompt{0, 1};
  // Seen tokens: 2 / 2 = 1 and -2 * 2 = -4. Token 0 (now 1.0) ties token 2 (1.0): the lower
  // id keeps the argmax.
  CHECK(s.sample(l, rp, prompt, {}, 0) == 0);
  CHECK(l[0] == 1.0f);
  CHECK(l[1] == -4.0f);
  std::vector<float> l2{2.0f, 1.9f, 0.0f, 0.0f};
  SamplingParams pp;
  pp.temperature = 0;
  pp.presence_penalty = 0.5f;
  pp.frequency_penalty = 0.25f;
  const std::vector<std::int32_t> generated{0, 0};
  // Token 0 appeared twice: 2 - 0.5 - 0.5 = 1.0, below token 1.
  CHECK(s.sample(l2, pp, {}, generated, 3) == 1);
  CHECK(l2[0] == 1.0f);
  CHECK(l2[1] == 1.9f);
}

TEST_CASE("invalid sampling parameters are rejected with the name and range", "[sampler]") {
  auto bad = [](auto mutate, const char* what) {
    SamplingParams p;
    mutate(p);
    CHECK_THROWS_WITH(p.validate(), Catch::Contains(what));
  };
  bad([](SamplingParams& p) { p.temperature = -1; }, "temperature must be >= 0");
  bad([](SamplingParams& p) { p.temperature = NAN; }, "temperature must be >= 0, got nan");
  bad([](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1]");
  bad([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1]");
  bad([](SamplingParams& p) { p.top_k = -1; }, "top_k must be >= 0");
  bad([](SamplingParams& p) { p.typical_p = 0; }, "typical_p");
  bad([](SamplingParams& p) { p.min_p = 2; }, "min_p must be in [0, 1]");
  bad([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty must be > 0");
  bad([](SamplingParams& p) { p.presence_penalty = 3; }, "presence_penalty must be in [-2, 2]");
  bad([](SamplingParams& p) { p.frequency_penalty = -3; }, "frequency_penalty");
  SamplingParams ok;
  CHECK_NOTHROW(ok.validate());
}
