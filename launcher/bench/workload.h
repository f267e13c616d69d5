// The requests `saker bench` sends: lengths from a named workload, random prompt ids, and arrival
// times from a Poisson process (or all at once). Generation ignores EOS, so lengths are exact.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "engine/constraints/constraint.h"

namespace saker::cli {

struct BenchRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t output = 0;
  double arrival = 0;     // seconds after the start
  Constraint constraint;  // --guided-json: every request's output shape
};

struct WorkloadSpec {
  std::string name;  // as given
  enum Kind { kMixed, kFixed, kRandom, kSharedPrefix, kCopy } kind = kMixed;
  std::int64_t a = 0, b = 0;              // mixed: short, long; fixed and random: input, output;
                                          // shared-prefix: prefix length, output; copy: passage,
                                          // output
  std::int64_t prefixes = 0, suffix = 0;  // shared-prefix: how many prefixes, each request's own
};

// mixed (the seed's 20 in / 500 out and 500 in / 20 out, half each, scaled to fit `context`),
// mixed:SHORT:LONG, fixed:IN:OUT, random (lengths uniform in [L/2, 3L/2] around 128:128, scaled)
// or random:IN:OUT, or shared-prefix[:PREFIXES:PREFIX_LEN:SUFFIX_LEN:OUT] (default 8 system prompts
// of 1024 tokens, each request one of them plus its own 64-token question and 16 new tokens,
// scaled to fit `context`): what prefix caching serves. copy[:PASSAGE:OUT] (default 64:128): a
// passage of random ids given twice and then begun a third time, so that continuing it means
// copying (what "repeat / quote / edit this text" requests look like to prompt lookup).
// std::invalid_argument naming --workload for anything else or lengths that do not fit `context`.
WorkloadSpec parse_workload(const std::string& text, std::int64_t context);

// rate: requests per second, or infinity for all at time 0.
std::vector<BenchRequest> make_requests(const WorkloadSpec& w, std::int64_t n, double rate,
                                        std::int64_t vocab, std::uint64_t seed);

}  // namespace saker::cli
