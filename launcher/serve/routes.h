// The HTTP routes as a table: one row per method and path, naming the API whose error shapes the
// path answers in and the handler. make_router (api.h) looks the path up in it.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "launcher/serve/call.h"

namespace saker::serve {

struct ServeContext;

// Each family answers errors in its own shape and status: OpenAI under /v1/, DJL for
// /invocations and /ping, TGI elsewhere.
enum class ApiFamily { kOpenAi, kTgi, kDjl };

// A route that answers at once (health, metrics, info, ...); throws ApiError to refuse.
using Answer = HttpResponse (*)(ServeContext& ctx, const HttpRequest& req);
// A generation route: the request's JSON body becomes a Call for the engine.
using Generate = std::unique_ptr<Call> (*)(ServeContext& ctx, const nlohmann::ordered_json& body);

struct Route {
  http::verb method;
  std::string_view path;  // exact, without the query string
  ApiFamily family;
  std::variant<Answer, Generate> handler;
};

// Every route the HTTP server answers.
std::span<const Route> routes();

}  // namespace saker::serve
