// config.json and generation_config.json (engine/model/registry.cpp, config_file.cpp,
// falcon/config.cpp), as `saker info` and every model load read them. The first byte picks the
// file the rest becomes: even, config.json (beside a fixed generation_config.json); odd,
// generation_config.json (beside the fixture mqa7-fp32's config.json). Anything wrong is a
// ConfigError naming the file.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/model/falcon/config.h"
#include "engine/model/registry.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;

namespace {

std::string fixture_config() {
  std::ifstream in(std::string(SAKER_FIXTURES_DIR) + "/mqa7-fp32/config.json");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const fuzz::ScratchDir dir;
  static const std::string config = fixture_config();
  const auto rest = fuzz::as_text(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    dir.write("config.json", rest);
    dir.write("generation_config.json", R"({"eos_token_id": [11, 7], "bos_token_id": 1})");
  } else {
    dir.write("config.json", config);
    dir.write("generation_config.json", rest);
  }
  try {
    const ModelShape shape = load_model_shape(dir.path());
    const FalconConfig c = load_config(dir.path());
    if (c.heads % c.kv_heads != 0 || c.hidden != c.heads * c.head_dim) std::abort();
    (void)shape;
  } catch (const ConfigError&) {
  }
  return 0;
}
