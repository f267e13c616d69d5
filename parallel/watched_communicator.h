// A communicator whose every collective is watched with a short timeout. Within a step every
// rank does the same work, so a collective waits only for the slowest rank's lag: one that waits
// for long means a rank or the link to it is gone. The step's own timeout (--collective-timeout)
// must allow the longest step, which on a CPU can be minutes; this one (--peer-timeout) ends a
// job that lost a peer in seconds.
#pragma once

#include "parallel/communicator.h"
#include "parallel/watchdog.h"

namespace saker {

class WatchedCommunicator final : public Communicator {
 public:
  WatchedCommunicator(Communicator& inner, CollectiveWatchdog& watch, double timeout_s)
      : inner_(inner), watch_(watch), timeout_s_(timeout_s) {}
  // Watching starts here: before it (loading, where one rank's slow disk may keep the others
  // waiting for long) the collectives run unwatched.
  void enable() { enabled_ = true; }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void all_reduce_sum(float* data, std::size_t count) override {
    const WatchdogArm g = watch("an all-reduce among the ranks");
    inner_.all_reduce_sum(data, count);
  }
  void gather(std::span<const float> send, std::span<float> recv,
              std::span<const std::size_t> counts, int root) override {
    const WatchdogArm g = watch("a gather among the ranks");
    inner_.gather(send, recv, counts, root);
  }
  void broadcast(std::vector<std::byte>& data, int root) override {
    const WatchdogArm g = watch("a broadcast among the ranks");
    inner_.broadcast(data, root);
  }
  void barrier() override {
    const WatchdogArm g = watch("a barrier among the ranks");
    inner_.barrier();
  }

 private:
  WatchdogArm watch(const char* what) {
    return enabled_ ? WatchdogArm(&watch_, ++calls_, timeout_s_, what) : WatchdogArm(nullptr, 0);
  }

  Communicator& inner_;
  CollectiveWatchdog& watch_;
  double timeout_s_;
  std::uint64_t calls_ = 0;
  bool enabled_ = false;
};

}  // namespace saker
