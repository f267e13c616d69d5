// The test oracle: one sequence generated the plainest way (chunked prefill, then one token per
// step through the step runner, in a KV cache of its own), to check the engine's rolling batch
// against. The product decodes through the engine (engine/engine.h) only.
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

class BatchEngine;
// Steps the batch engine until every request has finished (tests drive it without the engine's
// loop).
void run_to_completion(BatchEngine& engine);

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

// Generates from `prompt` on rank 0 of the runner's group, in a KV cache of its own
// (blocks 0.. in order). on_token, if set, sees each id as it is produced.
GenerateResult generate_sequence(StepRunner& runner, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token = {});

// The same on one rank.
GenerateResult generate_sequence(Model& model, KvCache& cache, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token = {});

// Logits of every prompt position [prompt.size()][vocab], the whole prompt in one step from
// position 0, in a fresh 64-block cache of 4-token blocks holding `kv_dtype`.
std::vector<float> prompt_logits(Model& model, Backend& backend, DType kv_dtype,
                                 std::span<const std::int32_t> prompt);

}  // namespace saker
