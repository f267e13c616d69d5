// Structured outputs with the real Falcon tokenizer (65024 ids): every schema of the suite
// (tests/fixtures/structured/schemas.json) turned into tokens by the constraint alone, over random
// logits (the hardest case: nothing but the mask makes the output valid), greedy and sampled at
// temperature 1, then checked by a standard validator (valijson); regex, choice and grammar
// constraints with the exact placement of EOS; malformed constraints refused by name.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/constraints/compiler.h"
#include "engine/sampler.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/json_validate.h"
#include "tests/structured_rig.h"

using namespace saker;
using json = nlohmann::ordered_json;  // the suite's order, as clients send schemas

namespace {

using test::compiler;
using test::falcon_tokenizer;
using test::generate;
using test::kEos;
using test::kVocab;
using test::Output;
using test::random_logits;

Constraint schema_constraint(const json& schema) {
  return Constraint{Constraint::Kind::kJsonSchema, schema.dump(), {}, "guided_json"};
}

}  // namespace

TEST_CASE("every schema of the suite gives valid JSON from a random model, greedy and sampled",
          "[structured]") {
  const json suite = test::schema_suite();
  REQUIRE(suite.size() >= 40);
  std::vector<double> compile_ms;
  for (const json& entry : suite) {
    const json& schema = entry["schema"];
    const auto t0 = std::chrono::steady_clock::now();
    compiler().compile(schema_constraint(schema));
    compile_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    for (const float temperature : {0.0f, 1.0f})
      for (const std::uint64_t seed : {1u, 2u, 3u}) {
        const Output out = generate(schema_constraint(schema), seed, temperature, 512);
        INFO(entry["name"].get<std::string>()
             << ", temperature " << temperature << ", seed " << seed << ": " << out.text);
        REQUIRE(out.ended);
        json doc;
        REQUIRE_NOTHROW(doc = json::parse(out.text));
        CHECK(test::validation_errors(schema, doc).empty());
      }
  }
  std::sort(compile_ms.begin(), compile_ms.end());
  std::printf("structured: %zu schemas compiled, median %.1f ms, max %.1f ms\n", compile_ms.size(),
              compile_ms[compile_ms.size() / 2], compile_ms.back());
}

TEST_CASE("a regex constraint: the whole output matches, EOS only once it does", "[structured]") {
  const std::string re = "[a-z]{3}-[0-9]{2,3}";
  const Constraint c{Constraint::Kind::kRegex, re, {}, "guided_regex"};
  for (const std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    // Step by step: EOS is allowed exactly when the text so far matches the whole regex.
    ConstraintMatcher m(compiler().compile(c));
    Sampler sampler(kVocab);
    SamplingParams p;
    p.seed = seed;
    std::vector<float> logits;
    std::vector<std::int32_t> tokens;
    bool ended = false;
    for (std::int64_t step = 0; step < 64 && !ended; ++step) {
      random_logits(seed, step, logits);
      m.mask(logits);
      const std::string so_far = falcon_tokenizer().decode(tokens);
      const bool eos_allowed = logits[kEos] != -std::numeric_limits<float>::infinity();
      INFO("after \"" << so_far << "\"");
      CHECK(eos_allowed == std::regex_match(so_far, std::regex(re)));
      const std::int32_t t = sampler.sample(logits, p, {}, tokens, step);
      REQUIRE(m.accept(t));
      if (t == kEos)
        ended = true;
      else
        tokens.push_back(t);
    }
    CHECK(ended);
    CHECK(std::regex_match(falcon_tokenizer().decode(tokens), std::regex(re)));
  }
}

TEST_CASE("a choice constraint gives one of the choices, then EOS", "[structured]") {
  const std::vector<std::string> choices = {"positive", "negative", "neutral", "n/a \"quoted\""};
  const Constraint c{Constraint::Kind::kChoice, {}, choices, "guided_choice"};
  for (const float temperature : {0.0f, 1.0f})
    for (const std::uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
      const Output out = generate(c, seed, temperature, 32);
      INFO(out.text);
      CHECK(out.ended);
      CHECK(std::find(choices.begin(), choices.end(), out.text) != choices.end());
    }
}

TEST_CASE("a GBNF grammar constraint: recursion stays exact, EOS at the end of the root rule",
          "[structured]") {
  // Balanced parentheses around digits: not a regular language.
  const std::string g = "root ::= expr\nexpr ::= [0-9] | \"(\" expr \"+\" expr \")\"";
  const Constraint c{Constraint::Kind::kGrammar, g, {}, "guided_grammar"};
  for (const std::uint64_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
    const Output out = generate(c, seed, 1.0f, 256);
    INFO(out.text);
    REQUIRE(out.ended);
    // Reduce innermost "(d+d)" to "d" until one digit is left: the text is in the language.
    std::string s = out.text;
    const std::regex inner(R"(\([0-9]\+[0-9]\))");
    while (std::regex_search(s, inner)) s = std::regex_replace(s, inner, "0");
    CHECK(std::regex_match(s, std::regex("[0-9]")));
  }
}

