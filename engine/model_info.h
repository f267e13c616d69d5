// What `saker info` reports about a model directory, from its config and checkpoint index
// (weights optional): the structure the engine would run, parameter and byte counts, and how
// tensor parallelism over tp ranks would split it. Each family writes its own report
// (engine/model/registry.h picks the family); this header is all a frontend needs of it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace saker {

struct ModelReport {
  nlohmann::json json;  // `saker info --json`
  std::string text;     // `saker info`, lines ending in '\n'
};

// Throws ConfigError / CheckpointError naming the file (an unknown model_type among them) and
// ConfigError when the model cannot be split over tp ranks.
ModelReport model_report(const std::string& model_dir, int tp);

}  // namespace saker
