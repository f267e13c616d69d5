// Request parameters as the frontends' JSON spells them: each applied, each invalid value refused
// with a message naming it.
#include <catch2/catch.hpp>

#include "engine/bounded_json.h"
#include "launcher/serve/request_params.h"

using namespace saker;
using saker::cli::apply_parameters;
using json = nlohmann::ordered_json;  // as the frontends parse bodies: keys in order

namespace {
BatchRequest with(const json& p) {
  BatchRequest r;
  apply_parameters(p, r);
  return r;
}
}  // namespace

TEST_CASE("parameters are applied under their DJL, TGI and OpenAI names", "[params]") {
  const auto r = with(json::parse(R"({"max_new_tokens": 7, "min_new_tokens": 2, "do_sample": true,
      "temperature": 0.5, "top_k": 4, "top_p": 0.9, "typical_p": 0.8, "min_p": 0.1,
      "repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 42,
      "stop_sequences": ["\nUser:"], "stop_token_ids": [11], "ignore_eos_token": true,
      "top_n_tokens": 3, "details": true})"));
  CHECK(r.max_new_tokens == 7);
  CHECK(r.min_new_tokens == 2);
  CHECK(r.sampling.temperature == 0.5f);
  CHECK(r.sampling.top_k == 4);
  CHECK(r.sampling.top_p == 0.9f);
  CHECK(r.sampling.typical_p == 0.8f);
  CHECK(r.sampling.min_p == 0.1f);
  CHECK(r.sampling.repetition_penalty == 1.2f);
  CHECK(r.sampling.presence_penalty == 0.5f);
  CHECK(r.sampling.frequency_penalty == -0.5f);
  CHECK(r.sampling.seed == 42);
  CHECK(r.stop == std::vector<std::string>{"\nUser:"});
  CHECK(r.stop_token_ids == std::vector<std::int32_t>{11});
  CHECK(r.ignore_eos);
  CHECK(r.logprobs == 3);
  CHECK(with(json::parse(R"({"max_tokens": 3, "stop": "x", "ignore_eos": true})")).stop ==
        std::vector<std::string>{"x"});
  CHECK(with(json::parse(R"({"cache_salt": "tenant-7"})")).cache_salt == "tenant-7");
  CHECK(with(json::object()).cache_salt.empty());
}

TEST_CASE("greedy unless sampling is asked for", "[params]") {
  CHECK(with(json::object()).sampling.greedy());
  CHECK(with(json::parse(R"({"temperature": 0.7, "do_sample": false})")).sampling.greedy());
  CHECK_FALSE(with(json::parse(R"({"temperature": 0.7})")).sampling.greedy());
  CHECK(with(json::parse(R"({"do_sample": true})")).sampling.temperature == 1.0f);
}

TEST_CASE("invalid parameters are refused, named", "[params]") {
  const std::pair<const char*, const char*> bad[] = {
      {R"({"temperature": -1})", "temperature"},
      {R"({"temperature": "hot"})", "`temperature` must be a number"},
      {R"({"top_p": 0, "do_sample": true})", "top_p must be in (0, 1], got 0"},
      {R"({"top_p": 1.5})", "top_p must be in (0, 1], got 1.5"},
      {R"({"typical_p": 2})", "typical_p"},
      {R"({"min_p": -0.1})", "min_p"},
      {R"({"repetition_penalty": 0})", "repetition_penalty must be > 0"},
      {R"({"presence_penalty": 3})", "presence_penalty must be in [-2, 2]"},
      {R"({"max_new_tokens": 0})", "`max_new_tokens` must be in [1,"},
      {R"({"max_new_tokens": 2.5})", "`max_new_tokens` must be an integer"},
      {R"({"max_new_tokens": 4, "min_new_tokens": 5})", "min_new_tokens"},
      {R"({"seed": -3})", "`seed` must be a non-negative integer"},
      {R"({"stop": [1]})", "`stop` must hold strings only"},
      {R"({"stop": [""]})", "empty string"},
      {R"({"top_n_tokens": 50})", "`top_n_tokens` must be in [0, 20]"},
      {R"({"ignore_eos": "yes"})", "`ignore_eos` must be true or false"},
      {R"({"beam_width": 4})", "`beam_width` is not supported"},
      {R"({"cache_salt": 3})", "`cache_salt` must be a string"},
      {R"({"stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]})",
       "holds 17 strings; the limit is 16"},
  };
  for (const auto& [params, msg] : bad) {
    INFO(params);
    CHECK_THROWS_WITH(with(json::parse(params)), Catch::Contains(msg));
  }
  CHECK_THROWS_WITH(with(json::array()), Catch::Contains("`parameters` must be an object"));
  // The lists a body could multiply into memory are bounded, each naming its limit.
  CHECK_THROWS_WITH(with({{"stop", {std::string(cli::kMaxStopBytes + 1, 'z')}}}),
                    Catch::Contains("bytes; the limit is 1024"));
  CHECK_NOTHROW(with({{"stop", {std::string(cli::kMaxStopBytes, 'z')}}}));
  json ids = json::array();
  for (std::size_t i = 0; i <= cli::kMaxStopTokenIds; ++i) ids.push_back(i);
  CHECK_THROWS_WITH(with({{"stop_token_ids", ids}}), Catch::Contains("129 ids; the limit is 128"));
  ids.erase(ids.size() - 1);
  CHECK_NOTHROW(with({{"stop_token_ids", ids}}));
}

