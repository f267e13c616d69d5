#include "engine/step_runner.h"

#include <stdexcept>

namespace saker {
StepRunner::StepRunner(Model& model, KvCache& cache, Communicator& comm)
    : model_(model), cache_(cache), comm_(comm) {}

void StepRunner::send(const IterationPlan& plan) {
  encode_plan(plan, wire_);
  comm_.broadcast(wire_, 0);
}

void StepRunner::heartbeat() {
  if (!is_driver()) throw std::logic_error("only rank 0 sends heartbeats");
  if (comm_.size() == 1) return;
  const WatchdogArm beat(peer_, iteration_, peer_timeout_s_, "the heartbeat's barrier");
  plan_.iteration = iteration_;
  plan_.stop = plan_.draft = false;
  plan_.heartbeat = true;
  plan_.freed.clear();
  plan_.sequences.clear();
  send(plan_);
  comm_.barrier();
}

void StepRunner::attach_draft(Model& model, KvCache& cache) {
  if (cache.num_blocks() != cache_.num_blocks() || cache.block_size() != cache_.block_size())
    throw std::invalid_argument("the draft's KV pool must have the target's blocks");
  draft_model_ = &model;
  draft_cache_ = &cache;
}

std::span<const float> StepRunner::step(std::span<const SequenceStep> batch, LogitsMode mode) {
  return run(batch, mode, false);
}

std::span<const float> StepRunner::draft_step(std::span<const SequenceStep> batch,
                                              LogitsMode mode) {
  if (!draft_model_) throw std::logic_error("no draft model is attached");
  return run(batch, mode, true);
}

std::span<const float> StepRunner::run(std::span<const SequenceStep> batch, LogitsMode mode,
                                       bool draft) {
  if (!is_driver()) throw std::logic_error("only rank 0 drives steps");
  if (before_step_) before_step_(iteration_);
  const WatchdogArm watch(watchdog_, iteration_);
  if (comm_.size() > 1) {
    plan_.iteration = iteration_;
    plan_.stop = false;
    plan_.draft = draft;
    plan_.heartbeat = false;
    plan_.freed.clear();
    plan_.sequences.resize(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      PlanSequence& p = plan_.sequences[i];
      p.id = batch[i].id;
      p.start_pos = batch[i].start_pos;
      p.all_logits = batch[i].all_logits;
      p.tokens.assign(batch[i].tokens.begin(), batch[i].tokens.end());
      // Only the blocks this step touches travel.
      const auto blocks = static_cast<std::size_t>(cache_.blocks_for(
          batch[i].start_pos + static_cast<std::int64_t>(batch[i].tokens.size())));
      if (blocks > batch[i].block_table.size())
        throw std::length_error("block table does not cover the step");
      p.block_table.assign(batch[i].block_table.begin(), batch[i].block_table.begin() + blocks);
    }
    send(plan_);
  }
  ++iteration_;
  return draft ? draft_model_->forward(batch, *draft_cache_, mode)
               : model_.forward(batch, cache_, mode);
}

void StepRunner::stop() {
  if (!is_driver() || comm_.size() == 1) return;
  IterationPlan plan;
  plan.iteration = iteration_++;
  plan.stop = true;
  send(plan);
}

std::uint64_t StepRunner::serve() {
  if (is_driver()) throw std::logic_error("rank 0 drives steps; it does not serve them");
  std::uint64_t steps = 0;
  for (;;) {
    {
      const WatchdogArm wait(beating_ ? peer_ : nullptr, plan_.iteration,
                             heartbeat_s_ + peer_timeout_s_,
                             "waiting for rank 0's next plan (one comes at least every "
                             "--heartbeat-interval; the limit is that plus --peer-timeout)");
      comm_.broadcast(wire_, 0);
    }
    decode_plan(wire_, plan_);
    if (plan_.stop) return steps;
    if (plan_.heartbeat) {
      beating_ = true;
      const WatchdogArm beat(peer_, plan_.iteration, peer_timeout_s_, "the heartbeat's barrier");
      comm_.barrier();
      continue;
    }
    if (before_step_) before_step_(plan_.iteration);
    steps_.clear();
    for (const PlanSequence& s : plan_.sequences)
      steps_.push_back({s.tokens, s.start_pos, s.block_table, s.all_logits, s.id});
    const WatchdogArm watch(watchdog_, plan_.iteration);
    if (plan_.draft) {
      if (!draft_model_) throw PlanError("a draft-model step came, but no draft model is loaded");
      draft_model_->forward(steps_, *draft_cache_);
    } else {
      model_.forward(steps_, cache_);
    }
    ++steps;
  }
}

}  // namespace saker
