#include "engine/speculative/adaptive.h"

#include <algorithm>
#include <bit>

namespace saker {
namespace {

constexpr double kArmDecay = 0.97;  // an arm's rate follows about its last 30 measurements
constexpr double kSeqDecay = 0.8;   // a sequence's acceptance, about its last 5 proposals
constexpr double kGlobalDecay = 0.99;
constexpr double kPriorWeight = 2;  // a new sequence starts from the global rate, worth 2 tokens
constexpr int kTriesFirst = 4;      // each k is measured this often before rates are compared
constexpr double kExploreEvery = 32;
constexpr double kPrune = 0.9;   // a k this much slower than none stops the trials of larger k
constexpr int kProbeAfter = 16;  // a sequence held back proposes once after this many steps

// Tokens a step yields for a row proposing k tokens accepted each with probability a: the
// accepted run plus the target's own token.
double expected_tokens(double a, int k) {
  double e = 1, p = 1;
  for (int j = 0; j < k; ++j) e += (p *= a);
  return e;
}

double rate_of(const auto& arm) {
  return arm.seconds > 0 ? arm.tokens / arm.seconds : 0;
}

}  // namespace

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

std::size_t SpecController::bucket(std::int64_t rows) {
  // 1, 2, 3-4, 5-8, 9-16, ...
  return static_cast<std::size_t>(
      std::bit_width(static_cast<std::uint64_t>(std::max<std::int64_t>(rows, 1) - 1)));
}

std::vector<SpecController::Arm>& SpecController::arms(std::size_t b) {
  if (buckets_.size() <= b) {
    buckets_.resize(b + 1, std::vector<Arm>(static_cast<std::size_t>(k_max_) + 1));
    decisions_.resize(b + 1, 0);
  }
  return buckets_[b];
}

double SpecController::rate(std::int64_t rows, int k) const {
  const std::size_t b = bucket(rows);
  if (b >= buckets_.size()) return 0;
  return rate_of(buckets_[b][static_cast<std::size_t>(k)]);
}

void SpecController::plan(std::span<const std::uint64_t> ids, bool measured, std::vector<int>& k) {
  k.assign(ids.size(), 0);
  planned_k_ = -1;
  if (ids.empty()) return;
  const std::size_t b = bucket(static_cast<std::int64_t>(ids.size()));
  std::vector<Arm>& a = arms(b);
  if (!measured) {
    // A prompt chunk runs too: no measurement, so no trial either; the best measured k (none
    // before none itself is measured).
    if (a[0].seen < kTriesFirst) return;
    int best = 0;
    for (int kk = 1; kk <= k_max_; ++kk) {
      const Arm& arm = a[static_cast<std::size_t>(kk)];
      if (arm.seen >= kTriesFirst && rate_of(arm) > rate_of(a[static_cast<std::size_t>(best)]))
        best = kk;
    }
    if (best > 0) choose_rows(ids, a, best, k);
    return;
  }
  const std::int64_t n = ++decisions_[b];
  // Each k a few times first, from 0 up; once a k measures clearly slower than none, larger
  // ones are not tried (each proposal costs a position and, with a draft, a draft step, while
  // what it brings shrinks with its rank) until that k catches up.
  int choice = -1;
  for (int kk = 0; kk <= k_max_ && choice < 0; ++kk) {
    const Arm& arm = a[static_cast<std::size_t>(kk)];
    if (arm.seen < kTriesFirst) {
      choice = kk;
      break;
    }
    if (kk > 0 && rate_of(arm) < kPrune * rate_of(a[0])) break;
  }
  if (choice < 0) {
    choice = 0;
    for (int kk = 1; kk <= k_max_; ++kk)
      if (rate_of(a[static_cast<std::size_t>(kk)]) > rate_of(a[static_cast<std::size_t>(choice)]))
        choice = kk;
    // Another k once it is overdue: every 32 decisions for one as fast as the best, every
    // 32 x r^2 for one r times slower (so trying a bad choice costs little).
    const double best = rate_of(a[static_cast<std::size_t>(choice)]);
    double overdue = 1;
    for (int kk = 0; kk <= k_max_; ++kk) {
      const Arm& arm = a[static_cast<std::size_t>(kk)];
      if (kk == choice) continue;
      const double r = best / std::max(rate_of(arm), 1e-9);
      const double due = static_cast<double>(n - arm.last) / (kExploreEvery * r * r);
      if (due >= overdue) {
        overdue = due;
        choice = kk;
      }
    }
  }
  a[static_cast<std::size_t>(choice)].last = n;
  planned_bucket_ = b;
  planned_k_ = choice;
  planned_rows_ = static_cast<std::int64_t>(ids.size());
  if (choice > 0) choose_rows(ids, a, choice, k);
}

void SpecController::choose_rows(std::span<const std::uint64_t> ids, const std::vector<Arm>& a,
                                 int choice, std::vector<int>& k) {
  // Per row: worth it when the expected extra tokens, at the plain seconds per token, pay for
  // the seconds per row that proposing k adds (both measured for this batch size).
  const Arm& none = a[0];
  const Arm& with = a[static_cast<std::size_t>(choice)];
  const bool costed = none.seen >= kTriesFirst && with.seen >= kTriesFirst;
  const double per_token = costed ? none.seconds / none.tokens : 0;
  const double extra_per_row = costed ? with.seconds / with.rows - none.seconds / none.rows : 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const double gain = expected_tokens(acceptance(ids[i]), choice) - 1;
    int& skipped = skipped_[ids[i]];
    if (!costed || gain * per_token >= extra_per_row || ++skipped >= kProbeAfter) {
      k[i] = choice;
      skipped = 0;
    }
  }
}

void SpecController::observe_iteration(bool decode_only, std::int64_t tokens, double seconds) {
  if (planned_k_ < 0 || !decode_only) return;
  Arm& arm = buckets_[planned_bucket_][static_cast<std::size_t>(planned_k_)];
  arm.seconds = arm.seconds * kArmDecay + seconds;
  arm.tokens = arm.tokens * kArmDecay + static_cast<double>(tokens);
  arm.rows = arm.rows * kArmDecay + static_cast<double>(planned_rows_);
  ++arm.seen;
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
  skipped_.erase(id);
}

}  // namespace saker
