// What the structured-output tests share: the real Falcon tokenizer and a compiler for it,
// the logits of a random model, and generation under a constraint from those logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/constraints/compiler.h"
#include "engine/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace saker::test {

constexpr std::int64_t kVocab = 65024;  // Falcon's
constexpr std::int64_t kEos = 11;       // <|endoftext|>

inline const Tokenizer& falcon_tokenizer() {
  static const Tokenizer t =
      Tokenizer::load(std::string(SAKER_SHARED_DIR) + "/models/falcon-tokenizer/tokenizer.json");
  return t;
}

inline const ConstraintCompiler& compiler() {
  static const ConstraintCompiler c(falcon_tokenizer(), kVocab, {kEos});
  return c;
}

// Logits of a random model: a function of (seed, step) alone.
inline void random_logits(std::uint64_t seed, std::int64_t step, std::vector<float>& out) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(step) + 1;
  out.resize(kVocab);
  for (float& v : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<float>(x >> 40) * 0x1p-24f * 8.0f;  // [0, 8): a spread like real logits
  }
}

struct Output {
  std::vector<std::int32_t> tokens;  // without the final EOS
  bool ended = false;                // the automaton accepted EOS
  std::string text;
};

// Generates under `c` from random logits: greedy (temperature 0) or sampled. `budgeted`: the
// matcher knows that max_tokens is the budget (the budget rule), as the engine's do.
inline Output generate(const Constraint& c, std::uint64_t seed, float temperature,
                       std::int64_t max_tokens, bool budgeted = false) {
  ConstraintMatcher m(compiler().compile(c));
  Sampler sampler(kVocab);
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  std::vector<float> logits;
  Output out;
  for (std::int64_t step = 0; step < max_tokens; ++step) {
    random_logits(seed, step, logits);
    const std::int64_t left = budgeted ? max_tokens - step : ConstraintMatcher::kUnbounded;
    REQUIRE(m.mask(logits, left) > 0);
    const std::int32_t sampled =
        temperature == 0.0f ? argmax(logits) : sampler.sample(logits, p, {}, out.tokens, step);
    const std::int32_t t = m.advance(sampled, left);
    REQUIRE(t >= 0);
    if (t == kEos) {
      out.ended = true;
      CHECK(m.terminated());
      break;
    }
    out.tokens.push_back(t);
  }
  out.text = falcon_tokenizer().decode(out.tokens);
  return out;
}

}  // namespace saker::test
