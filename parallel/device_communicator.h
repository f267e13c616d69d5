// A base for communicators whose collectives take device buffers (NCCL, host-staged MPI): rank,
// size and the host-side operations (plan broadcast, barrier) are those of the host (MPI)
// communicator they were made from.
#pragma once

#include "parallel/communicator.h"

namespace saker {

class DeviceCommunicator : public Communicator {
 public:
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  // Host bytes: through the host communicator.
  void broadcast(std::vector<std::byte>& data, int root) override { host_.broadcast(data, root); }
  void barrier() override { host_.barrier(); }

 protected:
  explicit DeviceCommunicator(Communicator& host) : host_(host) {}
  Communicator& host_;
};

}  // namespace saker
