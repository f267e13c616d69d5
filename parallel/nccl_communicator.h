// Collectives over NCCL for the CUDA backend: device buffers, one CUDA stream. The NCCL id is
// made by rank 0 and sent to the others over the bootstrap (MPI) communicator, which also carries
// the host-side operations (plan broadcast, barrier).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include "parallel/communicator.h"

namespace saker {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over every rank of `bootstrap`; `device` is this rank's GPU.
  NcclCommunicator(Communicator& bootstrap, int device, cudaStream_t stream);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }
  // Device pointers. Each call is enqueued on the stream and waited for, so it has the
  // interface's blocking meaning; the CUDA backend will run them inside its graphs instead.
  void all_reduce_sum(float* data, std::size_t count) override;
  void gather(std::span<const float> send, std::span<float> recv,
              std::span<const std::size_t> counts, int root) override;
  // Host bytes: through the bootstrap communicator.
  void broadcast(std::vector<std::byte>& data, int root) override;
  void barrier() override;

 private:
  Communicator& bootstrap_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace saker
