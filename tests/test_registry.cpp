// The model registry: which family a config.json names, the shape it reports without weights,
// the models it makes, and the errors for configs it cannot run.
#include <fstream>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/model/falcon/config.h"
#include "engine/model/falcon/falcon.h"
#include "engine/model/registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/golden.h"

using namespace saker;
using namespace saker::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kShared = SAKER_SHARED_DIR;

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// A model directory holding only `config`, under the temporary directory.
fs::path config_dir(const std::string& name, const json& config) {
  const fs::path dir = fs::temp_directory_path() / ("saker_registry_" + name);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump();
  return dir;
}

}  // namespace

TEST_CASE("every fixture is a Falcon, its shape read from config.json alone", "[registry]") {
  for (const auto& dir : fixture_dirs()) {
    INFO(dir.filename().string());
    const FalconConfig c = load_config(dir);
    const ModelShape s = load_model_shape(dir);
    CHECK(find_model_family(dir).name == "falcon");
    CHECK(s.family == "falcon");
    CHECK(s.model_type == c.model_type);
    CHECK(s.variant == c.variant());
    CHECK(s.layers == c.layers);
    CHECK(s.hidden == c.hidden);
    CHECK(s.heads == c.heads);
    CHECK(s.kv_heads == c.kv_heads);
    CHECK(s.head_dim == c.head_dim);
    CHECK(s.vocab_size == c.vocab_size);
    CHECK(s.max_positions == c.max_positions);
    CHECK(s.dtype == c.torch_dtype);
    CHECK(s.bos_token_id == c.bos_token_id);
    CHECK(s.eos_token_ids == c.eos_token_ids);
  }
}

TEST_CASE("a layer's matrix weights are those of the checkpoint's layer matrices", "[registry]") {
  for (const auto& dir : {kShared / "models/falcon-40b", kShared / "models/falcon-7b-instruct",
                          kFixtures / "rw-alibi-fp32", kFixtures / "falcon11b-fp32"}) {
    INFO(dir.string());
    const ModelShape s = load_model_shape(dir);
    std::int64_t matrices = 0;
    for (const ExpectedTensor& t : expected_tensors(load_config(dir), false))
      if (t.shape.size() == 2 && t.name.rfind("transformer.h.", 0) == 0)
        matrices += t.shape[0] * t.shape[1];
    CHECK(matrices == s.layers * s.matrix_weights_per_layer);
  }
  // falcon-7b: (71 + 2) * 64 query_key_value rows, dense, and the 18176-wide MLP.
  const ModelShape s7 = load_model_shape(kShared / "models/falcon-7b-instruct");
  CHECK(s7.matrix_weights_per_layer == 73 * 64 * 4544 + 4544 * 4544 + 2 * 4544 * 18176);
  CHECK(s7.dtype == "bfloat16");
}

TEST_CASE("a config without model_type is recognised by its architectures", "[registry]") {
  json j = read_json(kFixtures / "gqa8x2-fp32" / "config.json");
  j.erase("model_type");
  j["architectures"] = {"FalconForCausalLM"};
  CHECK(load_model_shape(config_dir("falcon_arch", j)).model_type == "falcon");
  json rw = read_json(kShared / "models/falcon-40b" / "config.json");
  rw.erase("model_type");
  CHECK(load_model_shape(config_dir("rw_arch", rw)).model_type == "RefinedWeb");
  CHECK(load_model_shape(config_dir("rw_arch", rw)).kv_heads == 8);
  json rw_old = read_json(kFixtures / "rw-alibi-fp32" / "config.json");
  rw_old.erase("model_type");
  CHECK(load_model_shape(config_dir("rw_old_arch", rw_old)).model_type == "RefinedWebModel");
}

TEST_CASE("an unsupported model names the file, the field and what is supported", "[registry]") {
  json j = read_json(kFixtures / "gqa8x2-fp32" / "config.json");
  j["model_type"] = "llama";
  const fs::path dir = config_dir("llama", j);
  CHECK_THROWS_AS(load_model_shape(dir), ConfigError);
  CHECK_THROWS_WITH(load_model_shape(dir),
                    Catch::Contains((dir / "config.json").string()) &&
                        Catch::Contains("field \"model_type\" is \"llama\"") &&
                        Catch::Contains("supported: falcon, RefinedWeb, RefinedWebModel"));
  CHECK_THROWS_WITH(model_report(dir.string(), 1), Catch::Contains("\"llama\""));
  j.erase("model_type");
  j["architectures"] = {"LlamaForCausalLM"};
  CHECK_THROWS_WITH(load_model_shape(config_dir("llama_arch", j)),
                    Catch::Contains("no field \"model_type\"") &&
                        Catch::Contains("\"architectures\" is [\"LlamaForCausalLM\"]") &&
                        Catch::Contains("FalconForCausalLM, RWForCausalLM"));
  CHECK_THROWS_WITH(load_model_shape("/nonexistent/model"), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(load_model_shape(fs::temp_directory_path()), Catch::Contains("no config.json"));
}

TEST_CASE("make_model gives the family's model behind the Model interface", "[registry]") {
  const fs::path dir = kFixtures / "gqa8x2-fp32";
  const Checkpoint ck = Checkpoint::open(dir);
  CpuBackend backend(1, 256, 1);
  SingleRankCommunicator single;
  const auto model = make_model(dir, ck, backend, ModelOptions{16, 4, 0}, &single);
  REQUIRE(dynamic_cast<FalconModel*>(model.get()) != nullptr);
  CHECK(model->shape().variant == load_model_shape(dir).variant);
  CHECK(model->options().max_context == load_model_shape(dir).max_positions);
  CHECK(model->local_kv_heads() == 2);
  CHECK(model->kv_shape().kv_heads == 2);
  CHECK(model->kv_shape().layers == model->shape().layers);
  CHECK(model->weight_bytes() == ck.total_bytes());
  // The same logits as the family's model made by hand.
  FalconModel direct(load_config(dir), ck, backend, ModelOptions{16, 4, 0});
  KvCache a(backend, model->kv_shape(), 4, 4), b(backend, direct.kv_shape(), 4, 4);
  const std::vector<std::int32_t> prompt{1, 2, 3}, table{0, 1, 2, 3};
  const SequenceStep step{prompt, 0, table, false};
  const auto x = model->forward({&step, 1}, a);
  const std::vector<float> got(x.begin(), x.end());
  const auto y = direct.forward({&step, 1}, b);
  CHECK(got == std::vector<float>(y.begin(), y.end()));
}
