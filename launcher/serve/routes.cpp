// Paths and methods → the API that answers them. Each family answers errors in its own shape:
// OpenAI under /v1/, DJL for /invocations and /ping, TGI elsewhere.
#include <spdlog/spdlog.h>

#include "launcher/serve/api.h"

namespace saker::serve {
namespace {

enum class Family { kOpenAi, kTgi, kDjl };

HttpResponse error_for(Family f, http::status s, const std::string& m) {
  switch (f) {
    case Family::kOpenAi:
      return openai_error(s, m);
    case Family::kDjl:
      return djl_error(s, m);
    case Family::kTgi:
      break;
  }
  return tgi_error(s, m);
}

http::status status_of(ErrorKind k, Family f) {
  switch (k) {
    case ErrorKind::kNotFound:
      return http::status::not_found;
    case ErrorKind::kOverloaded:
      return http::status::too_many_requests;
    case ErrorKind::kUnavailable:
      return http::status::service_unavailable;
    case ErrorKind::kValidation:
      break;
  }
  return f == Family::kTgi ? http::status::unprocessable_entity : http::status::bad_request;
}

bool ready(const ServeContext& ctx) {
  return ctx.queue.health() == Health::kReady;
}

HttpResponse text(http::status s, std::string body, const char* type) {
  HttpResponse res{s, 11};
  res.set(http::field::content_type, type);
  res.body() = std::move(body);
  return res;
}

}  // namespace

Router make_router(ServeContext& ctx) {
  return [&ctx](const HttpRequest& req) -> Routed {
    std::string path(req.target());
    if (const auto q = path.find('?'); q != std::string::npos) path.resize(q);
    const Family family = path.starts_with("/v1/")                    ? Family::kOpenAi
                          : path == "/invocations" || path == "/ping" ? Family::kDjl
                                                                      : Family::kTgi;
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    Routed out;
    auto answer = [&](HttpResponse r) {
      if (static_cast<int>(r.result()) >= 400) ctx.metrics.rejected(static_cast<int>(r.result()));
      out.response = std::move(r);
      return std::move(out);
    };
    auto wrong_method = [&](const char* allowed) {
      auto r = error_for(
          family, http::status::method_not_allowed,
          std::string(req.method_string()) + " is not allowed on " + path + "; use " + allowed);
      r.set(http::field::allow, allowed);
      return answer(std::move(r));
    };
    try {
      if (path == "/ping" || path == "/health") {
        if (!get) return wrong_method("GET");
        if (ready(ctx))
          return answer(path == "/ping" ? json_response(http::status::ok, {{"status", "Healthy"}})
                                        : text(http::status::ok, "", "text/plain"));
        const Health h = ctx.queue.health();
        const std::string why =
            h == Health::kLoading ? "the model is loading or warming up"
            : h == Health::kFailed
                ? "a step has been stuck for a long time: a rank may be hung or gone"
                : "the server is shutting down";
        return answer(error_for(family, http::status::service_unavailable, why));
      }
      if (path == "/metrics") {
        if (!get) return wrong_method("GET");
        return answer(text(http::status::ok, ctx.metrics.render(ctx.model_name),
                           "text/plain; version=0.0.4"));
      }
      if (path == "/info") {
        if (!get) return wrong_method("GET");
        return answer(json_response(
            http::status::ok,
            {{"model_id", ctx.model_name},
             {"max_input_tokens", ctx.max_input_len > 0 ? ctx.max_input_len : ctx.max_context - 1},
             {"max_total_tokens", ctx.max_context},
             {"max_concurrent_requests", ctx.queue.limit()},
             {"max_best_of", 1},
             {"max_stop_sequences", 16},
             {"validation_workers", 1},
             {"router", "saker"},
             {"version", "0.1.0"}}));
      }
      if (path == "/v1/models") {
        if (!get) return wrong_method("GET");
        return answer(json_response(
            http::status::ok, {{"object", "list"},
                               {"data", json::array({{{"id", ctx.model_name},
                                                      {"object", "model"},
                                                      {"created", 0},
                                                      {"owned_by", "saker"},
                                                      {"max_model_len", ctx.max_context}}})}}));
      }
      if (path == "/tokenize") {
        if (!post) return wrong_method("POST");
        const json body = parse_body(req);
        const json& in = body.contains("prompt")   ? body["prompt"]
                         : body.contains("inputs") ? body["inputs"]
                                                   : json();
        if (!in.is_string())
          throw ApiError(ErrorKind::kValidation, "`prompt` (or `inputs`) must be a string");
        const auto ids = ctx.tokenizer.encode(in.get<std::string>());
        return answer(json_response(
            http::status::ok,
            {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx.max_context}}));
      }
      const bool generation = path == "/v1/completions" || path == "/v1/chat/completions" ||
                              path == "/generate" || path == "/generate_stream" || path == "/" ||
                              path == "/invocations";
      if (!generation)
        return answer(error_for(family, http::status::not_found, "no route " + path));
      if (!post) return wrong_method("POST");
      const json body = parse_body(req);
      if (ctx.log_prompts) spdlog::info("{} body: {}", path, req.body());
      if (path == "/v1/completions")
        out.call = openai_completions(ctx, body);
      else if (path == "/v1/chat/completions")
        out.call = openai_chat(ctx, body);
      else if (path == "/invocations")
        out.call = djl_invocations(ctx, body, ctx.jsonlines_default);
      else
        out.call = tgi_generate(ctx, body, path == "/generate_stream", path == "/");
      return out;
    } catch (const ApiError& e) {
      return answer(error_for(family, status_of(e.kind, family), e.what()));
    } catch (const nlohmann::json::exception& e) {
      // A field of the wrong JSON type that no check above named.
      return answer(error_for(family, status_of(ErrorKind::kValidation, family),
                              std::string("a field has the wrong type: ") + e.what()));
    }
  };
}

}  // namespace saker::serve
