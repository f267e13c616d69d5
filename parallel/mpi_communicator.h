// Collectives over an MPI communicator (the CPU backend's transport).
#pragma once

#include <mpi.h>

#include "parallel/communicator.h"

namespace saker {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);  // takes a duplicate; freed on destruction
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, std::size_t count) override;
  void gather(std::span<const float> send, std::span<float> recv,
              std::span<const std::size_t> counts, int root) override;
  void broadcast(std::vector<std::byte>& data, int root) override;
  void barrier() override;

 private:
  static void wait_gently(MPI_Request& req);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> counts_, displs_;  // reused by gather
};

}  // namespace saker
