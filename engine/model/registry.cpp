#include "engine/model/registry.h"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/model/config_file.h"
#include "engine/model/falcon/config.h"
#include "engine/model/falcon/falcon.h"
#include "engine/model/falcon/info.h"
#include "engine/model/falcon/shard_plan.h"

namespace saker {
namespace {

using nlohmann::json;

std::unique_ptr<Model> make_falcon(const std::filesystem::path& dir, const Checkpoint& checkpoint,
                                   Backend& backend, const ModelOptions& options,
                                   Communicator* tp_comm) {
  const FalconConfig config = load_config(dir);
  if (!tp_comm || tp_comm->size() == 1)
    return std::make_unique<FalconModel>(config, checkpoint, backend, options);
  const ShardPlan plan(config, tp_comm->size());
  return std::make_unique<FalconModel>(config, checkpoint, backend, options,
                                       TensorParallel{&plan.rank(tp_comm->rank()), tp_comm});
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

const std::vector<ModelFamily>& model_families() {
  static const std::vector<ModelFamily> families = {
      {"falcon",
       {"falcon", "RefinedWeb", "RefinedWebModel"},
       {"FalconForCausalLM", "RWForCausalLM"},
       [](const std::filesystem::path& dir) { return model_shape(load_config(dir)); },
       make_falcon,
       falcon_report},
  };
  return families;
}

const ModelFamily& find_model_family(const std::filesystem::path& dir) {
  const json j = read_config_json(dir);
  const std::string source = (dir / "config.json").string();
  if (!j.is_object()) throw ConfigError(source + ": expected a JSON object");
  std::vector<std::string> types, classes;
  for (const ModelFamily& f : model_families()) {
    types.insert(types.end(), f.model_types.begin(), f.model_types.end());
    classes.insert(classes.end(), f.architectures.begin(), f.architectures.end());
  }
  if (const auto it = j.find("model_type"); it != j.end() && !it->is_null()) {
    const std::string type = it->is_string() ? it->get<std::string>() : it->dump();
    for (const ModelFamily& f : model_families())
      if (contains(f.model_types, type)) return f;
    throw ConfigError(source + ": field \"model_type\" is \"" + type +
                      "\", which saker does not support (supported: " + joined(types) + ")");
  }
  const auto it = j.find("architectures");
  if (it != j.end() && it->is_array())
    for (const json& a : *it)
      for (const ModelFamily& f : model_families())
        if (a.is_string() && contains(f.architectures, a.get<std::string>())) return f;
  throw ConfigError(source + ": no field \"model_type\" (supported: " + joined(types) +
                    "), and field \"architectures\" " +
                    (it == j.end() ? std::string("is missing") : "is " + it->dump()) +
                    " (supported: " + joined(classes) + ")");
}

ModelShape load_model_shape(const std::filesystem::path& dir) {
  return find_model_family(dir).load_shape(dir);
}

std::unique_ptr<Model> make_model(const std::filesystem::path& dir, const Checkpoint& checkpoint,
                                  Backend& backend, const ModelOptions& options,
                                  Communicator* tp_comm) {
  return find_model_family(dir).make(dir, checkpoint, backend, options, tp_comm);
}

ModelReport model_report(const std::string& model_dir, int tp) {
  return find_model_family(model_dir).report(model_dir, tp);
}

}  // namespace saker
