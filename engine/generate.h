// Generation of one sequence: chunked prefill, then one token per step, chosen on rank 0 by
// argmax or by the sampler.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "engine/sampler.h"
#include "engine/step_runner.h"

namespace saker {

struct GenerateOptions {
  std::int64_t max_new_tokens = 32;
  SamplingParams sampling = greedy_sampling();  // validated by generate_sequence
  bool ignore_eos = false;
  std::vector<std::int64_t> eos_token_ids;  // stop when one is generated (unless ignore_eos)
};

struct GenerateResult {
  std::vector<std::int32_t> tokens;  // generated ids, the eos id included when it stopped there
  std::string finish_reason;         // "length" or "eos"
  double prefill_seconds = 0;        // prompt processing up to the first generated token
  double decode_seconds = 0;         // every later token
};

// Index of the largest value; the first one on ties (as torch.argmax).
std::int32_t argmax(std::span<const float> logits);

// Generates from `prompt` on rank 0 of the runner's group, in a KV cache of its own
// (blocks 0.. in order). on_token, if set, sees each id as it is produced.
GenerateResult generate_sequence(StepRunner& runner, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token = {});

// The same on one rank.
GenerateResult generate_sequence(Model& model, KvCache& cache, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token = {});

}  // namespace saker
