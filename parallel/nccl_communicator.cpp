#include "parallel/nccl_communicator.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace saker {
namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}

void check(cudaError_t r, const char* what) {
  if (r != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(r));
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int device, cudaStream_t stream)
    : DeviceCommunicator(bootstrap), stream_(stream) {
  check(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id{};
  if (host_.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::vector<std::byte> wire(sizeof id);
  std::memcpy(wire.data(), &id, sizeof id);
  host_.broadcast(wire, 0);
  std::memcpy(&id, wire.data(), sizeof id);
  check(ncclCommInitRank(&comm_, host_.size(), id, host_.rank()), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclCommunicator::all_reduce_sum(float* data, std::size_t count) {
  check(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm_, stream_), "all-reduce");
  check(cudaStreamSynchronize(stream_), "all-reduce");
}

void NcclCommunicator::gather(std::span<const float> send, std::span<float> recv,
                              std::span<const std::size_t> counts, int root) {
  // NCCL has no gather: point-to-point sends to the root, grouped into one launch.
  check(ncclGroupStart(), "group start");
  if (rank() == root) {
    std::size_t at = 0;
    for (int r = 0; r < size(); ++r) {
      if (r == root)
        check(cudaMemcpyAsync(recv.data() + at, send.data(), send.size_bytes(),
                              cudaMemcpyDeviceToDevice, stream_),
              "gather copy");
      else
        check(ncclRecv(recv.data() + at, counts[r], ncclFloat, r, comm_, stream_), "gather recv");
      at += counts[r];
    }
  } else {
    check(ncclSend(send.data(), send.size(), ncclFloat, root, comm_, stream_), "gather send");
  }
  check(ncclGroupEnd(), "group end");
  check(cudaStreamSynchronize(stream_), "gather");
}

}  // namespace saker
