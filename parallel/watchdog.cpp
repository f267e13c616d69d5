#include "parallel/watchdog.h"

#include <cstdio>

namespace saker {

std::int64_t CollectiveWatchdog::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch())
      .count();
}

CollectiveWatchdog::CollectiveWatchdog(double timeout_s,
                                       std::function<void(const std::string&)> on_expire,
                                       std::string flag, std::string blame)
    : timeout_s_(timeout_s),
      on_expire_(std::move(on_expire)),
      flag_(std::move(flag)),
      blame_(std::move(blame)) {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    // Checking a few times a second keeps the overshoot small without costing the steps anything
    // (arming is two atomic stores).
    while (!cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_; })) {
      const std::int64_t at = armed_at_ns_.load();
      if (at == 0) continue;
      const double busy = static_cast<double>(now_ns() - at) * 1e-9;
      const double limit = armed_timeout_s_.load();
      if (busy < limit) continue;
      const char* what = what_.load();
      char head[160];
      if (what)
        std::snprintf(head, sizeof head, "%s", what);
      else
        std::snprintf(head, sizeof head, "step %llu",
                      static_cast<unsigned long long>(step_.load()));
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "collective watchdog: %s has not completed after %.1f s (%s %g s); ", head,
                    busy, flag_.c_str(), limit);
      on_expire_(msg + blame_);
      armed_at_ns_ = 0;  // reported once
    }
  });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void CollectiveWatchdog::arm(std::uint64_t step) {
  arm(step, timeout_s_, nullptr);
}

void CollectiveWatchdog::arm(std::uint64_t step, double timeout_s, const char* what) {
  step_ = step;
  armed_timeout_s_ = timeout_s;
  what_ = what;
  armed_at_ns_ = now_ns();
}

void CollectiveWatchdog::disarm() {
  armed_at_ns_ = 0;
}

double CollectiveWatchdog::busy_seconds() const {
  const std::int64_t at = armed_at_ns_.load();
  return at == 0 ? 0.0 : static_cast<double>(now_ns() - at) * 1e-9;
}

}  // namespace saker
