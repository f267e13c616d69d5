#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace saker {

Scheduler::Scheduler(SchedulerConfig config, BlockManager& blocks)
    : config_(config), blocks_(blocks) {
  if (config_.max_batch_size <= 0 || config_.max_tokens_per_step <= 0)
    throw std::invalid_argument("max_batch_size and max_tokens_per_step must be positive");
}

void Scheduler::add(std::uint64_t id, std::vector<std::int32_t> prompt,
                    std::int64_t max_new_tokens) {
  if (prompt.empty())
    throw std::invalid_argument("request " + std::to_string(id) + " has an empty prompt");
  if (max_new_tokens < 1) throw std::invalid_argument("max_new_tokens must be at least 1");
  if (seqs_.count(id))
    throw std::invalid_argument("request id " + std::to_string(id) + " is in use");
  // A request that could never fit the pool would wait forever: refuse it now.
  const auto need = blocks_.blocks_for(static_cast<std::int64_t>(prompt.size()) + max_new_tokens);
  if (need > blocks_.num_blocks())
    throw std::length_error("request " + std::to_string(id) + " needs " + std::to_string(need) +
                            " KV blocks; the pool has " + std::to_string(blocks_.num_blocks()));
  SequenceState s;
  s.id = id;
  s.prompt_len = static_cast<std::int64_t>(prompt.size());
  s.tokens = std::move(prompt);
  s.max_new_tokens = max_new_tokens;
  seqs_.emplace(id, std::move(s));
  waiting_.push_back(id);
}

bool Scheduler::cancel(std::uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  if (auto r = std::find(running_.begin(), running_.end(), id); r != running_.end()) {
    running_.erase(r);
    reserved_blocks_ -= blocks_.blocks_for(it->second.prompt_len + it->second.max_new_tokens);
  }
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
  blocks_.release(it->second.blocks);
  seqs_.erase(it);
  return true;
}

bool Scheduler::admit_fits(const SequenceState& s) const {
  if (config_.policy == AdmissionPolicy::kGuaranteedNoEvict)
    return reserved_blocks_ + blocks_.blocks_for(s.prompt_len + s.max_new_tokens) <=
           blocks_.num_blocks();
  return true;  // kMaxUtilization: schedule() allocates what the first chunk needs, or stops
}

void Scheduler::preempt(std::uint64_t id) {
  SequenceState& s = seqs_.at(id);
  blocks_.release(s.blocks);
  s.computed = 0;  // recompute: prompt and generated tokens are prefilled again on readmission
  running_.erase(std::find(running_.begin(), running_.end(), id));
  reserved_blocks_ -= blocks_.blocks_for(s.prompt_len + s.max_new_tokens);
  waiting_.push_front(id);  // first in line again
  ++preemptions_;
}

Schedule Scheduler::schedule() {
  Schedule out;
  std::int64_t budget = config_.max_tokens_per_step;
  // Sequences already running keep going, oldest first; when blocks run out the newest running
  // sequence is preempted (possibly the one asking).
  for (std::size_t i = 0; i < running_.size() && budget > 0;) {
    const std::uint64_t id = running_[i];
    SequenceState& s = seqs_.at(id);
    const std::int64_t n =
        std::min<std::int64_t>(static_cast<std::int64_t>(s.tokens.size()) - s.computed, budget);
    bool self_preempted = false;
    while (!blocks_.ensure(s.blocks, s.computed + n)) {
      const std::uint64_t victim = running_.back();
      if (auto r = std::find_if(out.run.begin(), out.run.end(),
                                [&](const ScheduledSequence& x) { return x.id == victim; });
          r != out.run.end()) {
        budget += r->count;
        out.run.erase(r);
      }
      preempt(victim);
      out.preempted.push_back(victim);
      if (victim == id) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) continue;  // running_[i] is now the next sequence
    out.run.push_back(
        {id, s.computed, n, s.computed + n == static_cast<std::int64_t>(s.tokens.size())});
    budget -= n;
    ++i;
  }
  // Then waiting requests, first come first served, while the batch and the budget allow.
  while (!waiting_.empty() && budget > 0 &&
         static_cast<std::int32_t>(running_.size()) < config_.max_batch_size) {
    const std::uint64_t id = waiting_.front();
    SequenceState& s = seqs_.at(id);
    if (!admit_fits(s)) break;
    const std::int64_t n =
        std::min<std::int64_t>(static_cast<std::int64_t>(s.tokens.size()) - s.computed, budget);
    if (!blocks_.ensure(s.blocks, s.computed + n)) break;  // wait for blocks to come back
    waiting_.pop_front();
    running_.push_back(id);
    reserved_blocks_ += blocks_.blocks_for(s.prompt_len + s.max_new_tokens);
    out.run.push_back(
        {id, s.computed, n, s.computed + n == static_cast<std::int64_t>(s.tokens.size())});
    budget -= n;
  }
  return out;
}

std::vector<SequenceState> Scheduler::complete(const Schedule& sched,
                                               const std::map<std::uint64_t, std::int32_t>& sampled,
                                               const std::vector<std::uint64_t>& finished) {
  std::vector<std::uint64_t> done;
  for (const ScheduledSequence& r : sched.run) {
    auto it = seqs_.find(r.id);
    if (it == seqs_.end()) continue;  // cancelled meanwhile
    SequenceState& s = it->second;
    s.computed = r.start + r.count;
    if (!r.samples) continue;
    const auto tok = sampled.find(r.id);
    if (tok == sampled.end())
      throw std::logic_error("no sampled token for sequence " + std::to_string(r.id));
    s.tokens.push_back(tok->second);
    const bool stop = std::find(finished.begin(), finished.end(), r.id) != finished.end();
    if (stop || s.generated() >= s.max_new_tokens) done.push_back(r.id);
  }
  std::vector<SequenceState> retired;
  for (const std::uint64_t id : done) {
    retired.push_back(seqs_.at(id));
    cancel(id);  // frees the blocks at once
  }
  return retired;
}

}  // namespace saker