TEST_CASE("malformed constraints are refused, naming the field and the problem", "[structured]") {
  using K = Constraint::Kind;
  struct Bad {
    Constraint c;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {{K::kJsonSchema, "{not json", {}, "guided_json"}, "not valid JSON"},
      {{K::kJsonSchema,
        R"({"type": "object", "properties": {"a": {"not": {"type": "null"}}}})",
        {},
        "response_format"},
       "`not` (at #/properties/a/not)"},
      {{K::kJsonSchema, R"({"type": "array", "uniqueItems": true})", {}, "grammar"},
       "`uniqueItems`"},
      {{K::kJsonSchema, R"({"type": "number", "multipleOf": 0.5})", {}, "guided_json"},
       "multipleOf"},
      {{K::kJsonSchema, R"({"type": "strin"})", {}, "guided_json"}, "strin"},
      {{K::kJsonSchema, R"({"$ref": "#/$defs/missing"})", {}, "guided_json"}, "missing"},
      {{K::kRegex, "([a-z]", {}, "guided_regex"}, "regex"},
      {{K::kRegex, "", {}, "guided_regex"}, "empty"},
      {{K::kGrammar, "root ::= undefined_rule", {}, "guided_grammar"}, "undefined_rule"},
      {{K::kGrammar, "root ::= \"a", {}, "guided_grammar"}, "grammar"},
      {{K::kChoice, {}, {}, "guided_choice"}, "empty"},
      {{K::kChoice, {}, {"a", ""}, "guided_choice"}, "choice 1 is empty"},
      // Counted repetitions are bounded per constraint (the fuzzer's `.0{78791}` held a thread
      // for minutes): in a regex, a grammar and a schema's patterns, together.
      {{K::kRegex, ".0{78791}", {}, "guided_regex"}, "add up to more than 256"},
      {{K::kRegex, "(.{200}x){100}", {}, "guided_regex"}, "add up to more than 256"},
      {{K::kRegex, "[0-9]{1,200}-[0-9]{1,57}", {}, "guided_regex"}, "add up to more than 256"},
      {{K::kGrammar, "root ::= [^x] \"0\"{2000}", {}, "guided_grammar"}, "more than 256"},
      {{K::kJsonSchema, R"({"type": "string", "pattern": ".0{3000}"})", {}, "guided_json"},
       "more than 256"},
      {{K::kJsonSchema,
        R"({"properties": {"a": {"pattern": "x{200}"}}, "patternProperties": {"^b{100}$": {}}})",
        {},
        "guided_json"},
       "more than 256"},
  };
  for (const Bad& b : bad) {
    INFO(b.c.field << ": " << b.c.text);
    try {
      compiler().compile(b.c);
      FAIL("compiled");
    } catch (const ConstraintError& e) {
      CHECK(e.field() == b.c.field);
      CHECK_THAT(e.what(), Catch::Contains(b.says) && Catch::Contains(b.c.field));
    }
  }
  // Braces that are no repetition do not count: in classes, escapes, grammar strings and
  // comments; and up to the limit compiles.
  for (const Constraint& c :
       {Constraint{K::kRegex, "[{]{200}\\{2000}", {}, "guided_regex"},
        Constraint{K::kRegex, "[0-9]{1,200}-[0-9]{1,56}", {}, "guided_regex"},
        Constraint{
            K::kGrammar, "root ::= \"{5000}\" [{]{200} # x{5000}\n", {}, "guided_grammar"}}) {
    INFO(c.text);
    CHECK_NOTHROW(compiler().compile(c));
  }
  // The compiler keeps working after refusals.
  CHECK(generate({K::kChoice, {}, {"ok"}, "guided_choice"}, 1, 0.0f, 8).text == "ok");
}

TEST_CASE("the mask allows exactly the tokens the automaton accepts", "[structured]") {
  // Reference: a fresh matcher brought to the same state accepts the token or not, one at a time.
  const json schema = test::suite_schema("product");
  const Constraint c = schema_constraint(schema);
  std::vector<std::int32_t> ids;
  for (std::int32_t i = 0; i < 400; ++i) ids.push_back(i);  // the bytes and the first merges
  for (std::int32_t i = kVocab - 40; i < kVocab; ++i) ids.push_back(i);  // the last, partial word
  std::uint64_t x = 7;
  for (int i = 0; i < 400; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(static_cast<std::int32_t>((x >> 33) % kVocab));
  }
  for (const std::string& prefix :
       {std::string(), std::string(R"({"sku": "AB)"),
        std::string(R"({"sku": "ABC-1234", "price": 1)"),
        std::string(R"({"sku": "ABC-1234", "price": 1, "stock": 2, "tags": [")")}) {
    const auto toks = falcon_tokenizer().encode(prefix);
    auto at_prefix = [&] {
      ConstraintMatcher m(compiler().compile(c));
      for (const std::int32_t t : toks) {
        INFO("prefix \"" << prefix << "\", token " << t);
        REQUIRE(m.accept(t));
      }
      return m;
    };
    ConstraintMatcher m = at_prefix();
    std::vector<float> logits(kVocab, 0.0f);
    const std::int64_t allowed = m.mask(logits);
    CHECK(allowed ==
          std::count_if(logits.begin(), logits.end(), [](float v) { return v == 0.0f; }));
    for (const std::int32_t id : ids) {
      ConstraintMatcher fresh = at_prefix();
      INFO("after \"" << prefix << "\", token " << id);
      CHECK(fresh.accept(id) == (logits[static_cast<std::size_t>(id)] == 0.0f));
    }
  }
}
