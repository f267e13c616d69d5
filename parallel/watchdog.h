// A watchdog over the collectives of each step. A step whose collectives have not completed
// within the timeout (a rank that hangs, a network that stalls) calls on_expire, which ends the
// job with a message, instead of leaving every rank blocked forever. Waiting for the next plan is
// not a step: an idle server may wait for hours.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace saker {

class CollectiveWatchdog {
 public:
  // on_expire runs on the watchdog's thread with a message naming the wait and the time. `flag`
  // names the setting of timeout_s, `blame` says who is likely at fault.
  CollectiveWatchdog(double timeout_s, std::function<void(const std::string&)> on_expire,
                     std::string flag = "--collective-timeout",
                     std::string blame = "a rank is hung or gone");
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  void arm(std::uint64_t step);
  // Arms for one wait with its own timeout, named by `what` (a string literal: "the heartbeat").
  void arm(std::uint64_t step, double timeout_s, const char* what);
  void disarm();
  // Seconds the current step has been running (0 when none is): health checks use it.
  double busy_seconds() const;

 private:
  using clock = std::chrono::steady_clock;
  static std::int64_t now_ns();
  double timeout_s_;
  std::function<void(const std::string&)> on_expire_;
  std::string flag_, blame_;
  std::atomic<std::int64_t> armed_at_ns_{0};  // 0: disarmed
  std::atomic<std::uint64_t> step_{0};
  std::atomic<double> armed_timeout_s_{0};
  std::atomic<const char*> what_{nullptr};  // null: "step N"
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Arms a watchdog (if any) for one wait, and disarms it however the wait ends.
class WatchdogArm {
 public:
  WatchdogArm(CollectiveWatchdog* w, std::uint64_t step) : w_(w) {
    if (w_) w_->arm(step);
  }
  WatchdogArm(CollectiveWatchdog* w, std::uint64_t step, double timeout_s, const char* what)
      : w_(w) {
    if (w_) w_->arm(step, timeout_s, what);
  }
  ~WatchdogArm() {
    if (w_) w_->disarm();
  }
  WatchdogArm(const WatchdogArm&) = delete;
  WatchdogArm& operator=(const WatchdogArm&) = delete;

 private:
  CollectiveWatchdog* w_;
};

}  // namespace saker
