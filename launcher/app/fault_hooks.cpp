#include "launcher/app/fault_hooks.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

namespace saker::cli {

FaultHooks FaultHooks::from_env(int my_rank) {
  FaultHooks h;
  const char* spec = std::getenv("SAKER_TEST_FAULT");
  if (!spec) return h;
  // Several faults, comma-separated, each "RANK:what" (a slow load and slow steps, say).
  const std::string all = spec;
  for (std::size_t begin = 0; begin <= all.size();) {
    std::size_t end = all.find(',', begin);
    if (end == std::string::npos) end = all.size();
    const std::string s = all.substr(begin, end - begin);
    begin = end + 1;
    const auto colon = s.find(':');
    if (colon == std::string::npos)
      throw std::invalid_argument("SAKER_TEST_FAULT: '" + s + "' is not RANK:fault");
    if (std::stoi(s.substr(0, colon)) != my_rank) continue;
    h.rank = my_rank;
    const std::string what = s.substr(colon + 1);
    if (what == "load") {
      h.at_load = true;
    } else if (what.rfind("delay_load:", 0) == 0) {
      h.load_delay_s = std::stod(what.substr(11));
    } else if (what.rfind("hang:", 0) == 0) {
      h.hang_step = std::stoll(what.substr(5));
    } else if (what.rfind("step_delay:", 0) == 0) {
      h.step_delay_ms = std::stod(what.substr(11));
    } else if (what.rfind("kill:", 0) == 0) {
      h.kill_step = std::stoll(what.substr(5));
    } else {
      throw std::invalid_argument("SAKER_TEST_FAULT: unknown fault '" + what + "'");
    }
  }
  return h;
}

void FaultHooks::after_load() const {
  if (load_delay_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(load_delay_s));
  if (at_load) throw std::runtime_error("injected fault after loading (SAKER_TEST_FAULT)");
}

void FaultHooks::before_step(std::uint64_t step) const {
  if (step_delay_ms > 0)
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_delay_ms));
  if (kill_step >= 0 && static_cast<std::int64_t>(step) == kill_step) std::raise(SIGKILL);
  if (hang_step >= 0 && static_cast<std::int64_t>(step) == hang_step)
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace saker::cli
