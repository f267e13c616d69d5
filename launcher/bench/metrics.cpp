#include "launcher/bench/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace saker::cli {

nlohmann::json Distribution::to_json() const {
  return {{"mean", mean}, {"p50", p50}, {"p90", p90}, {"p99", p99}};
}

namespace {

// Percentile p of sorted, non-empty values, interpolated linearly (numpy's default).
double percentile(const std::vector<double>& v, double p) {
  const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

Distribution distribution(std::vector<double> v) {
  Distribution d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  d.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  d.p50 = percentile(v, 50);
  d.p90 = percentile(v, 90);
  d.p99 = percentile(v, 99);
  return d;
}

nlohmann::json Spread::to_json() const {
  return {{"p10", p10}, {"p50", p50}, {"p90", p90}, {"count", count}};
}

Spread spread(std::vector<double> v) {
  Spread s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.p10 = percentile(v, 10);
  s.p50 = percentile(v, 50);
  s.p90 = percentile(v, 90);
  return s;
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

void remove_pauses(BatchResult& r, const std::vector<std::pair<double, double>>& pauses) {
  auto shift = [&](double& t) {
    double paused = 0;
    for (const auto& [start, length] : pauses)
      if (start < t) paused += length;
    t -= paused;
  };
  shift(r.arrival);
  if (r.scheduled >= 0) shift(r.scheduled);
  shift(r.first_token);
  shift(r.finished);
  for (double& t : r.token_times) shift(t);
}

}  // namespace saker::cli
