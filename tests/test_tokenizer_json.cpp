// A malformed or unsupported tokenizer.json is refused with the file, the JSON path and why.
#include <catch2/catch.hpp>

#include "tests/tokenizer_fixtures.h"

using nlohmann::json;
using saker::Tokenizer;
using saker::TokenizerError;

namespace {

// The GPT-2-style fixture with a Falcon-like pre-tokenizer sequence: a valid starting point.
json base() {
  std::ifstream in(saker::test::kTokenizerFixtures / "gpt2style/tokenizer.json");
  json j = json::parse(in);
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Punctuation", "behavior": "Contiguous"},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      {"type": "Digits", "individual_digits": false},
      {"type": "Split", "pattern": {"Regex": "[0-9][0-9][0-9]"}, "behavior": "Isolated",
       "invert": false}]})");
  return j;
}

std::string load_error(const json& j) {
  try {
    Tokenizer::from_json_text(j.dump(), "tokenizer.json");
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("tokenizer.json: the starting point of the malformed cases loads", "[tokenizer]") {
  CHECK(load_error(base()) == "(no error)");
}

TEST_CASE("tokenizer.json: structural errors name the JSON path", "[tokenizer]") {
  json j = base();
  j["model"].erase("vocab");
  CHECK(load_error(j) == "tokenizer.json: model: missing field 'vocab'");

  j = base();
  j.erase("model");
  CHECK(load_error(j) == "tokenizer.json: missing field 'model'");

  j = base();
  j["model"]["vocab"]["Ġ"] = "three";
  CHECK(load_error(j) ==
        "tokenizer.json: model.vocab['Ġ']: expected an integer id in [0, 16777216), got \"three\"");
  j["model"]["vocab"]["Ġ"] = -3;
  CHECK(load_error(j) ==
        "tokenizer.json: model.vocab['Ġ']: expected an integer id in [0, 16777216), got -3");
  j["model"]["vocab"]["Ġ"] = 3000000000;
  CHECK_THAT(load_error(j), Catch::EndsWith("got 3000000000"));

  j = base();
  j["model"]["vocab"]["brand-new"] = 5;
  CHECK_THAT(load_error(j), Catch::StartsWith("tokenizer.json: model.vocab['") &&
                                Catch::Contains("id 5 is used by both"));

  j = base();
  j["model"]["merges"][3] = "zzz_unknown Ġ";
  CHECK(load_error(j) ==
        "tokenizer.json: model.merges[3]: token 'zzz_unknown' is not in model.vocab");

  j = base();
  j["model"]["merges"][4] = "Ġ Ġ Ġ";
  CHECK(load_error(j) ==
        "tokenizer.json: model.merges[4]: expected \"left right\" with exactly one space, got "
        "'Ġ Ġ Ġ'");

  j = base();
  j["model"]["merges"][5] = json::array({"Ġ", "~"});
  CHECK(load_error(j) ==
        "tokenizer.json: model.merges[5]: merged token 'Ġ~' is not in model.vocab");

  j = base();
  j["added_tokens"][0]["id"] = 7;
  CHECK_THAT(load_error(j), Catch::StartsWith("tokenizer.json: added_tokens[0].id: id 7 of "
                                              "'<|endoftext|>' is not the id tokenizers gives it"));

  CHECK(load_error(json::array()) == "tokenizer.json: expected an object, got []");
  CHECK_THROWS_WITH(Tokenizer::from_json_text("{\"model\": ", "tokenizer.json"),
                    Catch::StartsWith("tokenizer.json: invalid JSON"));
  CHECK_THROWS_WITH(Tokenizer::load("/nonexistent/tokenizer.json"),
                    "cannot read /nonexistent/tokenizer.json");
  CHECK_THROWS_WITH(Tokenizer::from_model_dir("/nonexistent"),
                    "model directory /nonexistent has no tokenizer.json");
}

TEST_CASE("tokenizer.json: unsupported components are refused, not ignored", "[tokenizer]") {
  json j = base();
  j["pre_tokenizer"]["pretokenizers"][3] = {{"type", "Metaspace"}, {"replacement", "▁"}};
  CHECK(load_error(j) ==
        "tokenizer.json: pre_tokenizer.pretokenizers[3]: unsupported type 'Metaspace'");

  j = base();
  j["normalizer"] = {{"type", "NFC"}};
  CHECK_THAT(load_error(j), Catch::StartsWith("tokenizer.json: normalizer: unsupported "
                                              "normalizer (type 'NFC')"));

  j = base();
  j["model"]["type"] = "WordPiece";
  CHECK(load_error(j) ==
        "tokenizer.json: model: unsupported model type 'WordPiece'; only BPE is supported");

  j = base();
  j["model"]["unk_token"] = "<unk>";
  CHECK(load_error(j) == "tokenizer.json: model.unk_token: an unknown token is not supported");

  j = base();
  j["model"]["byte_fallback"] = true;
  CHECK(load_error(j) == "tokenizer.json: model.byte_fallback: not supported; it must be false");

  j = base();
  j["model"]["dropout"] = 0.1;
  CHECK(load_error(j) == "tokenizer.json: model.dropout: BPE dropout is not supported");

  j = base();
  j["decoder"] = {{"type", "WordPiece"}};
  CHECK(load_error(j) == "tokenizer.json: decoder: unsupported type 'WordPiece'");

  j = base();
  j["decoder"] = nullptr;
  CHECK_THAT(load_error(j), Catch::StartsWith("tokenizer.json: missing field 'decoder'"));

  j = base();
  j["post_processor"] = {{"type", "TemplateProcessing"}};
  CHECK(load_error(j) == "tokenizer.json: post_processor: unsupported type 'TemplateProcessing'");

  j = base();
  j["truncation"] = {{"max_length", 8}};
  CHECK(load_error(j) == "tokenizer.json: truncation: not supported; it must be null");
}

TEST_CASE("tokenizer.json: pre-tokenizer fields are checked", "[tokenizer]") {
  json j = base();
  j["pre_tokenizer"]["pretokenizers"][1].erase("add_prefix_space");
  CHECK(load_error(j) ==
        "tokenizer.json: pre_tokenizer.pretokenizers[1]: missing field 'add_prefix_space'");

  j = base();
  j["pre_tokenizer"]["pretokenizers"][3]["pattern"]["Regex"] = "[0-9";
  CHECK_THAT(load_error(j),
             Catch::StartsWith("tokenizer.json: pre_tokenizer.pretokenizers[3].pattern.Regex: "
                               "invalid regex '[0-9' at offset"));

  j = base();
  j["pre_tokenizer"]["pretokenizers"][3]["pattern"]["Regex"] = "\\h+";
  CHECK_THAT(load_error(j), Catch::Contains("uses \\h, which means a hex digit in Oniguruma"));

  j = base();
  j["pre_tokenizer"]["pretokenizers"][3]["behavior"] = "Sideways";
  CHECK(load_error(j) ==
        "tokenizer.json: pre_tokenizer.pretokenizers[3].behavior: unknown behavior 'Sideways'");

  j = base();
  j["pre_tokenizer"]["pretokenizers"][3]["pattern"] = {{"Regex", "a"}, {"String", "a"}};
  CHECK(load_error(j) ==
        "tokenizer.json: pre_tokenizer.pretokenizers[3].pattern: expected "
        "exactly one of 'Regex' or 'String'");

  j = base();
  j["pre_tokenizer"]["pretokenizers"][2]["individual_digits"] = "yes";
  CHECK(load_error(j) ==
        "tokenizer.json: pre_tokenizer.pretokenizers[2].individual_digits: "
        "expected true or false, got \"yes\"");
}
