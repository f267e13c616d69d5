// What a model directory's checkpoint holds, read from its index or headers without touching the
// weights, so `saker info` works on configs and indexes alone (as in ../shared/models).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

namespace saker {

struct CheckpointInventory {
  std::string format;                        // e.g. "safetensors, 3 files"; "none"
  bool loadable = false;                     // safetensors that saker can open
  std::set<std::string> tensor_names;        // empty when unknown
  std::optional<std::uint64_t> total_bytes;  // from the headers or the index metadata
};

CheckpointInventory inspect_checkpoint(const std::filesystem::path& model_dir);

}  // namespace saker
