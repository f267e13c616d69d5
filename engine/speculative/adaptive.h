// When speculation pays (`--speculative-adaptive`, on by default), from costs measured on the
// machine it runs on. For each batch size (decode rows that may propose, in power-of-two
// buckets), rank 0 measures, over decode-only iterations (no prompt chunk), what a row costs
// without proposals (s0: seconds per row, i.e. per token) and what proposing k tokens adds per
// proposing row (c_k: the iteration's seconds beyond rows x s0, over the rows that proposed;
// draft steps, the wider verification step and rejected positions all included). Each sequence's
// acceptance per proposed token (its recent proposals, starting from the engine's rate) gives
// the tokens k proposals are expected to add, E = a + a^2 + ... + a^k, worth E x s0. Each
// iteration takes the k whose proposing rows gain the most in total, sum of E x s0 - c_k over
// the rows where that is positive, and only those rows propose; no k with a gain: none.
//
// Measuring: s0 first, then each k a few times with every row proposing (larger k only while
// the last one gained), and later each measured k again every 64 decisions, so the costs follow
// the batch's context lengths and the machine's load. A row held back proposes again after 16
// steps, so a recovering acceptance is noticed. A large batch, where an extra position costs as
// much as a token, or a draft too slow for its acceptance, thus measures no gain and is off.
// Nothing here changes a token: it only decides how much is proposed.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace saker {

class SpecController {
 public:
  explicit SpecController(int max_tokens);

  // This iteration: `ids` are the decode rows that may propose; `measured`: it is decode-only
  // (observe_iteration will measure it; otherwise nothing is tried, only what measured a gain
  // runs). Fills `k[i]` (0..K) for ids[i] and remembers the plan for observe_iteration().
  void plan(std::span<const std::uint64_t> ids, bool measured, std::vector<int>& k);

  // The iteration planned last took `seconds` (scheduling to emitted tokens, draft steps
  // included). Only decode-only iterations are measured.
  void observe_iteration(bool decode_only, double seconds);
  // A sequence's `proposed` tokens had their first `accepted` confirmed.
  void observe_acceptance(std::uint64_t id, int proposed, int accepted);
  void forget(std::uint64_t id);  // the sequence has finished

  // The current view (tests, logs): acceptance per proposed token; seconds per row without
  // proposals and added per row proposing k, for `rows` decode rows (0: not measured yet).
  double acceptance(std::uint64_t id) const;
  double global_acceptance() const;
  double row_seconds(std::int64_t rows) const;
  double proposal_seconds(std::int64_t rows, int k) const;

 private:
  struct Counts {
    double accepted = 0, rejected = 0;
  };
  struct Cost {  // exponentially weighted sums: seconds over the rows they are for
    double seconds = 0, rows = 0;
    int seen = 0;
    double per_row() const { return rows > 0 ? seconds / rows : 0; }
    void add(double s, double r);
  };
  struct Bucket {
    std::vector<Cost> cost;  // [0]: a row without proposals; [k]: added per row proposing k
    std::int64_t decisions = 0;
  };
  double alpha(const Counts& c) const;
  static std::size_t bucket_of(std::int64_t rows);
  Bucket& bucket(std::size_t b);
  // The best k for `ids` and who proposes (k[i]); 0 if no k gains.
  int best_plan(std::span<const std::uint64_t> ids, const Bucket& b, std::vector<int>& k);

  int k_max_;
  Counts global_;
  std::unordered_map<std::uint64_t, Counts> seqs_;
  std::unordered_map<std::uint64_t, int> held_;  // per sequence: steps held back
  std::vector<Bucket> buckets_;
  std::vector<double> alphas_;
  // The plan awaiting its measurement.
  std::size_t planned_bucket_ = 0;
  int planned_k_ = -1;
  std::int64_t planned_rows_ = 0, planned_proposing_ = 0;
};

}  // namespace saker
