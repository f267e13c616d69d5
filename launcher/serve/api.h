// What the three HTTP APIs (OpenAI, TGI, SageMaker/DJL) share: the serving context, validation
// that names the problem and the limit, and JSON replies.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/bounded_json.h"
#include "engine/chat_template/chat_template.h"
#include "engine/request_queue.h"
#include "engine/tokenizer/tokenizer.h"
#include "launcher/serve/call.h"
#include "launcher/serve/metrics.h"

namespace saker::serve {

using json = nlohmann::ordered_json;

struct ServeContext {
  RequestQueue& queue;
  ServingMetrics& metrics;
  const Tokenizer& tokenizer;
  std::int64_t vocab_size = 0;
  std::string model_name;
  std::int64_t max_context = 0;     // prompt + new tokens
  std::int64_t max_input_len = 0;   // prompt tokens (option.max_input_len; 0: max_context - 1)
  std::int64_t max_output_len = 0;  // new tokens (option.max_output_len; 0: no own limit)
  bool log_prompts = false;
  bool jsonlines_default = false;  // option.output_formatter=jsonlines: /invocations streams
  std::set<std::int32_t> special_ids;
  // The checkpoint's chat template (tokenizer_config.json or chat_template.jinja) and its
  // variables (bos_token, eos_token); without one, chat uses the Falcon instruct format.
  std::optional<ChatTemplate> chat_template;
  std::map<std::string, std::string> chat_vars;
  // Non-empty: every route but /ping and /health (and /metrics unless metrics_need_key) needs
  // `Authorization: Bearer <api_key>` (vLLM's --api-key; OpenAI and TGI clients send it).
  std::string api_key;
  bool metrics_need_key = false;
  // Bounds on one request's cost, checked before anything is built (docs/security.md).
  int max_json_depth = kMaxJsonDepth;
  std::int64_t max_choices = 64;        // prompts x n in one call
  std::int64_t max_request_tokens = 0;  // sum over choices of prompt + new tokens (0: 64 x context)
  std::size_t max_token_bytes = 0;      // the longest token's bytes (tokenizer), for early refusal
};

// A request the API refuses; each API turns the kind into its own status and shape.
enum class ErrorKind { kValidation, kNotFound, kOverloaded, kUnavailable };
class ApiError : public std::runtime_error {
 public:
  ApiError(ErrorKind k, const std::string& m) : std::runtime_error(m), kind(k) {}
  ErrorKind kind;
};

// The request body as a JSON object; ApiError naming what is wrong otherwise (bad syntax, invalid
// UTF-8, not an object).
json parse_body(const HttpRequest& req, int max_depth);

// Encodes `text` (truncated to its last r.truncate tokens when asked) into r.prompt and checks the
// lengths against the model: "`inputs` tokens + `max_new_tokens` must be <= 2048. Given: ...".
void set_prompt(const ServeContext& ctx, const std::string& text, BatchRequest& r);
void check_lengths(const ServeContext& ctx, const BatchRequest& r);
// A call's total work, bounded before its requests are built: prompts x n sequences at most
// ctx.max_choices; then, as each prompt is tokenized, `copies` x (prompt + max new tokens) added
// to `total` must stay within ctx.max_request_tokens.
void check_choices(const ServeContext& ctx, std::size_t prompts, std::int64_t n);
void count_work(const ServeContext& ctx, const BatchRequest& r, std::int64_t copies,
                std::int64_t& total);

HttpResponse json_response(http::status s, const json& body, unsigned version = 11);
std::string dump(const json& j);  // invalid UTF-8 in generated text becomes U+FFFD

Router make_router(ServeContext& ctx);
std::unique_ptr<Call> openai_completions(ServeContext& ctx, const json& body);
std::unique_ptr<Call> openai_chat(ServeContext& ctx, const json& body);
HttpResponse openai_error(http::status s, const std::string& message);
std::unique_ptr<Call> tgi_generate(ServeContext& ctx, const json& body, bool stream,
                                   bool compat_list);
HttpResponse tgi_error(http::status s, const std::string& message);
std::unique_ptr<Call> djl_invocations(ServeContext& ctx, const json& body, bool jsonlines_default);
HttpResponse djl_error(http::status s, const std::string& message);

}  // namespace saker::serve
