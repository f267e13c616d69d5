// A generation request as every frontend hands it to the batch engine, and what comes back: one
// event per generated token while it runs, then the result.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/constraints/constraint.h"
#include "engine/sampler.h"

namespace saker {

// TGI's and DJL's names; the OpenAI frontend maps eos_token and stop_sequence to "stop".
enum class FinishReason { kNone, kLength, kEosToken, kStopSequence, kCancelled };
const char* finish_reason_name(FinishReason r);

struct BatchRequest {
  std::uint64_t id = 0;
  std::vector<std::int32_t> prompt;
  std::int64_t max_new_tokens = 16;
  std::int64_t min_new_tokens = 0;  // eos, stop ids and stop strings are ignored before this
  SamplingParams sampling = greedy_sampling();
  bool ignore_eos = false;
  std::vector<std::int32_t> stop_token_ids;  // end the sequence like eos (finish: eos_token)
  std::vector<std::string> stop;             // text, matched across tokens and not emitted
  std::int32_t logprobs = -1;  // < 0: none; n: the chosen token's and the n most likely ones'
  double arrival = -1;         // seconds on the engine's clock; < 0: when added
  std::int64_t truncate = 0;   // > 0: the frontend keeps only the prompt's last `truncate` tokens
  std::string cache_salt;      // non-empty: reuses only cached prefixes of the same salt
  Constraint constraint;       // structured output (JSON schema, regex, choice, grammar)
};

class ConstraintCompiler;

// What a request is checked against: the model's vocabulary and context, and whether the engine
// has a tokenizer (stop strings need one).
struct RequestLimits {
  std::int64_t vocab = 0;
  std::int64_t max_context = 0;  // prompt + new tokens
  bool text = false;
  // Compiles structured-output constraints (null without a tokenizer: none are accepted).
  std::shared_ptr<const ConstraintCompiler> constraints;
};

// A request the engine refuses, naming the field, the value and the limit in neutral words;
// each frontend maps it to its own status and wording. kTooLong: the prompt and the tokens asked
// for exceed the context (some APIs word that their own way); kNoCapacity: the request can never
// fit the KV pool.
class RequestError : public std::invalid_argument {
 public:
  enum class Kind { kInvalid, kTooLong, kNoCapacity };
  RequestError(Kind kind, std::string field, const std::string& message)
      : std::invalid_argument(message), kind_(kind), field_(std::move(field)) {}
  Kind kind() const { return kind_; }
  const std::string& field() const { return field_; }  // e.g. "max_new_tokens", "prompt"

 private:
  Kind kind_;
  std::string field_;
};

// The one check every request passes at ingress (RequestQueue::submit, offline jobs before any
// work): throws RequestError.
void validate_request(const BatchRequest& r, const RequestLimits& limits);

struct TokenLogprob {
  std::int32_t id = 0;
  float logprob = 0;
};

// One generated token, as it is produced.
struct TokenEvent {
  std::uint64_t id = 0;
  std::int32_t token = 0;
  std::int64_t index = 0;  // among the generated tokens
  // Text this token releases: whole UTF-8 characters, anything that may begin a stop string held
  // back, a matched stop string and what follows it never released. Empty without a tokenizer.
  std::string_view text;
  float logprob = 0;                          // when the request asked for logprobs
  std::span<const TokenLogprob> top;          // its `logprobs` most likely alternatives, best first
  FinishReason finish = FinishReason::kNone;  // set on a sequence's last event
};

struct BatchResult {
  std::vector<std::int32_t> tokens;  // generated, the eos or stop id included
  std::string text;                  // the detokenized output, cut before a stop string
  FinishReason finish = FinishReason::kNone;
  std::int64_t prompt_tokens = 0;
  std::int64_t cached_tokens = 0;  // of the prompt, served from the prefix cache
  std::vector<float> logprobs;     // per generated token, when asked
  std::vector<std::vector<TokenLogprob>> top_logprobs;                // likewise
  double arrival = 0, scheduled = -1, first_token = 0, finished = 0;  // engine clock, seconds
  std::vector<double> token_times;  // when each token was produced
};

}  // namespace saker
