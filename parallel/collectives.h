// Small agreements among ranks built on the Communicator's collectives.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace saker {

// The smallest of every rank's v, known to every rank. For counts below 2^24 (KV blocks): they
// travel as floats, exactly.
std::int64_t min_over_ranks(Communicator& comm, std::int64_t v);

// Every rank's host name (gethostname), in rank order, known to every rank.
std::vector<std::string> rank_hosts(Communicator& comm);

}  // namespace saker
