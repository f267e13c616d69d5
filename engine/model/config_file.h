// Reading a model directory's JSON files (config.json, generation_config.json) with errors that
// name the file: what every family's config parsing and the registry share.
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

namespace saker {

// The file's JSON; ConfigError naming the file when it cannot be read or parsed.
nlohmann::json read_json_file(const std::filesystem::path& path);

// DIR/config.json; ConfigError naming a missing directory or file too.
nlohmann::json read_config_json(const std::filesystem::path& model_dir);

}  // namespace saker
