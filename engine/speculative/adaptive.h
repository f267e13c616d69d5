// When speculation pays (`--speculative-adaptive`, on by default), measured rather than modelled:
// rank 0 keeps, for each batch size (decode rows, in power-of-two buckets) and each number of
// proposals per row k = 0 (none) .. K, the output tokens per second of the decode-only
// iterations that ran that way, everything included (draft steps, the wider verification step,
// proposals that were rejected). Each iteration runs the k with the best rate for its batch size
// (each k is tried a few times first, from 0 up, larger ones only while the last measured
// is not clearly slower than none), and another k once it is overdue: one 32 decisions after
// its last try if it measured as fast as the best, 32 r^2 if r times slower, so the rates stay
// current as acceptance, batch sizes and the machine's load change, at a small cost. A large batch,
// where a step costs per position rather than per weight read, or a draft too slow for its
// acceptance, simply measures slower and is not chosen.
//
// Per sequence: its acceptance per proposed token (recent proposals, starting from the engine's
// rate) gives its expected extra tokens, 1 + a + ... + a^k - 1; it proposes only while they are
// worth what its proposals cost, also measured (the seconds per row a step with k proposals
// takes beyond one without, against the seconds per token without). A sequence that stops is
// given one proposal now and then, so a recovering acceptance is noticed. Nothing here changes a
// token: it only decides how much is proposed.
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
  // (observe_iteration will measure it; otherwise only the best measured k runs). Fills `k[i]`
  // (0..K) for ids[i] and remembers the choice for observe_iteration().
  void plan(std::span<const std::uint64_t> ids, bool measured, std::vector<int>& k);

  // The iteration planned last took `seconds` (scheduling to emitted tokens, draft steps
  // included) and emitted `tokens`. Only decode-only iterations (no prompt chunk) are measured.
  void observe_iteration(bool decode_only, std::int64_t tokens, double seconds);
  // A sequence's `proposed` tokens had their first `accepted` confirmed.
  void observe_acceptance(std::uint64_t id, int proposed, int accepted);
  void forget(std::uint64_t id);  // the sequence has finished

  // The current view (tests, logs).
  double acceptance(std::uint64_t id) const;  // per proposed token
  double global_acceptance() const;
  // Output tokens per second measured for `rows` decode rows proposing k each (0: none yet).
  double rate(std::int64_t rows, int k) const;

 private:
  struct Counts {
    double accepted = 0, rejected = 0;
  };
  struct Arm {
    double seconds = 0, tokens = 0, rows = 0;  // exponentially weighted sums
    int seen = 0;
    std::int64_t last = 0;  // the decision that last chose it
  };
  double alpha(const Counts& c) const;
  void choose_rows(std::span<const std::uint64_t> ids, const std::vector<Arm>& a, int choice,
                   std::vector<int>& k);
  static std::size_t bucket(std::int64_t rows);
  std::vector<Arm>& arms(std::size_t b);

  int k_max_;
  Counts global_;
  std::unordered_map<std::uint64_t, Counts> seqs_;
  std::vector<std::vector<Arm>> buckets_;  // [bucket][k]
  std::vector<std::int64_t> decisions_;    // per bucket
  // The plan awaiting its measurement.
  std::size_t planned_bucket_ = 0;
  int planned_k_ = -1;
  std::int64_t planned_rows_ = 0;
  std::unordered_map<std::uint64_t, int> skipped_;  // per sequence: steps since its last probe
};

}  // namespace saker
