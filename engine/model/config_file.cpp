#include "engine/model/config_file.h"

#include <fstream>

#include "engine/model/model_shape.h"

namespace saker {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path.string() + ": invalid JSON: " + e.what());
  }
}

nlohmann::json read_config_json(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  if (!std::filesystem::exists(path)) {
    if (!std::filesystem::is_directory(model_dir))
      throw ConfigError("model directory " + model_dir.string() + " does not exist");
    throw ConfigError("no config.json in model directory " + model_dir.string());
  }
  return read_json_file(path);
}

}  // namespace saker
