// Runs model steps on every rank of a tensor-parallel group. Rank 0 decides each step and sends
// it to the others as an IterationPlan; ranks > 0 only execute the plans they receive, so no
// other rank ever makes a scheduling or sampling decision.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/model/kv_cache.h"
#include "engine/model/model.h"
#include "parallel/communicator.h"
#include "parallel/iteration_plan.h"
#include "parallel/watchdog.h"

namespace saker {

class StepRunner {
 public:
  StepRunner(Model& model, KvCache& cache, Communicator& comm);

  Model& model() { return model_; }
  KvCache& cache() { return cache_; }
  // Speculative decoding's draft model, on every rank, with its own KV pool of as many blocks
  // as the target's: a sequence's one block table addresses both, so freeing its blocks frees
  // its draft KV too. Must be attached on every rank before the first step.
  void attach_draft(Model& model, KvCache& cache);
  Model* draft_model() { return draft_model_; }
  bool is_driver() const { return comm_.rank() == 0; }

  // Rank 0: sends the batch to every rank and runs its own shard; returns the logits (or, with
  // LogitsMode::kSummary, nothing: model().summaries() has them). Other ranks need not know the
  // mode: it only changes what rank 0 reads back.
  std::span<const float> step(std::span<const SequenceStep> batch,
                              LogitsMode mode = LogitsMode::kRows);
  // The same through the draft model (draft_model()->summaries() after kSummary).
  std::span<const float> draft_step(std::span<const SequenceStep> batch,
                                    LogitsMode mode = LogitsMode::kRows);
  // Rank 0: ends the other ranks' serve().
  void stop();
  // Ranks > 0: executes plans until rank 0 sends stop; returns the number of steps run.
  std::uint64_t serve();
  // Called with the step number before every step, on every rank (fault-injection tests).
  void before_each_step(std::function<void(std::uint64_t)> fn) { before_step_ = std::move(fn); }
  // Watches each step's collectives (not the wait for the next plan); null: none.
  void set_watchdog(CollectiveWatchdog* w) { watchdog_ = w; }
  // Watches the heartbeat, and on ranks > 0 the wait for the next plan once heartbeats have
  // begun (rank 0 sends one at least every heartbeat_s while serving).
  void set_peer_watchdog(CollectiveWatchdog* w, double timeout_s, double heartbeat_s) {
    peer_ = w;
    peer_timeout_s_ = timeout_s;
    heartbeat_s_ = heartbeat_s;
  }
  // Rank 0, serving and idle: a no-op plan every rank answers with a barrier.
  void heartbeat();

 private:
  void send(const IterationPlan& plan);
  std::span<const float> run(std::span<const SequenceStep> batch, LogitsMode mode, bool draft);

  CollectiveWatchdog* peer_ = nullptr;
  double peer_timeout_s_ = 0, heartbeat_s_ = 0;
  bool beating_ = false;  // ranks > 0: a heartbeat has come, so plans come at least that often
  Model& model_;
  KvCache& cache_;
  Communicator& comm_;
  Model* draft_model_ = nullptr;
  KvCache* draft_cache_ = nullptr;
  std::uint64_t iteration_ = 0;
  IterationPlan plan_;
  std::vector<std::byte> wire_;
  std::vector<SequenceStep> steps_;
  std::function<void(std::uint64_t)> before_step_;
  CollectiveWatchdog* watchdog_ = nullptr;
};

}  // namespace saker
