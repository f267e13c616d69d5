// Paths and methods → the API that answers them, as a table: adding a route is one row.
#include "launcher/serve/routes.h"

#include <string>
#include <variant>

#include <spdlog/spdlog.h>

#include "launcher/serve/api.h"

namespace saker::serve {
namespace {

HttpResponse error_for(ApiFamily f, http::status s, const std::string& m) {
  switch (f) {
    case ApiFamily::kOpenAi:
      return openai_error(s, m);
    case ApiFamily::kDjl:
      return djl_error(s, m);
    case ApiFamily::kTgi:
      break;
  }
  return tgi_error(s, m);
}

http::status status_of(ErrorKind k, ApiFamily f) {
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
  return f == ApiFamily::kTgi ? http::status::unprocessable_entity : http::status::bad_request;
}

// Whether the request carries `Authorization: Bearer <key>`. The comparison takes the same time
// wherever the first difference is, so the key cannot be guessed a byte at a time.
bool authorized(const HttpRequest& req, const std::string& key) {
  const auto it = req.find(http::field::authorization);
  if (it == req.end()) return false;
  const std::string_view given(it->value().data(), it->value().size());
  constexpr std::string_view kScheme = "Bearer ";
  if (!given.starts_with(kScheme)) return false;
  const std::string_view token = given.substr(kScheme.size());
  unsigned diff = token.size() == key.size() ? 0 : 1;
  for (std::size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>(key[i]) ^
            static_cast<unsigned char>(i < token.size() ? token[i] : 0);
  return diff == 0;
}

// Routes a load balancer or an orchestrator probes without credentials.
bool open_route(const ServeContext& ctx, const std::string& path) {
  return path == "/ping" || path == "/health" || (path == "/metrics" && !ctx.metrics_need_key);
}

HttpResponse text(http::status s, std::string body, const char* type) {
  HttpResponse res{s, 11};
  res.set(http::field::content_type, type);
  res.body() = std::move(body);
  return res;
}

// The health checks answer 503, in their family's shape, until the model can serve.
void require_ready(const ServeContext& ctx) {
  const Health h = ctx.queue.health();
  if (h == Health::kReady) return;
  throw ApiError(ErrorKind::kUnavailable,
                 h == Health::kLoading ? "the model is loading or warming up"
                 : h == Health::kFailed
                     ? "a step has been stuck for a long time: a rank may be hung or gone"
                     : "the server is shutting down");
}

HttpResponse ping(ServeContext& ctx, const HttpRequest&) {
  require_ready(ctx);
  return json_response(http::status::ok, {{"status", "Healthy"}});
}

HttpResponse health(ServeContext& ctx, const HttpRequest&) {
  require_ready(ctx);
  return text(http::status::ok, "", "text/plain");
}

HttpResponse metrics(ServeContext& ctx, const HttpRequest&) {
  return text(http::status::ok, ctx.metrics.render(ctx.model_name), "text/plain; version=0.0.4");
}

HttpResponse info(ServeContext& ctx, const HttpRequest&) {
  return json_response(
      http::status::ok,
      {{"model_id", ctx.model_name},
       {"max_input_tokens", ctx.max_input_len > 0 ? ctx.max_input_len : ctx.max_context - 1},
       {"max_total_tokens", ctx.max_context},
       {"max_concurrent_requests", ctx.queue.limit()},
       {"max_best_of", 1},
       {"max_stop_sequences", 16},
       {"validation_workers", 1},
       {"router", "saker"},
       {"version", "0.1.0"}});
}

HttpResponse models(ServeContext& ctx, const HttpRequest&) {
  return json_response(http::status::ok,
                       {{"object", "list"},
                        {"data", json::array({{{"id", ctx.model_name},
                                               {"object", "model"},
                                               {"created", 0},
                                               {"owned_by", "saker"},
                                               {"max_model_len", ctx.max_context}}})}});
}

HttpResponse tokenize(ServeContext& ctx, const HttpRequest& req) {
  const json body = parse_body(req, ctx.max_json_depth);
  const json& in = body.contains("prompt")   ? body["prompt"]
                   : body.contains("inputs") ? body["inputs"]
                                             : json();
  if (!in.is_string())
    throw ApiError(ErrorKind::kValidation, "`prompt` (or `inputs`) must be a string");
  const auto ids = ctx.tokenizer.encode(in.get<std::string>());
  return json_response(
      http::status::ok,
      {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx.max_context}});
}

std::unique_ptr<Call> generate(ServeContext& ctx, const json& body) {
  return tgi_generate(ctx, body, false, false);
}
std::unique_ptr<Call> generate_stream(ServeContext& ctx, const json& body) {
  return tgi_generate(ctx, body, true, false);
}
// POST / is TGI's compatibility route: a list of one result, streaming when asked.
std::unique_ptr<Call> generate_compat(ServeContext& ctx, const json& body) {
  return tgi_generate(ctx, body, false, true);
}
std::unique_ptr<Call> invocations(ServeContext& ctx, const json& body) {
  return djl_invocations(ctx, body, ctx.jsonlines_default);
}

}  // namespace

std::span<const Route> routes() {
  using enum http::verb;
  using enum ApiFamily;
  static constexpr Route kRoutes[] = {
      {get, "/ping", kDjl, ping},
      {get, "/health", kTgi, health},
      {get, "/metrics", kTgi, metrics},
      {get, "/info", kTgi, info},
      {get, "/v1/models", kOpenAi, models},
      {post, "/tokenize", kTgi, tokenize},
      {post, "/v1/completions", kOpenAi, openai_completions},
      {post, "/v1/chat/completions", kOpenAi, openai_chat},
      {post, "/generate", kTgi, generate},
      {post, "/generate_stream", kTgi, generate_stream},
      {post, "/", kTgi, generate_compat},
      {post, "/invocations", kDjl, invocations},
  };
  return kRoutes;
}

Router make_router(ServeContext& ctx) {
  return [&ctx](const HttpRequest& req) -> Routed {
    std::string path(req.target());
    if (const auto q = path.find('?'); q != std::string::npos) path.resize(q);
    const Route* route = nullptr;  // the path's row for this method
    const Route* named = nullptr;  // any row of the path
    std::string allowed;           // the methods of the path's rows, for 405's Allow
    for (const Route& r : routes()) {
      if (r.path != path) continue;
      named = &r;
      if (r.method == req.method()) route = &r;
      allowed += (allowed.empty() ? "" : ", ") + std::string(http::to_string(r.method));
    }
    // A path no row names answers in the shape its prefix suggests.
    const ApiFamily family = named                      ? named->family
                             : path.starts_with("/v1/") ? ApiFamily::kOpenAi
                                                        : ApiFamily::kTgi;
    Routed out;
    auto answer = [&](HttpResponse r) {
      if (static_cast<int>(r.result()) >= 400) ctx.metrics.rejected(static_cast<int>(r.result()));
      out.response = std::move(r);
      return std::move(out);
    };
    if (!ctx.api_key.empty() && !open_route(ctx, path) && !authorized(req, ctx.api_key)) {
      auto r = error_for(family, http::status::unauthorized,
                         "missing or wrong API key: send Authorization: Bearer <key>");
      r.set(http::field::www_authenticate, "Bearer");
      return answer(std::move(r));
    }
    if (!named) return answer(error_for(family, http::status::not_found, "no route " + path));
    if (!route) {
      auto r = error_for(
          family, http::status::method_not_allowed,
          std::string(req.method_string()) + " is not allowed on " + path + "; use " + allowed);
      r.set(http::field::allow, allowed);
      return answer(std::move(r));
    }
    try {
      if (const auto* respond = std::get_if<Answer>(&route->handler))
        return answer((*respond)(ctx, req));
      const json body = parse_body(req, ctx.max_json_depth);
      if (ctx.log_prompts) spdlog::info("{} body: {}", path, req.body());
      out.call = std::get<Generate>(route->handler)(ctx, body);
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
