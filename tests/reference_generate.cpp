#include "tests/reference_generate.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <thread>

#include "engine/batch_engine.h"

namespace saker {

void run_to_completion(BatchEngine& engine) {
  while (!engine.idle()) {
    // A dynamic batch may be gathering: wait for it rather than spin.
    if (!engine.step()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

GenerateResult generate_sequence(Model& model, KvCache& cache, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token) {
  SingleRankCommunicator single;
  StepRunner runner(model, cache, single);
  return generate_sequence(runner, prompt, opt, on_token);
}

GenerateResult generate_sequence(StepRunner& runner, std::span<const std::int32_t> prompt,
                                 const GenerateOptions& opt,
                                 const std::function<void(std::int32_t)>& on_token) {
  Model& model = runner.model();
  KvCache& cache = runner.cache();
  if (prompt.empty()) throw std::invalid_argument("the prompt is empty");
  opt.sampling.validate();
  if (opt.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + opt.max_new_tokens;
  const std::int64_t limit = std::min(model.options().max_context, cache.capacity_tokens());
  if (total > limit)
    throw std::length_error("prompt of " + std::to_string(prompt.size()) + " tokens + " +
                            std::to_string(opt.max_new_tokens) +
                            " new tokens exceeds the context of " + std::to_string(limit) +
                            " tokens");
  std::vector<std::int32_t> table(static_cast<std::size_t>(cache.blocks_for(total)));
  std::iota(table.begin(), table.end(), 0);

  GenerateResult res;
  res.finish_reason = "length";
  if (opt.max_new_tokens == 0) return res;
  const auto t0 = std::chrono::steady_clock::now();
  // Prefill in chunks of at most max_tokens; only the last chunk's last logits matter.
  std::span<const float> logits;
  const auto chunk = static_cast<std::size_t>(model.options().max_tokens);
  for (std::size_t pos = 0; pos < prompt.size(); pos += chunk) {
    const SequenceStep step{prompt.subspan(pos, std::min(chunk, prompt.size() - pos)),
                            static_cast<std::int32_t>(pos), table, false};
    logits = runner.step({&step, 1});
  }
  auto t1 = std::chrono::steady_clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  std::int32_t pos = static_cast<std::int32_t>(prompt.size());
  std::optional<Sampler> sampler;
  std::vector<float> scratch;  // the sampler works on a copy: penalties change the logits
  if (!opt.sampling.plain_greedy()) sampler.emplace(model.shape().vocab_size);
  for (;;) {
    std::int32_t next;
    if (sampler) {
      scratch.assign(logits.begin(), logits.end());
      next = sampler->sample(scratch, opt.sampling, prompt, res.tokens, pos);
    } else {
      next = argmax(logits);
    }
    res.tokens.push_back(next);
    if (on_token) on_token(next);
    if (!opt.ignore_eos && std::find(opt.eos_token_ids.begin(), opt.eos_token_ids.end(), next) !=
                               opt.eos_token_ids.end()) {
      res.finish_reason = "eos";
      break;
    }
    if (static_cast<std::int64_t>(res.tokens.size()) >= opt.max_new_tokens) break;
    const SequenceStep step{{&res.tokens.back(), 1}, pos++, table, false};
    logits = runner.step({&step, 1});
  }
  res.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  return res;
}

std::vector<float> prompt_logits(Model& model, Backend& backend, DType kv_dtype,
                                 std::span<const std::int32_t> prompt) {
  KvShape kv = model.kv_shape();
  kv.dtype = kv_dtype;
  KvCache cache(backend, kv, 64, 4);
  std::vector<std::int32_t> table(64);
  std::iota(table.begin(), table.end(), 0);
  const SequenceStep step{prompt, 0, table, true};
  const auto logits = model.forward({&step, 1}, cache);
  return {logits.begin(), logits.end()};
}

}  // namespace saker
