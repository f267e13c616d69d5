// Continuous batching over the paged KV cache on rank 0: each iteration the scheduler decides,
// the step runner sends the plan to every rank and runs the batch, and the sampler picks each
// finished chunk's next token. Stop conditions, stop strings and log-probabilities are applied
// here, so every frontend (offline jobs, bench, HTTP) gets the same behaviour.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/constraints/compiler.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/speculative/adaptive.h"
#include "engine/speculative/speculation.h"
#include "engine/step_runner.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer/streaming_detokenizer.h"

namespace saker {

// Totals since the engine started (bench tables, metrics).
struct EngineStats {
  std::uint64_t iterations = 0;
  std::uint64_t batch_sequences = 0;  // summed over iterations: sequences per iteration
  std::uint64_t batch_tokens = 0;     // summed over iterations: tokens per iteration
  std::uint64_t kv_blocks_used = 0;   // summed over iterations, after scheduling
  std::int32_t max_kv_blocks_used = 0;
  std::uint64_t prompt_tokens = 0, generated_tokens = 0;
  std::uint64_t finished = 0, cancelled = 0;
  double step_seconds = 0;     // inside step(): scheduling, the model, sampling, detokenizing
  double forward_seconds = 0;  // of which the model's forward pass (all ranks, rank 0's view)
  // The rest of step() by stage: scheduling (and proposals), sampling (penalties, constraints,
  // detokenizing, stop strings, the events), and completing (the scheduler's bookkeeping).
  double schedule_seconds = 0, sample_seconds = 0, complete_seconds = 0;
  std::uint64_t summary_iterations = 0;  // iterations served from logit summaries, not full rows
  // Speculative decoding (vLLM's spec_decode counters): sequences that ran proposals, the
  // proposed tokens, and those the target's own choice confirmed.
  std::uint64_t spec_drafts = 0, spec_draft_tokens = 0, spec_accepted_tokens = 0;
};

class BatchEngine {
 public:
  using Clock = std::function<double()>;  // seconds
  using Listener = std::function<void(const TokenEvent&)>;
  // Testing: every sampled row's logits, before any processing, with the position it predicts.
  using LogitsObserver =
      std::function<void(std::uint64_t id, std::int64_t position, std::span<const float>)>;

  // The KV pool is the runner's cache; its blocks are handed out by this engine's scheduler.
  // Without a tokenizer there is no text: results carry ids only and stop strings are refused.
  // With a tokenizer, requests may carry structured-output constraints, compiled by
  // `constraints` (one is made from the tokenizer when none is given).
  BatchEngine(StepRunner& runner, SchedulerConfig config, std::vector<std::int64_t> eos_token_ids,
              const Tokenizer* tokenizer = nullptr,
              std::shared_ptr<const ConstraintCompiler> constraints = nullptr);

  void set_listener(Listener l) { listener_ = std::move(l); }
  void set_clock(Clock c) { clock_ = std::move(c); }
  // An observer sees full rows, so while one is set every step reads full rows back.
  void observe_logits(LogitsObserver o) { observer_ = std::move(o); }
  // A step whose sampling rows all need only the best few logits (plain greedy, or top_k <=
  // kSummaryTopK without penalties; log-probabilities included) may read back per-row summaries
  // (LogitsMode::kSummary) instead of whole rows. Both give the same tokens and
  // log-probabilities, bit for bit. By default summaries are used where the logits live on a
  // device (copying rows back costs more); prefer_summaries(true) uses them on the CPU too
  // (where they cost more than they save: tests). force_full_logits(true): never.
  void prefer_summaries(bool on) { summaries_ = on; }
  void force_full_logits(bool on) { force_full_ = on; }
  // Speculative decoding (engine/speculative/speculation.h): decode rows propose up to K tokens
  // (prompt lookup, or the draft model attached to the runner), the target checks them in the
  // same step, and with SpecAcceptance::kExact a proposal is kept exactly when the target's own
  // choice at its position (greedy, or the seeded draw, with penalties, min_new_tokens and a
  // constraint applied as a one-token step applies them) equals it, so the output is the same
  // token for token. With kRejection, sampled rows with penalties, a constraint or before
  // min_new_tokens do not speculate.
  void set_speculation(const SpeculationConfig& c);
  // Prompt lookup, exact, proposing `num_tokens` (0: off) on every step.
  void set_speculation(int num_tokens, int ngram_max = 4) {
    set_speculation({num_tokens > 0 ? SpecMethod::kNgram : SpecMethod::kNone, num_tokens, ngram_max,
                     SpecAcceptance::kExact, false});
  }

  // Validates (RequestError naming the field and the limit) and queues.
  void add(BatchRequest r);
  // Drops a request now (its blocks are free before the next iteration); its result finishes as
  // cancelled and the listener hears so. False if it is unknown or already finished.
  bool cancel(std::uint64_t id);
  // Runs one iteration; false when nothing ran (idle, or a dynamic batch still gathering).
  bool step();
  bool idle() const { return scheduler_.idle(); }
  // What add() checks requests against.
  RequestLimits limits() const;

