#include "engine/speculative/adaptive.h"

#include <algorithm>
#include <bit>

namespace saker {
namespace {

constexpr double kCostDecay = 0.95;  // a cost follows about its last 20 measurements
constexpr double kSeqDecay = 0.8;    // a sequence's acceptance, about its last 5 proposals
constexpr double kGlobalDecay = 0.99;
constexpr double kPriorWeight = 2;  // a new sequence starts from the global rate, worth 2 tokens
constexpr int kTries = 4;           // measurements of a cost before it is used
constexpr std::int64_t kRemeasureEvery = 64;
constexpr int kProbeAfter = 16;  // a row held back proposes again after this many steps

// Tokens k proposals accepted each with probability a are expected to add.
double expected_extra(double a, int k) {
  double e = 0, p = 1;
  for (int j = 0; j < k; ++j) e += (p *= a);
  return e;
}

}  // namespace

void SpecController::Cost::add(double s, double r) {
  seconds = seconds * kCostDecay + s;
  rows = rows * kCostDecay + r;
  ++seen;
}

SpecController::SpecController(int max_tokens) : k_max_(max_tokens) {
  global_ = {1, 1};  // 50 % until measured
}

double SpecController::alpha(const Counts& c) const {
  const double g = global_acceptance();
  return (c.accepted + kPriorWeight * g) / (c.accepted + c.rejected + kPriorWeight);
}

double SpecController::global_acceptance() const {
  return global_.accepted / std::max(global_.accepted + global_.rejected, 1e-9);
}

double SpecController::acceptance(std::uint64_t id) const {
  const auto it = seqs_.find(id);
  return it == seqs_.end() ? global_acceptance() : alpha(it->second);
}

std::size_t SpecController::bucket_of(std::int64_t rows) {
  // 1, 2, 3-4, 5-8, 9-16, ...
  return static_cast<std::size_t>(
      std::bit_width(static_cast<std::uint64_t>(std::max<std::int64_t>(rows, 1) - 1)));
}

SpecController::Bucket& SpecController::bucket(std::size_t b) {
  if (buckets_.size() <= b)
    buckets_.resize(b + 1, Bucket{std::vector<Cost>(static_cast<std::size_t>(k_max_) + 1), 0});
  return buckets_[b];
}

double SpecController::row_seconds(std::int64_t rows) const {
  const std::size_t b = bucket_of(rows);
  return b < buckets_.size() ? buckets_[b].cost[0].per_row() : 0;
}

double SpecController::proposal_seconds(std::int64_t rows, int k) const {
  const std::size_t b = bucket_of(rows);
  return b < buckets_.size() ? buckets_[b].cost[static_cast<std::size_t>(k)].per_row() : 0;
}

int SpecController::best_plan(std::span<const std::uint64_t> ids, const Bucket& b,
                              std::vector<int>& k) {
  const double s0 = b.cost[0].per_row();
  double best_gain = 0;
  int best = 0;
  for (int kk = 1; kk <= k_max_; ++kk) {
    const Cost& c = b.cost[static_cast<std::size_t>(kk)];
    if (c.seen < kTries) continue;
    double gain = 0;
    for (const double a : alphas_) gain += std::max(expected_extra(a, kk) * s0 - c.per_row(), 0.0);
    if (gain > best_gain) {
      best_gain = gain;
      best = kk;
    }
  }
  k.assign(ids.size(), 0);
  if (best == 0) return 0;
  const double cost = b.cost[static_cast<std::size_t>(best)].per_row();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    int& held = held_[ids[i]];
    if (expected_extra(alphas_[i], best) * s0 > cost || ++held >= kProbeAfter) {
      k[i] = best;
      held = 0;
    }
  }
  return best;
}

void SpecController::plan(std::span<const std::uint64_t> ids, bool measured, std::vector<int>& k) {
  k.assign(ids.size(), 0);
  planned_k_ = -1;
  if (ids.empty()) return;
  const std::size_t bi = bucket_of(static_cast<std::int64_t>(ids.size()));
  Bucket& b = bucket(bi);
  alphas_.resize(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) alphas_[i] = acceptance(ids[i]);
  const double best_alpha = *std::max_element(alphas_.begin(), alphas_.end());
  int choice = -1;  // a k to measure, every row proposing
  if (measured) {
    const std::int64_t n = ++b.decisions;
    if (b.cost[0].seen < kTries) {
      choice = 0;
    } else {
      // Unmeasured k in turn, from 1 up, while the last one could gain for the best row; then
      // each measured k again now and then.
      for (int kk = 1; kk <= k_max_ && choice < 0; ++kk) {
        const Cost& c = b.cost[static_cast<std::size_t>(kk)];
        if (c.seen < kTries) {
          choice = kk;
        } else if (expected_extra(best_alpha, kk) * b.cost[0].per_row() <= c.per_row()) {
          break;
        }
      }
      if (choice < 0 && n % kRemeasureEvery == 0) {
        const int turn = static_cast<int>((n / kRemeasureEvery) % (k_max_ + 1));
        if (turn == 0 || b.cost[static_cast<std::size_t>(turn)].seen >= kTries) choice = turn;
      }
    }
  } else if (b.cost[0].seen < kTries) {
    return;  // nothing measured for this batch size yet: no proposals in an unmeasured step
  }
  int ran = 0;
  if (choice >= 0) {
    std::fill(k.begin(), k.end(), choice);
    ran = choice;
  } else {
    ran = best_plan(ids, b, k);
  }
  planned_bucket_ = bi;
  planned_k_ = ran;
  planned_rows_ = static_cast<std::int64_t>(ids.size());
  planned_proposing_ = std::count_if(k.begin(), k.end(), [](int x) { return x > 0; });
}

void SpecController::observe_iteration(bool decode_only, double seconds) {
  if (planned_k_ < 0 || !decode_only) return;
  Bucket& b = buckets_[planned_bucket_];
  const auto rows = static_cast<double>(planned_rows_);
  if (planned_k_ == 0) {
    b.cost[0].add(seconds, rows);
  } else if (b.cost[0].seen > 0 && planned_proposing_ > 0) {
    // What the proposing rows added beyond the rows' plain cost.
    b.cost[static_cast<std::size_t>(planned_k_)].add(seconds - rows * b.cost[0].per_row(),
                                                     static_cast<double>(planned_proposing_));
  }
  planned_k_ = -1;
}

void SpecController::observe_acceptance(std::uint64_t id, int proposed, int accepted) {
  if (proposed <= 0) return;
  // Each accepted token is a success; the first rejected one a failure (later ones unseen).
  const double ok = accepted, bad = accepted < proposed ? 1 : 0;
  Counts& c = seqs_[id];
  c.accepted = c.accepted * kSeqDecay + ok;
  c.rejected = c.rejected * kSeqDecay + bad;
  global_.accepted = global_.accepted * kGlobalDecay + ok;
  global_.rejected = global_.rejected * kGlobalDecay + bad;
}

void SpecController::forget(std::uint64_t id) {
  seqs_.erase(id);
  held_.erase(id);
}

}  // namespace saker
