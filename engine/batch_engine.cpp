#include "engine/batch_engine.h"

#include <algorithm>
#include <stdexcept>

namespace saker {

BatchEngine::BatchEngine(StepRunner& runner, SchedulerConfig config,
                         std::vector<std::int64_t> eos_token_ids)
    : runner_(runner),
      blocks_(static_cast<std::int32_t>(runner.cache().num_blocks()),
              static_cast<std::int32_t>(runner.cache().block_size())),
      scheduler_(config, blocks_),
      sampler_(runner.model().config().vocab_size),
      eos_(std::move(eos_token_ids)) {
  if (config.max_tokens_per_step > runner.model().options().max_tokens ||
      config.max_batch_size > runner.model().options().max_logit_rows)
    throw std::invalid_argument("the scheduler's limits exceed what the model was sized for");
}

void BatchEngine::add(const BatchRequest& r) {
  r.sampling.validate();
  scheduler_.add(r.id, r.prompt, r.max_new_tokens);
  requests_[r.id] = r;
}

bool BatchEngine::step() {
  const Schedule sched = scheduler_.schedule();
  if (sched.run.empty()) return false;
  steps_.clear();
  for (const ScheduledSequence& r : sched.run) {
    const SequenceState& s = scheduler_.sequence(r.id);
    steps_.push_back({std::span(s.tokens).subspan(static_cast<std::size_t>(r.start),
                                                  static_cast<std::size_t>(r.count)),
                      static_cast<std::int32_t>(r.start), s.blocks, false, r.id});
  }
  const auto logits = runner_.step(steps_);
  const auto V = static_cast<std::size_t>(runner_.model().config().vocab_size);
  std::map<std::uint64_t, std::int32_t> sampled;
  std::vector<std::uint64_t> finished;
  for (std::size_t i = 0; i < sched.run.size(); ++i) {
    const ScheduledSequence& r = sched.run[i];
    if (!r.samples) continue;
    const SequenceState& s = scheduler_.sequence(r.id);
    const BatchRequest& req = requests_.at(r.id);
    const auto row = logits.subspan(i * V, V);
    std::int32_t next;
    if (req.sampling.plain_greedy()) {
      next = static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    } else {
      scratch_.assign(row.begin(), row.end());
      const auto prompt = std::span(s.tokens).first(static_cast<std::size_t>(s.prompt_len));
      const auto generated = std::span(s.tokens).subspan(static_cast<std::size_t>(s.prompt_len));
      next = sampler_.sample(scratch_, req.sampling, prompt, generated, r.start + r.count);
    }
    sampled[r.id] = next;
    if (!req.ignore_eos && std::find(eos_.begin(), eos_.end(), next) != eos_.end())
      finished.push_back(r.id);
  }
  for (const SequenceState& done : scheduler_.complete(sched, sampled, finished)) {
    BatchResult& res = results_[done.id];
    res.tokens.assign(done.tokens.begin() + done.prompt_len, done.tokens.end());
    const bool eos = std::find(finished.begin(), finished.end(), done.id) != finished.end();
    res.finish_reason = eos ? "eos" : "length";
    requests_.erase(done.id);
  }
  return true;
}

void BatchEngine::run_to_completion() {
  while (step()) {
  }
}

}  // namespace saker
