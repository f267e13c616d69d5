// Collectives over NCCL for the CUDA backend: device buffers, one CUDA stream. The NCCL id is
// made by rank 0 and sent to the others over the bootstrap (MPI) communicator, which also carries
// the host-side operations (plan broadcast, barrier).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include "parallel/device_communicator.h"

namespace saker {

class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Collective over every rank of `bootstrap`; `device` is this rank's GPU.
  NcclCommunicator(Communicator& bootstrap, int device, cudaStream_t stream);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // Device pointers. Each call is enqueued on the stream and waited for, so it has the
  // interface's blocking meaning; the CUDA backend will run them inside its graphs instead.
  void all_reduce_sum(float* data, std::size_t count) override;
  void gather(std::span<const float> send, std::span<float> recv,
              std::span<const std::size_t> counts, int root) override;

 private:
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace saker
