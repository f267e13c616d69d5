// The budget rule of structured outputs (docs/structured-outputs.md): with a deliberately tight
// max_tokens, every schema of the suite still ends in valid JSON from a random model (nothing but
// the constraint makes it valid), greedy and sampled; regex, choice and grammar constraints close
// in time too; a budget below the shortest answer is refused, naming max_new_tokens.
#include <cstdint>
#include <cstdio>
#include <regex>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/constraints/compiler.h"
#include "engine/request.h"
#include "tests/json_validate.h"
#include "tests/structured_rig.h"

using namespace saker;
using json = nlohmann::ordered_json;

namespace {

using test::compiler;
using test::generate;
using test::Output;

std::int64_t shortest(const Constraint& c) {
  const auto n = tokens_to_close(*compiler().compile(c));
  REQUIRE(n.has_value());
  return *n;
}

// Whether `text` is a whole JSON document that the schema accepts.
bool valid(const json& schema, const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error&) {
    return false;
  }
  return test::validation_errors(schema, doc).empty();
}

}  // namespace

TEST_CASE("with a tight max_tokens every schema of the suite still ends in valid JSON",
          "[structured]") {
  int runs = 0, invalid_without_rule = 0;
  std::uint64_t k = 0;
  for (const json& entry : test::schema_suite()) {
    const json& schema = entry["schema"];
    const Constraint c{Constraint::Kind::kJsonSchema, schema.dump(), {}, "guided_json"};
    const std::int64_t n = shortest(c);
    // The shortest answer itself: n tokens, and valid.
    const Output least = generate(c, 1, 0.0f, n, true);
    INFO(entry["name"].get<std::string>()
         << ": shortest answer (" << n << " tokens) " << least.text);
    CHECK(valid(schema, least.text));
    for (const std::int64_t budget : {n, n + 1, n + 4, 2 * n + 16})
      for (const float temperature : {0.0f, 1.0f})
        for (const std::uint64_t seed : {++k}) {
          const Output out = generate(c, seed, temperature, budget, true);
          INFO("max_tokens " << budget << ", temperature " << temperature << ", seed " << seed
                             << ": " << out.text);
          CHECK(static_cast<std::int64_t>(out.tokens.size()) <= budget);
          CHECK(valid(schema, out.text));
          ++runs;
          // The same run without the rule: how often peers' truncated answers would be invalid.
          if (!valid(schema, generate(c, seed, temperature, budget).text)) ++invalid_without_rule;
        }
  }
  std::printf("budget rule: %d tight runs all valid; without the rule %d of them were not\n", runs,
              invalid_without_rule);
  CHECK(invalid_without_rule > runs / 4);  // the budgets are tight enough to matter
}

TEST_CASE("regex, choice and grammar constraints close within a tight budget", "[structured]") {
  using K = Constraint::Kind;
  const std::string re = "[a-z]{3}-[0-9]{2,3}(\\.[a-z]+)*";
  const Constraint regex{K::kRegex, re, {}, "guided_regex"};
  const Constraint choice{
      K::kChoice, {}, {"a long answer about falcons", "short", "medium one"}, "guided_choice"};
  const std::string g = "root ::= expr\nexpr ::= [0-9] | \"(\" expr \"+\" expr \")\"";
  const Constraint grammar{K::kGrammar, g, {}, "guided_grammar"};
  CHECK(shortest(choice) ==
        static_cast<std::int64_t>(test::falcon_tokenizer().encode("short").size()));
  CHECK(shortest(grammar) == 1);  // one digit
  for (const std::int64_t extra : {0, 1, 2, 4, 8})
    for (const std::uint64_t seed : {1u, 2u, 3u}) {
      const Output r = generate(regex, seed, 1.0f, shortest(regex) + extra, true);
      INFO("regex: " << r.text);
      CHECK(std::regex_match(r.text, std::regex(re)));
      const Output ch = generate(choice, seed, 1.0f, shortest(choice) + extra, true);
      INFO("choice: " << ch.text);
      CHECK((ch.text == "short" || ch.text == "medium one" ||
             ch.text == "a long answer about falcons"));
      const Output e = generate(grammar, seed, 1.0f, 1 + 4 * extra, true);
      INFO("grammar: " << e.text);
      std::string s = e.text;
      const std::regex inner(R"(\([0-9]\+[0-9]\))");
      while (std::regex_search(s, inner)) s = std::regex_replace(s, inner, "0");
      CHECK(std::regex_match(s, std::regex("[0-9]")));
    }
}

TEST_CASE("a budget below the shortest answer is refused, naming max_new_tokens", "[structured]") {
  const json schema = test::suite_schema("product");
  BatchRequest r;
  r.prompt = {1, 2, 3};
  r.constraint = {Constraint::Kind::kJsonSchema, schema.dump(), {}, "response_format"};
  const std::int64_t n = shortest(r.constraint);
  RequestLimits limits{
      test::kVocab, 4096, true,
      std::shared_ptr<const ConstraintCompiler>(std::shared_ptr<void>{}, &compiler())};
  r.max_new_tokens = n;
  CHECK_NOTHROW(validate_request(r, limits));
  r.max_new_tokens = n - 1;
  try {
    validate_request(r, limits);
    FAIL("accepted a budget below the shortest answer");
  } catch (const RequestError& e) {
    CHECK(e.kind() == RequestError::Kind::kInvalid);
    CHECK(e.field() == "max_new_tokens");
    CHECK_THAT(e.what(), Catch::Contains(std::to_string(n - 1)) &&
                             Catch::Contains(std::to_string(n) + " tokens") &&
                             Catch::Contains("response_format"));
  }
}