TEST_CASE("structured-output parameters in every API's form, the schema's key order kept",
          "[params][structured]") {
  using K = Constraint::Kind;
  const json schema = json::parse(R"({"type": "object", "properties": {"zeta": {"type": "integer"},
      "alpha": {"type": "boolean"}}, "required": ["zeta", "alpha"]})");
  struct Form {
    json params;
    K kind;
    std::string field;
  };
  const std::vector<Form> forms = {
      {{{"response_format",
         {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", schema}}}}}},
       K::kJsonSchema,
       "response_format"},
      {{{"guided_json", schema}}, K::kJsonSchema, "guided_json"},
      {{{"guided_json", schema.dump()}}, K::kJsonSchema, "guided_json"},
      {{{"grammar", {{"type", "json"}, {"value", schema}}}}, K::kJsonSchema, "grammar"},
      {{{"structured_outputs", {{"json", schema}}}}, K::kJsonSchema, "structured_outputs.json"},
  };
  for (const Form& f : forms) {
    INFO(f.params.dump());
    const BatchRequest r = with(f.params);
    CHECK(r.constraint.kind == f.kind);
    CHECK(r.constraint.field == f.field);
    // Properties reach the compiler in the client's order (outputs follow it), not sorted.
    CHECK(r.constraint.text.find("zeta") < r.constraint.text.find("alpha"));
  }
  CHECK(with(json::parse(R"({"response_format": {"type": "json_object"}})")).constraint.kind ==
        K::kJsonObject);
  CHECK(!with(json::parse(R"({"response_format": {"type": "text"}})")).constraint.active());
  const BatchRequest rx = with(json::parse(R"({"grammar": {"type": "regex", "value": "[a-z]+"}})"));
  CHECK((rx.constraint.kind == K::kRegex && rx.constraint.text == "[a-z]+"));
  const BatchRequest ch = with(json::parse(R"({"guided_choice": ["a", "b"]})"));
  CHECK((ch.constraint.kind == K::kChoice && ch.constraint.choices.size() == 2));
  CHECK(with(json::parse(R"({"guided_grammar": "root ::= \"x\""})")).constraint.kind ==
        K::kGrammar);

  const std::pair<const char*, const char*> bad[] = {
      {R"({"guided_json": 5})", "`guided_json` must be a JSON schema"},
      {R"({"guided_regex": ["a"]})", "`guided_regex` must be a string"},
      {R"({"guided_choice": []})", "`guided_choice` must be a non-empty list of strings"},
      {R"({"guided_choice": ["a", 1]})", "must hold strings only"},
      {R"({"response_format": {"type": "xml"}})", "type must be text, json_object or json_schema"},
      {R"({"response_format": {"type": "json_schema"}})", "needs a `json_schema` object"},
      {R"({"grammar": {"type": "lark", "value": "x"}})", "type must be json or regex"},
      {R"({"structured_outputs": {"xml": "x"}})", "`structured_outputs.xml` is not supported"},
      {R"({"guided_regex": "a", "guided_choice": ["b"]})", "a second structured-output constraint"},
  };
  for (const auto& [params, msg] : bad) {
    INFO(params);
    CHECK_THROWS_WITH(with(json::parse(params)), Catch::Contains(msg));
  }
}

TEST_CASE("untrusted JSON nested past the limit is refused while parsing, however deep",
          "[params]") {
  const auto nest = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  CHECK(parse_bounded_json(nest(kMaxJsonDepth)).is_array());
  CHECK_THROWS_AS(parse_bounded_json(nest(kMaxJsonDepth + 1)), JsonTooDeep);
  // 100,000 levels: refused before anything recursive (a copy, a dump) could overflow the stack.
  CHECK_THROWS_WITH(parse_bounded_json<nlohmann::ordered_json>(nest(100000)),
                    Catch::Contains("deeper than 64 levels"));
  std::string objects;
  for (int i = 0; i < 65; ++i) objects += "{\"a\": ";
  objects += "1" + std::string(65, '}');
  CHECK_THROWS_AS(parse_bounded_json(objects), JsonTooDeep);
  // Malformed text is still the parser's own error.
  CHECK_THROWS_AS(parse_bounded_json("[1, 2"), nlohmann::json::parse_error);
}
