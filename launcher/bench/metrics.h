// Serving metrics with vLLM's definitions (../shared/docs/interfaces.md): TTFT, TPOT, ITL, E2EL.
#pragma once

#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/request.h"

namespace saker::cli {

struct Distribution {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
  nlohmann::json to_json() const;
};

// Percentiles interpolated linearly between order statistics (numpy's default, as vLLM reports).
Distribution distribution(std::vector<double> values);

// The middle and both tails of a set of ratios (the paired floors of saker bench).
struct Spread {
  double p10 = 0, p50 = 0, p90 = 0;
  std::size_t count = 0;
  nlohmann::json to_json() const;
};
Spread spread(std::vector<double> values);

struct LatencyMetrics {
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
  double first_arrival = 0, last_finish = 0;
};

LatencyMetrics latency_metrics(const std::vector<BatchResult>& results);

// Moves every timestamp of `r` back by the total length of the pauses (start, length) that began
// before it: time the engine stood still for a measurement leaves the request's latencies.
void remove_pauses(BatchResult& r, const std::vector<std::pair<double, double>>& pauses);

}  // namespace saker::cli
