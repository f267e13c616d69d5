#include "engine/request.h"

#include "engine/constraints/compiler.h"

namespace saker {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEosToken:
      return "eos_token";
    case FinishReason::kStopSequence:
      return "stop_sequence";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kNone:
      break;
  }
  return "none";
}

void validate_request(const BatchRequest& r, const RequestLimits& limits) {
  using Kind = RequestError::Kind;
  auto fail = [](const char* field, const std::string& m) {
    throw RequestError(Kind::kInvalid, field, m);
  };
  const std::vector<std::int32_t>& prompt = r.prompt;
  const std::int64_t max_new_tokens = r.max_new_tokens, min_new_tokens = r.min_new_tokens;
  const std::int64_t vocab = limits.vocab;
  if (prompt.empty()) fail("prompt", "the prompt is empty");
  for (const std::int32_t t : prompt)
    if (t < 0 || t >= vocab)
      fail("prompt", "prompt token id " + std::to_string(t) + " is outside the vocabulary of " +
                         std::to_string(vocab));
  if (max_new_tokens < 1)
    fail("max_new_tokens", "max_new_tokens must be >= 1, got " + std::to_string(max_new_tokens));
  if (min_new_tokens < 0 || min_new_tokens > max_new_tokens)
    fail("min_new_tokens",
         "min_new_tokens must be in [0, max_new_tokens = " + std::to_string(max_new_tokens) +
             "], got " + std::to_string(min_new_tokens));
  if (r.logprobs > 20)
    fail("logprobs", "logprobs must be <= 20, got " + std::to_string(r.logprobs));
  for (const std::int32_t t : r.stop_token_ids)
    if (t < 0 || t >= vocab)
      fail("stop_token_ids", "stop token id " + std::to_string(t) +
                                 " is outside the vocabulary of " + std::to_string(vocab));
  try {
    r.sampling.validate();
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();  // "top_p must be in (0, 1], got 2": the name comes first
    throw RequestError(Kind::kInvalid, m.substr(0, m.find(' ')), m);
  }
  if (!r.stop.empty() && !limits.text) fail("stop", "stop strings need the model's tokenizer");
  if (r.constraint.active()) {
    const std::string& f = r.constraint.field;
    if (!limits.constraints)
      throw RequestError(Kind::kInvalid, f, f + ": structured outputs need the model's tokenizer");
    try {
      // Cached: the engine's compile is a lookup.
      const auto compiled = limits.constraints->compile(r.constraint);
      // The budget rule: an answer that cannot close within max_new_tokens is refused.
      if (const auto need = tokens_to_close(*compiled); need && *need > max_new_tokens)
        fail("max_new_tokens", "the budget of " + std::to_string(max_new_tokens) +
                                   " new tokens (max_tokens, max_new_tokens) cannot hold an "
                                   "answer to " +
                                   f + ": the shortest found takes " + std::to_string(*need) +
                                   " tokens");
    } catch (const ConstraintError& e) {
      throw RequestError(Kind::kInvalid, e.field(), e.what());
    }
  }
  const auto total = static_cast<std::int64_t>(prompt.size()) + max_new_tokens;
  if (total > limits.max_context)
    throw RequestError(Kind::kTooLong, "max_new_tokens",
                       "prompt tokens + max_new_tokens must be <= the context of " +
                           std::to_string(limits.max_context) + " tokens; given " +
                           std::to_string(prompt.size()) + " prompt tokens and " +
                           std::to_string(max_new_tokens) + " max_new_tokens");
}

}  // namespace saker
