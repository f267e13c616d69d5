#include "launcher/bench_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace saker::cli {

nlohmann::json Distribution::to_json() const {
  return {{"mean", mean}, {"p50", p50}, {"p90", p90}, {"p99", p99}};
}

Distribution distribution(std::vector<double> v) {
  Distribution d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  d.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  d.p50 = pct(50);
  d.p90 = pct(90);
  d.p99 = pct(99);
  return d;
}

LatencyMetrics latency_metrics(const std::vector<BatchResult>& results) {
  std::vector<double> ttft, tpot, itl, e2el;
  LatencyMetrics m;
  m.first_arrival = std::numeric_limits<double>::infinity();
  for (const BatchResult& r : results) {
    m.first_arrival = std::min(m.first_arrival, r.arrival);
    m.last_finish = std::max(m.last_finish, r.finished);
    ttft.push_back((r.first_token - r.arrival) * 1e3);
    e2el.push_back((r.finished - r.arrival) * 1e3);
    const auto n = r.token_times.size();
    if (n > 1) tpot.push_back((r.finished - r.first_token) * 1e3 / static_cast<double>(n - 1));
    for (std::size_t i = 1; i < n; ++i)
      itl.push_back((r.token_times[i] - r.token_times[i - 1]) * 1e3);
  }
  m.ttft_ms = distribution(std::move(ttft));
  m.tpot_ms = distribution(std::move(tpot));
  m.itl_ms = distribution(std::move(itl));
  m.e2el_ms = distribution(std::move(e2el));
  return m;
}

}  // namespace saker::cli
