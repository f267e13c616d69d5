// serving.properties (launcher/launch/properties.cpp), as `saker launch` reads it: the input is
// the file's text, also read as NAME=VALUE environment lines. A bad file is
// std::invalid_argument naming the line or key; settings that pass must make a sane mpirun
// command. option.model_id defaults to a fixture model directory so that validation goes on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "launcher/launch/properties.h"

using namespace saker::cli;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> env;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) env.push_back(line);
  try {
    Properties p = parse_properties(text, "fuzz/serving.properties");
    for (const auto& [k, v] : properties_from_env(env)) p[k] = v;
    p.try_emplace("option.model_id", std::string(SAKER_FIXTURES_DIR) + "/mqa7-fp32");
    const LaunchSettings s = validate_properties(p);
    // "every key checked for type and range": a launch of fewer than one rank is not sane.
    if (!s.tp_max && s.tensor_parallel < 1) std::abort();
    LaunchTarget t;
    t.saker = "/bin/saker";
    t.as_root = size % 2;
    t.hosts = size % 3 ? "" : "a,b";
    const std::vector<std::string> cmd = mpirun_command(s, t);
    if (cmd.empty()) std::abort();
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
