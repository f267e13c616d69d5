#include "launcher/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <stdexcept>

namespace saker::cli {

WorkloadSpec parse_workload(const std::string& text, std::int64_t context) {
  WorkloadSpec w;
  w.name = text;
  long long a = 0, b = 0;
  char tail = 0;
  auto two = [&](const char* fmt) { return std::sscanf(text.c_str(), fmt, &a, &b, &tail) == 2; };
  if (text == "mixed" || text == "random") {
    w.kind = text == "mixed" ? WorkloadSpec::kMixed : WorkloadSpec::kRandom;
    // The seed article's lengths, shrunk in proportion when the model's context is shorter.
    const double base = text == "mixed" ? 520.0 : 2 * 128 * 1.5;
    const double scale = std::min(1.0, static_cast<double>(context) / base);
    a = std::max<long long>(1, static_cast<long long>((text == "mixed" ? 20 : 128) * scale));
    b = std::max<long long>(1, static_cast<long long>((text == "mixed" ? 500 : 128) * scale));
  } else if (two("mixed:%lld:%lld%c")) {
    w.kind = WorkloadSpec::kMixed;
  } else if (two("fixed:%lld:%lld%c")) {
    w.kind = WorkloadSpec::kFixed;
  } else if (two("random:%lld:%lld%c")) {
    w.kind = WorkloadSpec::kRandom;
  } else {
    throw std::invalid_argument(
        "--workload must be mixed, mixed:SHORT:LONG, fixed:IN:OUT, random or "
        "random:IN:OUT, got '" +
        text + "'");
  }
  if (a <= 0 || b <= 0) throw std::invalid_argument("--workload lengths must be positive in '" + text + "'");
  w.a = a;
  w.b = b;
  const std::int64_t longest = w.kind == WorkloadSpec::kRandom ? (3 * a / 2) + (3 * b / 2) : a + b;
  if (longest > context)
    throw std::invalid_argument("--workload " + text + " needs up to " + std::to_string(longest) +
                     " positions; the model's context is " + std::to_string(context));
  return w;
}

std::vector<BenchRequest> make_requests(const WorkloadSpec& w, std::int64_t n, double rate,
                                        std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(vocab - 1));
  auto around = [&](std::int64_t len) {
    return std::uniform_int_distribution<std::int64_t>(std::max<std::int64_t>(1, len / 2),
                                                       3 * len / 2)(rng);
  };
  std::vector<BenchRequest> out(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::int64_t in = w.a, o = w.b;
    if (w.kind == WorkloadSpec::kMixed && i % 2 == 1) std::swap(in, o);
    if (w.kind == WorkloadSpec::kRandom) {
      in = around(w.a);
      o = around(w.b);
    }
    out[i].prompt.resize(static_cast<std::size_t>(in));
    for (auto& t : out[i].prompt) t = tok(rng);
    out[i].output = o;
  }
  // Mixed: the two kinds in a random order, so no batch is all of one kind by construction.
  if (w.kind == WorkloadSpec::kMixed) std::shuffle(out.begin(), out.end(), rng);
  double t = 0;
  std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
  for (auto& r : out) {
    if (!std::isinf(rate)) t += gap(rng);
    r.arrival = t;
  }
  return out;
}

}  // namespace saker::cli
