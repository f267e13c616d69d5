#include "parallel/staged_communicator.h"

#include <numeric>
#include <stdexcept>
#include <string>

namespace saker {
namespace {

void check(cudaError_t r, const char* what) {
  if (r != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(r));
}

}  // namespace

HostStagedCommunicator::HostStagedCommunicator(Communicator& host, cudaStream_t stream)
    : DeviceCommunicator(host), stream_(stream) {}

HostStagedCommunicator::~HostStagedCommunicator() {
  cudaStreamSynchronize(stream_);  // no copy may still use the staging buffers
}

float* HostStagedCommunicator::staging(std::size_t count, int which) {
  if (capacity_[which] < count) {
    check(cudaStreamSynchronize(stream_), "staging");
    float* p = nullptr;
    check(cudaMallocHost(reinterpret_cast<void**>(&p), count * sizeof(float)), "staging buffer");
    buffers_[which].reset(p);
    capacity_[which] = count;
  }
  return buffers_[which].get();
}

void HostStagedCommunicator::all_reduce_sum(float* data, std::size_t count) {
  if (count == 0) return;
  float* h = staging(count, 0);
  check(cudaMemcpyAsync(h, data, count * sizeof(float), cudaMemcpyDeviceToHost, stream_),
        "all-reduce download");
  check(cudaStreamSynchronize(stream_), "all-reduce download");
  host_.all_reduce_sum(h, count);
  check(cudaMemcpyAsync(data, h, count * sizeof(float), cudaMemcpyHostToDevice, stream_),
        "all-reduce upload");
}

void HostStagedCommunicator::gather(std::span<const float> send, std::span<float> recv,
                                    std::span<const std::size_t> counts, int root) {
  float* hs = staging(send.size(), 0);
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  float* hr = rank() == root ? staging(total, 1) : nullptr;
  if (!send.empty())
    check(cudaMemcpyAsync(hs, send.data(), send.size_bytes(), cudaMemcpyDeviceToHost, stream_),
          "gather download");
  check(cudaStreamSynchronize(stream_), "gather download");
  host_.gather({hs, send.size()}, rank() == root ? std::span<float>(hr, total) : std::span<float>(),
               counts, root);
  if (rank() == root && total > 0)
    check(cudaMemcpyAsync(recv.data(), hr, total * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "gather upload");
}

}  // namespace saker
