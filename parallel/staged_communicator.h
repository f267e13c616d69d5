// Collectives on device buffers through the MPI communicator, staged in pinned host memory: for
// ranks that share one GPU (`--comm mpi`), where NCCL refuses to run two ranks on the same
// device. Each collective copies the rank's part to the host on the CUDA backend's stream, waits
// for it, runs the MPI collective, and copies the result back on the stream (later kernels on the
// stream see it; the host need not wait). Slower than NCCL by two PCIe copies and a host
// round-trip per collective: a way to exercise the sharded CUDA path on one card, not to serve.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "parallel/device_communicator.h"

namespace saker {

class HostStagedCommunicator final : public DeviceCommunicator {
 public:
  HostStagedCommunicator(Communicator& host, cudaStream_t stream);
  ~HostStagedCommunicator() override;
  HostStagedCommunicator(const HostStagedCommunicator&) = delete;
  HostStagedCommunicator& operator=(const HostStagedCommunicator&) = delete;

  // Device pointers, staged through the host.
  void all_reduce_sum(float* data, std::size_t count) override;
  void gather(std::span<const float> send, std::span<float> recv,
              std::span<const std::size_t> counts, int root) override;

 private:
  // Pinned host floats, at least `count` of them (grown as needed; each call waits for the
  // stream before it writes into them, so no copy still reads the old buffer).
  float* staging(std::size_t count, int which);

  cudaStream_t stream_;
  struct PinnedFree {
    void operator()(float* p) const { cudaFreeHost(p); }
  };
  std::unique_ptr<float, PinnedFree> buffers_[2];
  std::size_t capacity_[2] = {0, 0};
};

}  // namespace saker
