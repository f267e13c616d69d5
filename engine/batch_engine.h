// Continuous batching over the paged KV cache on rank 0: each iteration the scheduler decides,
// the step runner sends the plan to every rank and runs the batch, and the sampler picks each
// finished chunk's next token. The frontends' API (submit, stream, cancel) builds on this.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/step_runner.h"

namespace saker {

struct BatchRequest {
  std::uint64_t id = 0;
  std::vector<std::int32_t> prompt;
  std::int64_t max_new_tokens = 16;
  SamplingParams sampling = greedy_sampling();
  bool ignore_eos = false;
};

struct BatchResult {
  std::vector<std::int32_t> tokens;  // generated
  std::string finish_reason;         // "length" or "eos"
};

class BatchEngine {
 public:
  // The KV pool is the runner's cache; its blocks are handed out by this engine's scheduler.
  BatchEngine(StepRunner& runner, SchedulerConfig config, std::vector<std::int64_t> eos_token_ids);

  void add(const BatchRequest& r);
  bool cancel(std::uint64_t id) { return scheduler_.cancel(id); }
  // Runs one iteration; false when there was nothing to run.
  bool step();
  // Steps until every request has finished.
  void run_to_completion();

  const std::map<std::uint64_t, BatchResult>& results() const { return results_; }
  const BlockManager& blocks() const { return blocks_; }
  const Scheduler& scheduler() const { return scheduler_; }

 private:
  StepRunner& runner_;
  BlockManager blocks_;
  Scheduler scheduler_;
  Sampler sampler_;
  std::vector<std::int64_t> eos_;
  std::map<std::uint64_t, BatchRequest> requests_;
  std::map<std::uint64_t, BatchResult> results_;
  std::vector<SequenceStep> steps_;
  std::vector<float> scratch_;
};

}  // namespace saker
