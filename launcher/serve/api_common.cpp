#include "engine/bounded_json.h"
#include "launcher/serve/api.h"

namespace saker::serve {

json parse_body(const HttpRequest& req) {
  json j;
  try {
    j = parse_bounded_json<json>(req.body());
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

void check_lengths(const ServeContext& ctx, const BatchRequest& r) {
  const auto in = static_cast<std::int64_t>(r.prompt.size());
  if (in == 0) throw ApiError(ErrorKind::kValidation, "`inputs` must not be empty");
  const std::int64_t max_in = ctx.max_input_len > 0 ? ctx.max_input_len : ctx.max_context - 1;
  if (in > max_in)
    throw ApiError(ErrorKind::kValidation, "`inputs` must have less than " +
                                               std::to_string(max_in + 1) +
                                               " tokens. Given: " + std::to_string(in));
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
  r.prompt = ctx.tokenizer.encode(text);
  if (r.truncate > 0 && static_cast<std::int64_t>(r.prompt.size()) > r.truncate)
    r.prompt.erase(r.prompt.begin(), r.prompt.end() - r.truncate);
  check_lengths(ctx, r);
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
