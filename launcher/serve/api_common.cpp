#include "engine/bounded_json.h"
#include "launcher/serve/api.h"

namespace saker::serve {

json parse_body(const HttpRequest& req, int max_depth) {
  json j;
  try {
    j = parse_bounded_json<json>(req.body(), max_depth);
  } catch (const JsonTooDeep& e) {
    throw ApiError(ErrorKind::kValidation, std::string("the request body is ") + e.what());
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos || what.find("utf-8") != std::string::npos)
      throw ApiError(ErrorKind::kValidation, "the request body is not valid UTF-8: " + what);
    throw ApiError(ErrorKind::kValidation, "the request body is not valid JSON: " + what);
  }
  if (!j.is_object())
    throw ApiError(ErrorKind::kValidation, "the request body must be a JSON object");
  return j;
}

namespace {

std::int64_t max_input(const ServeContext& ctx) {
  return ctx.max_input_len > 0 ? ctx.max_input_len : ctx.max_context - 1;
}

[[noreturn]] void too_long(std::int64_t max_in, const std::string& given) {
  throw ApiError(
      ErrorKind::kValidation,
      "`inputs` must have less than " + std::to_string(max_in + 1) + " tokens. Given: " + given);
}

}  // namespace

void check_lengths(const ServeContext& ctx, const BatchRequest& r) {
  const auto in = static_cast<std::int64_t>(r.prompt.size());
  if (in == 0) throw ApiError(ErrorKind::kValidation, "`inputs` must not be empty");
  const std::int64_t max_in = max_input(ctx);
  if (in > max_in) too_long(max_in, std::to_string(in));
  if (ctx.max_output_len > 0 && r.max_new_tokens > ctx.max_output_len)
    throw ApiError(ErrorKind::kValidation,
                   "`max_new_tokens` must be <= " + std::to_string(ctx.max_output_len) +
                       ". Given: " + std::to_string(r.max_new_tokens));
  if (in + r.max_new_tokens > ctx.max_context)
    throw ApiError(
        ErrorKind::kValidation,
        "`inputs` tokens + `max_new_tokens` must be <= " + std::to_string(ctx.max_context) +
            ". Given: " + std::to_string(in) + " `inputs` tokens and " +
            std::to_string(r.max_new_tokens) + " `max_new_tokens`");
}

void set_prompt(const ServeContext& ctx, const std::string& text, BatchRequest& r) {
  // A text longer than the longest prompt of max_in tokens (each of the longest token) is refused
  // unread: tokenizing megabytes only to say they do not fit would cost the server seconds.
  const std::int64_t max_in = max_input(ctx);
  const std::size_t max_bytes = static_cast<std::size_t>(max_in) * ctx.max_token_bytes;
  if (r.truncate == 0 && ctx.max_token_bytes > 0 && text.size() > max_bytes)
    throw ApiError(ErrorKind::kValidation,
                   "`inputs` is " + std::to_string(text.size()) + " bytes; a prompt of at most " +
                       std::to_string(max_in) + " tokens is at most " + std::to_string(max_bytes) +
                       " bytes (no token is longer than " + std::to_string(ctx.max_token_bytes) +
                       ")");
  r.prompt = ctx.tokenizer.encode(text);
  if (r.truncate > 0 && static_cast<std::int64_t>(r.prompt.size()) > r.truncate)
    r.prompt.erase(r.prompt.begin(), r.prompt.end() - r.truncate);
  check_lengths(ctx, r);
}

void check_choices(const ServeContext& ctx, std::size_t prompts, std::int64_t n) {
  const auto choices = static_cast<std::int64_t>(prompts) * n;
  if (choices > ctx.max_choices)
    throw ApiError(ErrorKind::kValidation,
                   std::to_string(prompts) + " prompts x n = " + std::to_string(n) + " make " +
                       std::to_string(choices) + " sequences; one request may ask for at most " +
                       std::to_string(ctx.max_choices));
}

void count_work(const ServeContext& ctx, const BatchRequest& r, std::int64_t copies,
                std::int64_t& total) {
  const std::int64_t limit =
      ctx.max_request_tokens > 0 ? ctx.max_request_tokens : ctx.max_choices * ctx.max_context;
  total += copies * (static_cast<std::int64_t>(r.prompt.size()) + r.max_new_tokens);
  if (total > limit)
    throw ApiError(ErrorKind::kValidation,
                   "the request's sequences add up to more than " + std::to_string(limit) +
                       " tokens (prompt + max new tokens, each); that is the limit of one request");
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse json_response(http::status s, const json& body, unsigned version) {
  HttpResponse res{s, version};
  res.set(http::field::content_type, "application/json");
  res.body() = dump(body);
  return res;
}

}  // namespace saker::serve
