// Collectives among the ranks of one tensor-parallel group. parallel/ knows bytes, ranks and
// collectives only: the model calls these after its local compute.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace saker {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data[i] = sum over ranks of data[i], on every rank.
  virtual void all_reduce_sum(float* data, std::size_t count) = 0;
  // Rank `root` receives every rank's `send` concatenated in rank order into `recv`
  // (counts[r] floats from rank r); other ranks may pass an empty recv.
  virtual void gather(std::span<const float> send, std::span<float> recv,
                      std::span<const std::size_t> counts, int root) = 0;
  // Every rank receives root's bytes; `data` is resized on receivers.
  virtual void broadcast(std::vector<std::byte>& data, int root) = 0;
  virtual void barrier() = 0;
};

// The communicator of a world of one rank: every collective is the identity.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, std::size_t) override {}
  void gather(std::span<const float> send, std::span<float> recv, std::span<const std::size_t>,
              int) override {
    std::copy(send.begin(), send.end(), recv.begin());
  }
  void broadcast(std::vector<std::byte>&, int) override {}
  void barrier() override {}
};

}  // namespace saker
