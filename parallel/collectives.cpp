#include "parallel/collectives.h"

#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace saker {

std::int64_t min_over_ranks(Communicator& comm, std::int64_t v) {
  if (v < 0 || v >= (std::int64_t{1} << 24))
    throw std::out_of_range("min_over_ranks takes counts in [0, 2^24), got " + std::to_string(v));
  if (comm.size() == 1) return v;
  const float mine = static_cast<float>(v);
  std::vector<float> all(static_cast<std::size_t>(comm.rank() == 0 ? comm.size() : 0));
  const std::vector<std::size_t> counts(static_cast<std::size_t>(comm.size()), 1);
  comm.gather({&mine, 1}, all, counts, 0);
  std::vector<std::byte> wire(sizeof(std::int64_t));
  std::int64_t least = 0;
  if (comm.rank() == 0) {
    least = static_cast<std::int64_t>(*std::min_element(all.begin(), all.end()));
    std::memcpy(wire.data(), &least, sizeof least);
  }
  comm.broadcast(wire, 0);
  std::memcpy(&least, wire.data(), sizeof least);
  return least;
}

std::vector<std::string> rank_hosts(Communicator& comm) {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "unknown");
  std::vector<std::string> hosts(static_cast<std::size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) {
    std::vector<std::byte> wire;
    if (r == comm.rank()) {
      const std::string mine(name);
      wire.resize(mine.size());
      std::memcpy(wire.data(), mine.data(), mine.size());
    }
    comm.broadcast(wire, r);
    hosts[static_cast<std::size_t>(r)].assign(reinterpret_cast<const char*>(wire.data()),
                                              wire.size());
  }
  return hosts;
}

}  // namespace saker
