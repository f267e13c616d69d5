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

void Scheduler::add(std::uint64_t id, std::vector<std::int32_t> prompt, std::int64_t max_new_tokens,
                    double arrival, std::string_view cache_salt) {
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
  s.arrival = arrival;
  s.cache_root = BlockManager::root_hash(cache_salt);
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
  s.draft_computed = 0;
  s.cache_entered = 0;  // (what of them is still cached is reused then)
  running_.erase(std::find(running_.begin(), running_.end(), id));
  reserved_blocks_ -= blocks_.blocks_for(s.prompt_len + s.max_new_tokens);
  waiting_.push_front(id);  // first in line again
  ++preemptions_;
}

void Scheduler::end_finished_batch() {
  if (!std::all_of(running_.begin(), running_.end(),
                   [&](std::uint64_t id) { return seqs_.at(id).padding; }))
    return;
  const std::vector<std::uint64_t> batch = running_;
  for (const std::uint64_t id : batch) cancel(id);
}

void Scheduler::admit_dynamic_batch(double now) {
  end_finished_batch();  // also a batch whose live sequences were all cancelled
  if (!running_.empty() || waiting_.empty()) return;
  const auto batch = static_cast<std::size_t>(config_.max_batch_size);
  if (waiting_.size() < batch &&
      now - seqs_.at(waiting_.front()).arrival < config_.max_batch_delay_s)
    return;
  // A static batch runs to its end: admit only what is sure to fit, so nothing is ever preempted.
  while (!waiting_.empty() && running_.size() < batch) {
    const SequenceState& s = seqs_.at(waiting_.front());
    const std::int64_t need = blocks_.blocks_for(s.prompt_len + s.max_new_tokens);
    if (reserved_blocks_ + need > blocks_.num_blocks()) break;
    reserved_blocks_ += need;
    running_.push_back(waiting_.front());
    waiting_.pop_front();
  }
}

std::int64_t Scheduler::reuse_cached(SequenceState& s) {
  if (!config_.enable_prefix_caching) return 0;
  const std::int64_t bs = blocks_.block_size();
  // Never the last token: its logits give the next one, so it is always computed.
  const auto max_blocks =
      static_cast<std::int32_t>((static_cast<std::int64_t>(s.tokens.size()) - 1) / bs);
  const std::int32_t n =
      blocks_.reuse(s.tokens, s.cache_root, max_blocks, s.block_hashes, s.blocks);
  s.computed = n * bs;
  s.cache_entered = n;
  return s.computed;
}

void Scheduler::enter_computed(SequenceState& s) {
  if (!config_.enable_prefix_caching) return;
  const std::int64_t bs = blocks_.block_size();
  // A block is final once all its positions are computed: its tokens never change again.
  for (; s.cache_entered < s.computed / bs; ++s.cache_entered) {
    const auto i = static_cast<std::size_t>(s.cache_entered);
    const std::uint64_t parent = i == 0 ? s.cache_root : s.block_hashes[i - 1];
    const auto chunk =
        std::span(s.tokens).subspan(i * static_cast<std::size_t>(bs), static_cast<std::size_t>(bs));
    if (s.block_hashes.size() == i) s.block_hashes.push_back(blocks_.hash(parent, chunk));
    blocks_.cache(s.blocks[i], s.block_hashes[i], parent, chunk);
  }
}

