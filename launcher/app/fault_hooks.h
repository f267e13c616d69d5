// Test-only fault injection, driven by the environment so that multi-rank tests can make one
// rank fail the way real ranks fail. SAKER_TEST_FAULT="RANK:load" throws on that rank once its
// weights are loaded; "RANK:kill:N" sends that rank SIGKILL before its N-th step;
// "RANK:delay_load:S" makes loading take S seconds longer (health checks during a load);
// "RANK:hang:N" makes that rank stop before its N-th step, as a hung rank would;
// "RANK:step_delay:MS" sleeps MS milliseconds before every step (a drain that lasts, however
// fast the machine). Several faults are comma-separated ("0:delay_load:3,0:step_delay:1").
// Unset in production, where these calls cost one getenv at start-up.
#pragma once

#include <cstdint>

namespace saker::cli {

struct FaultHooks {
  int rank = -1;                // the rank to fail; -1: none
  bool at_load = false;         // throw after loading
  std::int64_t kill_step = -1;  // SIGKILL before this step
  double load_delay_s = 0;      // sleep after loading
  std::int64_t hang_step = -1;  // block forever before this step
  double step_delay_ms = 0;     // sleep before every step

  static FaultHooks from_env(int my_rank);
  void after_load() const;
  void before_step(std::uint64_t step) const;
};

}  // namespace saker::cli
