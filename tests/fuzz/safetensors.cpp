// safetensors files (engine/model/checkpoint.cpp, inventory.cpp): the input is a whole
// model.safetensors. Anything malformed is a CheckpointError; a file that opens must describe
// tensors that lie inside it, each exactly as large as its shape and dtype say.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/model/checkpoint.h"
#include "engine/model/inventory.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::ScratchDir dir;
  const auto path = dir.write("model.safetensors", fuzz::as_text(data, size));
  try {
    const SafetensorsFile file(path);
    const auto bytes = file.file().bytes();
    std::size_t total = 0;
    for (const auto& [name, t] : file.tensors()) {
      if (t.data.data() < bytes.data() || t.data.data() + t.data.size() > bytes.data() + size)
        std::abort();
      std::uint64_t n = dtype_size(t.dtype);
      bool overflow = false;
      for (const std::int64_t d : t.shape)
        overflow |= __builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n);
      if (n != t.data.size() || (overflow && n != 0)) std::abort();
      total += t.data.size();
    }
    // Dense: the tensors tile the data area after the header exactly.
    if (total > size) std::abort();
  } catch (const CheckpointError&) {
  }
  try {
    const Checkpoint ckpt = Checkpoint::open(dir.path());
    (void)ckpt.names();
    (void)ckpt.total_bytes();
    (void)ckpt.weight_dtype();
    for (const auto& name : ckpt.names()) (void)ckpt.get(name).numel();
    ckpt.validate({{"transformer.ln_f.weight", {4}}, {"transformer.ln_f.bias", {4}}});
  } catch (const CheckpointError&) {
  }
  try {
    (void)inspect_checkpoint(dir.path());
  } catch (const CheckpointError&) {
  }
  return 0;
}