Schedule Scheduler::schedule(double now) {
  Schedule out;
  std::int64_t budget = config_.max_tokens_per_step;
  const bool dynamic = config_.batching == Batching::kDynamic;
  if (dynamic) admit_dynamic_batch(now);
  // Sequences already running keep going, oldest first; when blocks run out the newest running
  // sequence is preempted (possibly the one asking).
  for (std::size_t i = 0; i < running_.size() && budget > 0;) {
    const std::uint64_t id = running_[i];
    SequenceState& s = seqs_.at(id);
    if (s.padding) {
      out.run.push_back({id, s.computed - 1, 1, false, true});
      budget -= 1;
      ++i;
      continue;
    }
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
  while (!dynamic && !waiting_.empty() && budget > 0 &&
         static_cast<std::int32_t>(running_.size()) < config_.max_batch_size) {
    const std::uint64_t id = waiting_.front();
    SequenceState& s = seqs_.at(id);
    if (!admit_fits(s)) break;
    const std::int64_t reused = reuse_cached(s);
    const std::int64_t n =
        std::min<std::int64_t>(static_cast<std::int64_t>(s.tokens.size()) - s.computed, budget);
    if (!blocks_.ensure(s.blocks, s.computed + n)) {  // wait for blocks to come back
      blocks_.release(s.blocks);
      s.computed = 0;
      s.cache_entered = 0;
      break;
    }
    prefix_queries_ += s.tokens.size();
    prefix_hits_ += static_cast<std::uint64_t>(reused);
    if (s.cached_tokens < 0) s.cached_tokens = std::min(reused, s.prompt_len);
    waiting_.pop_front();
    running_.push_back(id);
    reserved_blocks_ += blocks_.blocks_for(s.prompt_len + s.max_new_tokens);
    out.run.push_back(
        {id, s.computed, n, s.computed + n == static_cast<std::int64_t>(s.tokens.size())});
    budget -= n;
  }
  out.budget_left = budget;
  return out;
}

std::int64_t Scheduler::speculate(Schedule& sched, std::size_t i, std::int64_t k) {
  ScheduledSequence& r = sched.run.at(i);
  SequenceState& s = seqs_.at(r.id);
  k = std::min(k, sched.budget_left);
  // Never past max_new_tokens: k proposals and the target's own token.
  k = std::min(k, s.max_new_tokens - s.generated() - 1);
  if (k <= 0 || !r.samples || r.padding || r.draft != 0) return 0;
  if (!blocks_.ensure(s.blocks, r.start + r.count + k)) return 0;
  r.draft = k;
  sched.budget_left -= k;
  return k;
}

void Scheduler::set_draft_computed(std::uint64_t id, std::int64_t n) {
  if (auto it = seqs_.find(id); it != seqs_.end()) it->second.draft_computed = n;
}

std::vector<SequenceState> Scheduler::complete(
    const Schedule& sched, std::span<const std::int32_t> sampled,
    std::span<const std::uint8_t> finished, std::span<const std::vector<std::int32_t>> accepted) {
  if (sampled.size() != sched.run.size() ||
      (!finished.empty() && finished.size() != sampled.size()) ||
      (!accepted.empty() && accepted.size() != sampled.size()))
    throw std::invalid_argument("complete() needs one sampled entry per scheduled sequence");
  std::vector<SequenceState> retired;
  for (std::size_t i = 0; i < sched.run.size(); ++i) {
    const ScheduledSequence& r = sched.run[i];
    auto it = seqs_.find(r.id);
    if (it == seqs_.end() || r.padding) continue;  // cancelled meanwhile, or only padding
    SequenceState& s = it->second;
    s.computed = r.start + r.count;
    if (!accepted.empty() && r.samples) {
      // Accepted proposals: their KV, computed this step, is the KV of these tokens.
      const auto& a = accepted[i];
      if (static_cast<std::int64_t>(a.size()) > r.draft)
        throw std::invalid_argument("more tokens accepted than were proposed");
      s.tokens.insert(s.tokens.end(), a.begin(), a.end());
      s.computed += static_cast<std::int64_t>(a.size());
    }
    enter_computed(s);
    if (!r.samples) continue;
    s.tokens.push_back(sampled[i]);
    const bool stop = !finished.empty() && finished[i] != 0;
    if (!stop && s.generated() < s.max_new_tokens) continue;
    retired.push_back(s);
    if (config_.batching == Batching::kDynamic)
      s.padding = true;  // released with its batch, below
    else
      cancel(r.id);
  }
  if (config_.batching == Batching::kDynamic) end_finished_batch();
  return retired;
}

}  // namespace saker
