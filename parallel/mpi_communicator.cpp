#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

namespace saker {
namespace {

int checked_count(std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::length_error("a collective of " + std::to_string(n) +
                            " elements exceeds MPI's int count");
  return static_cast<int>(n);
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  counts_.resize(static_cast<std::size_t>(size_));
  displs_.resize(static_cast<std::size_t>(size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce_sum(float* data, std::size_t count) {
  MPI_Allreduce(MPI_IN_PLACE, data, checked_count(count), MPI_FLOAT, MPI_SUM, comm_);
}

void MpiCommunicator::gather(std::span<const float> send, std::span<float> recv,
                             std::span<const std::size_t> counts, int root) {
  int displ = 0;
  for (int r = 0; r < size_; ++r) {
    counts_[r] = checked_count(counts[r]);
    displs_[r] = displ;
    displ += counts_[r];
  }
  MPI_Gatherv(send.data(), checked_count(send.size()), MPI_FLOAT, recv.data(), counts_.data(),
              displs_.data(), MPI_FLOAT, root, comm_);
}

// Waits for a nonblocking collective without keeping a core busy for long: a receiver waiting
// for rank 0's next plan may wait for minutes on an idle server, and Open MPI's blocking wait
// spins. A short spin keeps the latency of back-to-back plans; then the wait sleeps, longer and
// longer, up to 1 ms.
void MpiCommunicator::wait_gently(MPI_Request& req) {
  using clock = std::chrono::steady_clock;
  const auto spin_until = clock::now() + std::chrono::microseconds(500);
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (clock::now() < spin_until) continue;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(1000));
  }
}

void MpiCommunicator::broadcast(std::vector<std::byte>& data, int root) {
  unsigned long long n = data.size();
  MPI_Request req;
  MPI_Ibcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm_, &req);
  wait_gently(req);
  data.resize(n);
  MPI_Ibcast(data.data(), checked_count(n), MPI_BYTE, root, comm_, &req);
  wait_gently(req);
}

void MpiCommunicator::barrier() {
  MPI_Barrier(comm_);
}

}  // namespace saker
