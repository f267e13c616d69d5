// model.safetensors.index.json (engine/model/checkpoint.cpp, inventory.cpp): the input is the
// index of a directory that holds two small valid shards, so that a well-formed index reaches
// the cross-checks between the index and the shards' headers. Anything wrong is a
// CheckpointError, never a crash or a file read outside the directory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/checkpoint.h"
#include "engine/model/inventory.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;

namespace {

// A safetensors file of F32 tensors of 2 elements each, named `names`.
std::string shard(std::initializer_list<const char*> names) {
  std::string header = "{";
  std::size_t at = 0;
  for (const char* n : names) {
    header += std::string(at ? "," : "") + "\"" + n + "\":{\"dtype\":\"F32\",\"shape\":[2]," +
              "\"data_offsets\":[" + std::to_string(at) + "," + std::to_string(at + 8) + "]}";
    at += 8;
  }
  header += "}";
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + std::string(at, '\0');
}

const fuzz::ScratchDir& dir() {
  static const fuzz::ScratchDir d;
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool shards = [] {
    dir().write("model-00001-of-00002.safetensors", shard({"a", "b"}));
    dir().write("model-00002-of-00002.safetensors", shard({"c"}));
    return true;
  }();
  (void)shards;
  dir().write("model.safetensors.index.json", fuzz::as_text(data, size));
  try {
    const Checkpoint ckpt = Checkpoint::open(dir().path());
    for (const auto& name : ckpt.names())
      if (ckpt.get(name).file.parent_path() != dir().path()) std::abort();
    (void)ckpt.total_bytes();
  } catch (const CheckpointError&) {
  }
  try {
    (void)inspect_checkpoint(dir().path());
  } catch (const CheckpointError&) {
  }
  return 0;
}
