#include "engine/model/inventory.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/model/checkpoint.h"

namespace saker {
namespace {

namespace fs = std::filesystem;

// Reads a {"metadata": {"total_size"}, "weight_map": {...}} index.
void read_index(const fs::path& path, CheckpointInventory& inv) {
  std::ifstream in(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path.string() + ": invalid JSON: " + e.what());
  }
  std::set<std::string> files;
  if (j.contains("weight_map") && j["weight_map"].is_object())
    for (const auto& [name, file] : j["weight_map"].items()) {
      inv.tensor_names.insert(name);
      if (file.is_string()) files.insert(file.get<std::string>());
    }
  if (j.contains("metadata") && j["metadata"].is_object()) {
    const auto& m = j["metadata"];
    if (m.contains("total_size") && m["total_size"].is_number_unsigned())
      inv.total_bytes = m["total_size"].get<std::uint64_t>();
  }
  inv.format += ", " + std::to_string(files.size()) + " files";
}

}  // namespace

CheckpointInventory inspect_checkpoint(const fs::path& dir) {
  CheckpointInventory inv;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    inv.format = "safetensors";
    inv.loadable = true;
    read_index(dir / "model.safetensors.index.json", inv);
  } else if (fs::exists(dir / "model.safetensors")) {
    const SafetensorsFile file(dir / "model.safetensors");
    inv.format = "safetensors, 1 file";
    inv.loadable = true;
    std::uint64_t bytes = 0;
    for (const auto& [name, t] : file.tensors()) {
      inv.tensor_names.insert(name);
      bytes += t.data.size();
    }
    inv.total_bytes = bytes;
  } else if (fs::exists(dir / "pytorch_model.bin.index.json")) {
    inv.format = "pytorch .bin (saker needs safetensors to load it)";
    read_index(dir / "pytorch_model.bin.index.json", inv);
  } else if (fs::exists(dir / "pytorch_model.bin")) {
    inv.format = "pytorch .bin, 1 file (saker needs safetensors to load it)";
  } else {
    inv.format = "none (config only)";
  }
  return inv;
}

}  // namespace saker
