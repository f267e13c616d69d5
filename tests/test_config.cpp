// config.json parsing: the real Falcon configs in ../shared/models and every rejection path.
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/model/falcon/config.h"
#include "engine/model/inventory.h"

using namespace saker;
using nlohmann::json;

namespace {

const std::filesystem::path kShared = SAKER_SHARED_DIR;

std::uint64_t index_total_size(const std::filesystem::path& p) {
  std::ifstream in(p);
  return json::parse(in)["metadata"]["total_size"].get<std::uint64_t>();
}

json base_config() {
  return json::parse(R"({"model_type": "falcon", "vocab_size": 384, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 8, "new_decoder_architecture": true,
    "num_kv_heads": 2})");
}

}  // namespace

TEST_CASE("real falcon-40b (RW-era RefinedWeb config)", "[config]") {
  const auto dir = kShared / "models/falcon-40b";
  const FalconConfig c = load_config(dir);
  CHECK(c.layers == 60);
  CHECK(c.heads == 128);
  CHECK(c.kv_heads == 8);
  CHECK(c.head_dim == 64);
  CHECK(c.hidden == 8192);
  CHECK(c.ffn == 4 * 8192);
  CHECK(c.new_arch);
  CHECK(c.block == BlockKind::kParallelTwoNorm);
  CHECK_FALSE(c.alibi);
  // The RW-era placeholder ids 1/2 are replaced by <|endoftext|> = 11.
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{11});
  const CheckpointInventory inv = inspect_checkpoint(dir);
  CHECK_FALSE(inv.loadable);
  REQUIRE(inv.tensor_names.count("lm_head.weight") == 1);
  // Parameter count (lm_head included, as the index stores it) x bf16 = the index's total_size.
  const auto params = parameter_count(c, true);
  CHECK(static_cast<std::uint64_t>(params) * 2 ==
        index_total_size(dir / "pytorch_model.bin.index.json"));
  CHECK(params / 100'000'000 == 418);  // 41.8 B
  // Every tensor the config implies is in the real index, and nothing else is.
  std::set<std::string> expected;
  for (const auto& t : expected_tensors(c, true)) expected.insert(t.name);
  CHECK(expected == inv.tensor_names);
}

TEST_CASE("real falcon-7b-instruct (current config, multi-query)", "[config]") {
  const auto dir = kShared / "models/falcon-7b-instruct";
  const FalconConfig c = load_config(dir);
  CHECK(c.heads == 71);
  CHECK(c.kv_heads == 1);
  CHECK(c.layers == 32);
  CHECK(c.block == BlockKind::kParallelOneNorm);
  CHECK(c.qkv_rows() == (71 + 2) * 64);
  const CheckpointInventory inv = inspect_checkpoint(dir);
  std::set<std::string> expected;
  for (const auto& t : expected_tensors(c, true)) expected.insert(t.name);
  CHECK(expected == inv.tensor_names);
  CHECK(static_cast<std::uint64_t>(parameter_count(c, true)) * 2 ==
        index_total_size(dir / "pytorch_model.bin.index.json"));
}

TEST_CASE("config variants", "[config]") {
  SECTION("multi_query without the new architecture forces one KV head") {
    json j = base_config();
    j["new_decoder_architecture"] = false;
    j["num_kv_heads"] = 8;
    CHECK(parse_config(j, "c.json").kv_heads == 1);
  }
  SECTION("multi_query false: one KV head per query head, sequential block") {
    json j = base_config();
    j["new_decoder_architecture"] = false;
    j["multi_query"] = false;
    j["parallel_attn"] = false;
    const auto c = parse_config(j, "c.json");
    CHECK(c.kv_heads == 8);
    CHECK(c.block == BlockKind::kSequential);
  }
  SECTION("num_ln_in_parallel_attn = 1 with the new architecture") {
    json j = base_config();
    j["num_ln_in_parallel_attn"] = 1;
    j["tie_word_embeddings"] = false;
    j["rope_parameters"] = {{"rope_theta", 500042.0}, {"rope_type", "default"}};
    const auto c = parse_config(j, "c.json");
    CHECK(c.block == BlockKind::kParallelOneNorm);
    CHECK(c.rope_theta == 500042.0f);
    CHECK_FALSE(c.tied_embeddings);
    bool has_lm_head = false;
    for (const auto& t : expected_tensors(c, false)) has_lm_head |= t.name == "lm_head.weight";
    CHECK(has_lm_head);
  }
  SECTION("RefinedWebModel keys") {
    const json j = json::parse(R"({"model_type": "RefinedWebModel", "vocab_size": 300,
      "n_embed": 48, "n_layer": 3, "n_head": 6, "multi_query": false, "alibi": true,
      "bias": true, "parallel_attn": false})");
    const auto c = parse_config(j, "c.json");
    CHECK(c.hidden == 48);
    CHECK(c.layers == 3);
    CHECK(c.kv_heads == 6);
    CHECK(c.alibi);
    CHECK(c.bias);
    CHECK(c.block == BlockKind::kSequential);
  }
}

TEST_CASE("config errors name the file and the field", "[config]") {
  auto fails = [](json j, const std::string& what) {
    CHECK_THROWS_WITH(parse_config(j, "dir/config.json"),
                      Catch::Contains("dir/config.json") && Catch::Contains(what));
  };
  json j = base_config();
  j.erase("hidden_size");
  fails(j, "missing field \"hidden_size\"");
  j = base_config();
  j["num_attention_heads"] = "eight";
  fails(j, "\"num_attention_heads\" must be a positive integer");
  j = base_config();
  j["num_attention_heads"] = 0;
  fails(j, "\"num_attention_heads\" must be a positive integer");
  j = base_config();
  j["hidden_size"] = 60;
  fails(j, "hidden_size 60 is not a multiple of num_attention_heads 8");
  j = base_config();
  j["num_kv_heads"] = 3;
  fails(j, "not a multiple of num_kv_heads 3");
  j = base_config();
  j["model_type"] = "llama";
  fails(j, "model_type \"llama\" is not a Falcon model");
  j = base_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  fails(j, "rope_scaling");
  j = base_config();
  j["activation"] = "relu";
  fails(j, "\"activation\" must be \"gelu\"");
  j = base_config();
  j["parallel_attn"] = false;
  fails(j, "new_decoder_architecture requires parallel_attn=true");
  j = base_config();
  j["alibi"] = "yes";
  fails(j, "\"alibi\" must be true or false");
  j = base_config();
  j["num_ln_in_parallel_attn"] = 3;
  fails(j, "num_ln_in_parallel_attn");
  CHECK_THROWS_WITH(parse_config(json::array(), "x.json"),
                    Catch::Contains("expected a JSON object"));
  CHECK_THROWS_WITH(load_config("/nonexistent/model"), Catch::Contains("does not exist"));
}