  const std::map<std::uint64_t, BatchResult>& results() const { return results_; }
  // Hands over a finished request's result (frontends; keeps the engine's memory flat).
  std::optional<BatchResult> take_result(std::uint64_t id);

  const BlockManager& blocks() const { return blocks_; }
  const Scheduler& scheduler() const { return scheduler_; }
  const EngineStats& stats() const { return stats_; }
  double now() const { return clock_(); }

 private:
  struct Live {
    BatchRequest req;
    std::optional<StreamingDetokenizer> detok;
    StopMatcher stop;
    std::optional<ConstraintMatcher> constraint;
    BatchResult result;
  };
  std::int32_t choose(const ScheduledSequence& r, Live& live, std::span<const float> row);
  // Whether this row's choice and log-probabilities can come from its summary alone.
  bool summary_serves(const ScheduledSequence& r, const Live& live) const;
  std::int32_t choose(const ScheduledSequence& r, const Live& live, const LogitSummary& s);
  // Before min_new_tokens: eos (unless ignored) and the stop ids may not be chosen.
  void mask_ends(const BatchRequest& req, std::span<float> logits) const;
  FinishReason finish_of(const Live& live, std::int32_t token, std::int64_t generated);
  bool may_speculate(const Live& live) const;
  // Proposals for the step's decode rows, within the budget, blocks and logit rows.
  void propose(Schedule& sched);
  // The draft model's part of propose(): rows[i] of sched.run proposes up to k[i] tokens.
  void propose_draft(Schedule& sched, std::span<const std::size_t> rows, std::span<const int> k);
  // A draft row's next proposal from its logits (or summary) for `position`.
  // `proposals`: the row's proposals before this one.
  std::int32_t draft_choice(const ScheduledSequence& r, Live& live, std::span<const float> row,
                            const LogitSummary* summary, std::span<const std::int32_t> proposals,
                            std::int64_t position, float* q);
  // After the step: the draft KV each sequence now holds, and what adaptive speculation learns.
  void settle_speculation(const Schedule& sched);
  // kRejection: the token row r takes at `position` for proposal j: the proposal or a draw from
  // the residual distribution.
  std::int32_t rejection_choice(const ScheduledSequence& r, const Live& live,
                                std::span<const float> row, std::size_t row_index, std::int64_t j,
                                std::int64_t position);
  bool rejection_applies(const Live& live) const {
    return spec_.acceptance == SpecAcceptance::kRejection && !live.req.sampling.greedy();
  }
  // Chooses (unless `chosen` is given), emits and returns the next token of row r from `row`,
  // whose logits predict position `position`.
  std::int32_t decide(const ScheduledSequence& r, Live& live, std::span<const float> row,
                      std::int64_t position, double t, std::int32_t chosen = -1);
  // The same from the row's summary.
  std::int32_t decide(const ScheduledSequence& r, Live& live, const LogitSummary& s,
                      std::int64_t position, double t);
  void emit(Live& live, std::int32_t token, FinishReason finish, double t);

  StepRunner& runner_;
  BlockManager blocks_;
  Scheduler scheduler_;
  Sampler sampler_;
  std::vector<std::int64_t> eos_;
  const Tokenizer* tokenizer_;
  std::shared_ptr<const ConstraintCompiler> constraints_;
  Clock clock_;
  Listener listener_;
  LogitsObserver observer_;
  bool force_full_ = false;
  bool summaries_ = true;
  SpeculationConfig spec_;
  std::optional<SpecController> controller_;
  std::unordered_map<std::uint64_t, Live> live_;
  std::map<std::uint64_t, BatchResult> results_;
  EngineStats stats_;
  // Reused every iteration: a step allocates nothing once these have grown.
  std::vector<SequenceStep> steps_;
  std::vector<std::int32_t> sampled_;
  std::vector<std::uint8_t> finished_;
  std::vector<std::vector<std::int32_t>> proposed_;  // per row: its last token, then proposals
  std::vector<std::vector<std::int32_t>> accepted_;  // per row: proposals kept, before sampled_
  // Draft model: per row, the end of the positions whose draft KV this step wrote (-1: none),
  // and the position of its first proposal.
  std::vector<std::int64_t> draft_written_, first_proposal_;
  std::vector<std::int64_t> draft_k_;
  std::vector<SequenceStep> draft_steps_;
  std::vector<std::size_t> draft_rows_;  // sched.run index of each draft step entry
  std::vector<float> draft_q_;           // kRejection: [row][proposal][vocab] draft probabilities
  std::vector<float> p_;                 // kRejection: the target's probabilities
  std::vector<std::int32_t> draft_generated_;
  std::vector<std::size_t> spec_rows_;
  std::vector<std::uint64_t> spec_ids_;
  std::vector<int> spec_k_;
  std::vector<float> scratch_;
  std::vector<TokenLogprob> top_;
  std::vector<std::int32_t> order_;
  std::string text_;
};

}  // namespace saker
