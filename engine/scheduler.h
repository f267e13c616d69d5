// Rank 0's rolling-batch scheduler: every iteration it decides which sequences run and how many
// of their tokens, inside a token budget, the way vLLM v1 and TensorRT-LLM's executor do it:
// there are no prefill and decode phases, each sequence's computed-token count chases its total
// (prompt + generated), so long prompts are chunked and mixed with decodes. Plain data: no MPI,
// no model; the engine turns a Schedule into an IterationPlan and reports the sampled tokens.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string_view>
#include <vector>

#include "engine/block_manager.h"

namespace saker {

enum class AdmissionPolicy {
  kMaxUtilization,     // admit while blocks last now; preempt the newest when they run out
  kGuaranteedNoEvict,  // admit only what can run to max_new_tokens with the blocks left
};

// Rolling: sequences join and leave every iteration. Dynamic: DJL's request-level batching
// (option.rolling_batch=disable), kept as the baseline rolling batching is measured against.
enum class Batching { kRolling, kDynamic };

struct SchedulerConfig {
  std::int32_t max_batch_size = 32;        // sequences per iteration (max_rolling_batch_size)
  std::int32_t max_tokens_per_step = 512;  // tokens per iteration (max_num_batched_tokens)
  AdmissionPolicy policy = AdmissionPolicy::kMaxUtilization;
  Batching batching = Batching::kRolling;
  // kDynamic: a batch starts when max_batch_size requests wait or the oldest has waited this long.
  double max_batch_delay_s = 0.1;
  // Rolling: an admitted request reuses the cached KV blocks its tokens start with
  // (block_manager.h).
  bool enable_prefix_caching = true;
};

struct SequenceState {
  std::uint64_t id = 0;
  std::vector<std::int32_t> tokens;  // prompt, then everything generated
  std::int64_t prompt_len = 0;
  std::int64_t max_new_tokens = 0;
  std::int64_t computed = 0;  // tokens whose KV is in the cache
  // Speculative decoding's draft model: leading tokens whose draft KV is in its pool (blocks
  // are shared with the target's; a preemption or a prefix-cache hit starts it from zero).
  std::int64_t draft_computed = 0;
  BlockTable blocks;
  double arrival = 0;  // seconds on the caller's clock
  // kDynamic: finished, but the batch still runs, so it keeps its slot and costs a token per
  // iteration the way a finished row of a static batch does (Hugging Face generate pads it).
  bool padding = false;
  // Prefix caching.
  std::uint64_t cache_root = 0;             // the salt's root of the hash chain
  std::vector<std::uint64_t> block_hashes;  // the chain over tokens' first full blocks
  std::int64_t cache_entered = 0;           // leading blocks already offered to the cache
  std::int64_t cached_tokens = -1;          // prompt tokens reused at first admission; -1: not yet
  std::int64_t generated() const { return static_cast<std::int64_t>(tokens.size()) - prompt_len; }
};

// One sequence's part of an iteration: run tokens [start, start + count) of it.
struct ScheduledSequence {
  std::uint64_t id = 0;
  std::int64_t start = 0;
  std::int64_t count = 0;
  bool samples = false;  // the chunk reaches the end of the known tokens: a new token follows
  bool padding = false;  // kDynamic: a finished sequence's last token again; output unused
  // Speculative decoding: this many proposed tokens run after the chunk, at positions
  // start + count onwards (Scheduler::speculate); their KV counts only where accepted.
  std::int64_t draft = 0;
};

struct Schedule {
  std::vector<ScheduledSequence> run;
  std::vector<std::uint64_t> preempted;  // back to waiting; their blocks were freed
  std::int64_t budget_left = 0;          // of max_tokens_per_step, after the run
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& blocks);

  // Queues a request (first come, first served) that arrived at `arrival` seconds.
  // `cache_salt`: requests reuse only cached blocks of requests with the same salt.
  void add(std::uint64_t id, std::vector<std::int32_t> prompt, std::int64_t max_new_tokens,
           double arrival = 0, std::string_view cache_salt = {});
  // Drops a request, waiting or running; its blocks are freed now. False if unknown.
  bool cancel(std::uint64_t id);

  // The next iteration at time `now` (seconds, the clock of add's arrivals).
  Schedule schedule(double now = 0);
  // Lets s.run[i], a decode, also run up to `k` proposed tokens, within the step's budget and
  // the blocks free now (never preempting for a guess). Returns how many it may run.
  std::int64_t speculate(Schedule& s, std::size_t i, std::int64_t k);
  // After a step: sampled[i] is the token for s.run[i] where it samples; finished[i] (may be
  // empty) ends that sequence early, e.g. on eos. Sequences that reach max_new_tokens or are
  // finished are retired, their blocks freed (kDynamic: when their batch ends), and returned.
  // accepted[i] (may be empty): the proposed tokens of s.run[i] accepted before sampled[i].
  // The draft model's KV of the sequence now holds its first n tokens (no-op if it is gone).
  void set_draft_computed(std::uint64_t id, std::int64_t n);
  std::vector<SequenceState> complete(const Schedule& s, std::span<const std::int32_t> sampled,
                                      std::span<const std::uint8_t> finished = {},
                                      std::span<const std::vector<std::int32_t>> accepted = {});

  const SequenceState& sequence(std::uint64_t id) const { return seqs_.at(id); }
  std::size_t running() const { return running_.size(); }
  std::size_t waiting() const { return waiting_.size(); }
  bool idle() const { return running_.empty() && waiting_.empty(); }
  std::uint64_t preemptions() const { return preemptions_; }
  // Prefix cache totals, in tokens: looked up at admission, and of those served from the cache.
  std::uint64_t prefix_queries() const { return prefix_queries_; }
  std::uint64_t prefix_hits() const { return prefix_hits_; }

 private:
  bool admit_fits(const SequenceState& s) const;
  void preempt(std::uint64_t id);
  void end_finished_batch();
  void admit_dynamic_batch(double now);
  std::int64_t reuse_cached(SequenceState& s);
  void enter_computed(SequenceState& s);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::map<std::uint64_t, SequenceState> seqs_;
  std::vector<std::uint64_t> running_;  // admission order
  std::deque<std::uint64_t> waiting_;
  std::uint64_t preemptions_ = 0;
  std::uint64_t prefix_queries_ = 0, prefix_hits_ = 0;
  std::int64_t reserved_blocks_ = 0;  // kGuaranteedNoEvict: blocks promised to running sequences
};

}  // namespace saker
