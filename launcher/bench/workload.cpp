#include "launcher/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <stdexcept>

namespace saker::cli {

namespace {

// shared-prefix[:PREFIXES:PREFIX_LEN:SUFFIX_LEN:OUT]
WorkloadSpec shared_prefix(const std::string& text, std::int64_t context) {
  WorkloadSpec w;
  w.name = text;
  w.kind = WorkloadSpec::kSharedPrefix;
  long long p = 8, pl = 1024, sl = 64, out = 16;
  char tail = 0;
  if (text == "shared-prefix") {
    // Shrunk in proportion when the model's context is shorter than 1024 + 64 + 16.
    const double scale = std::min(1.0, static_cast<double>(context) / double(pl + sl + out));
    pl = std::max<long long>(1, static_cast<long long>(double(pl) * scale));
    sl = std::max<long long>(1, static_cast<long long>(double(sl) * scale));
    out = std::max<long long>(1, static_cast<long long>(double(out) * scale));
  } else if (std::sscanf(text.c_str(), "shared-prefix:%lld:%lld:%lld:%lld%c", &p, &pl, &sl, &out,
                         &tail) != 4) {
    throw std::invalid_argument(
        "--workload shared-prefix takes PREFIXES:PREFIX_LEN:SUFFIX_LEN:OUT, got '" + text + "'");
  }
  if (p <= 0 || pl <= 0 || sl <= 0 || out <= 0)
    throw std::invalid_argument("--workload lengths must be positive in '" + text + "'");
  if (pl + sl + out > context)
    throw std::invalid_argument("--workload " + text + " needs up to " +
                                std::to_string(pl + sl + out) +
                                " positions; the model's context is " + std::to_string(context));
  w.prefixes = p;
  w.a = pl;
  w.suffix = sl;
  w.b = out;
  return w;
}

}  // namespace

WorkloadSpec parse_workload(const std::string& text, std::int64_t context) {
  if (text.starts_with("shared-prefix")) return shared_prefix(text, context);
  WorkloadSpec w;
  w.name = text;
  long long a = 0, b = 0;
  char tail = 0;
  auto two = [&](const char* fmt) { return std::sscanf(text.c_str(), fmt, &a, &b, &tail) == 2; };
  if (text == "copy") {
    w.kind = WorkloadSpec::kCopy;
    a = 64;
    b = 128;
  } else if (text == "mixed" || text == "random") {
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
  } else if (two("copy:%lld:%lld%c")) {
    w.kind = WorkloadSpec::kCopy;
  } else {
    throw std::invalid_argument(
        "--workload must be mixed, mixed:SHORT:LONG, fixed:IN:OUT, random, random:IN:OUT, "
        "shared-prefix[:PREFIXES:PREFIX_LEN:SUFFIX_LEN:OUT] or copy[:PASSAGE:OUT], got '" +
        text + "'");
  }
  if (a <= 0 || b <= 0)
    throw std::invalid_argument("--workload lengths must be positive in '" + text + "'");
  w.a = a;
  w.b = b;
  const std::int64_t longest = w.kind == WorkloadSpec::kRandom ? (3 * a / 2) + (3 * b / 2)
                               : w.kind == WorkloadSpec::kCopy ? 2 * a + a / 2 + b
                                                               : a + b;
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
  // shared-prefix: the system prompts, each request one of them (at random) plus its own suffix.
  std::vector<std::vector<std::int32_t>> prefixes(static_cast<std::size_t>(w.prefixes));
  for (auto& p : prefixes) {
    p.resize(static_cast<std::size_t>(w.a));
    for (auto& t : p) t = tok(rng);
  }
  std::uniform_int_distribution<std::size_t> which(0, prefixes.empty() ? 0 : prefixes.size() - 1);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (w.kind == WorkloadSpec::kSharedPrefix) {
      out[i].prompt = prefixes[which(rng)];
      for (std::int64_t k = 0; k < w.suffix; ++k) out[i].prompt.push_back(tok(rng));
      out[i].output = w.b;
      continue;
    }
    if (w.kind == WorkloadSpec::kCopy) {
      std::vector<std::int32_t> passage(static_cast<std::size_t>(w.a));
      for (auto& t : passage) t = tok(rng);
      for (int rep = 0; rep < 2; ++rep)
        out[i].prompt.insert(out[i].prompt.end(), passage.begin(), passage.end());
      out[i].prompt.insert(out[i].prompt.end(), passage.begin(), passage.begin() + w.a / 2);
      out[i].output = w.b;
      continue;
    }
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
