// Hugging Face TGI (POST /generate, /generate_stream, and / as its client sends) and SageMaker /
// DJL Serving (POST /invocations, JSON or jsonlines streaming).
#include <random>

#include "launcher/serve/api.h"
#include "launcher/serve/request_params.h"

namespace saker::serve {
namespace {

// Parameters as TGI and DJL spell them; an unseeded sampling request gets a random seed, which
// is reported back (TGI's `seed` detail) so it can be replayed.
BatchRequest request_from(const json& body, std::int64_t default_max_new) {
  BatchRequest r;
  r.max_new_tokens = default_max_new;
  const json params = body.contains("parameters") ? body["parameters"] : json::object();
  try {
    cli::apply_parameters(params, r);
  } catch (const std::invalid_argument& e) {
    throw ApiError(ErrorKind::kValidation, e.what());
  }
  if (!r.sampling.greedy() &&
      !(params.is_object() && params.contains("seed") && !params["seed"].is_null()))
    r.sampling.seed = std::random_device{}();
  return r;
}

bool flag(const json& body, const char* key) {
  const json& p = body.contains("parameters") ? body["parameters"] : json::object();
  return p.is_object() && p.contains(key) && p[key].is_boolean() && p[key].get<bool>();
}

std::string token_text(const ServeContext& ctx, std::int32_t id) {
  return ctx.tokenizer.decode(std::span(&id, 1), false);
}

class TgiCall final : public Call {
 public:
  TgiCall(ServeContext& ctx, bool compat_list) : ctx_(ctx), compat_list_(compat_list) {}
  bool details = false, full_text = false;
  std::string inputs;

  std::string on_update(std::size_t, const RequestEvent& u) override {
    json token = {{"id", u.token},
                  {"text", u.text},
                  {"logprob", u.logprob},
                  {"special", ctx_.special_ids.count(u.token) > 0}};
    json ev = {{"index", u.index},
               {"token", token},
               {"top_tokens", nullptr},
               {"generated_text", nullptr},
               {"details", nullptr}};
    if (!u.top.empty()) {
      json top = json::array();
      for (const TokenLogprob& t : u.top)
        top.push_back({{"id", t.id},
                       {"text", token_text(ctx_, t.id)},
                       {"logprob", t.logprob},
                       {"special", ctx_.special_ids.count(t.id) > 0}});
      ev["top_tokens"] = top;
    }
    if (u.finish != FinishReason::kNone && u.result) {
      ev["generated_text"] = (full_text ? inputs : "") + u.result->text;
      ev["details"] = {{"finish_reason", finish_reason_name(u.result->finish)},
                       {"generated_tokens", u.result->tokens.size()},
                       {"seed", seed()}};
    }
    if (u.token < 0) return "";  // a cancellation carries no token
    return "data:" + dump(ev) + "\n\n";
  }

  HttpResponse final_response(const std::vector<std::shared_ptr<const BatchResult>>& rs) override {
    const BatchResult& r = *rs.at(0);
    json out = {{"generated_text", (full_text ? inputs : "") + r.text}};
    if (details) {
      json tokens = json::array();
      for (std::size_t i = 0; i < r.tokens.size(); ++i)
        tokens.push_back({{"id", r.tokens[i]},
                          {"text", token_text(ctx_, r.tokens[i])},
                          {"logprob", i < r.logprobs.size() ? json(r.logprobs[i]) : json(nullptr)},
                          {"special", ctx_.special_ids.count(r.tokens[i]) > 0}});
      out["details"] = {{"finish_reason", finish_reason_name(r.finish)},
                        {"generated_tokens", r.tokens.size()},
                        {"seed", seed()},
                        {"prefill", json::array()},
                        {"tokens", tokens}};
    }
    return json_response(http::status::ok, compat_list_ ? json::array({out}) : out);
  }
  HttpResponse error(http::status s, const std::string& m) override { return tgi_error(s, m); }
  std::string stream_error(const std::string& m) override {
    return "data:" + dump({{"error", m}, {"error_type", "generation"}}) + "\n\n";
  }
  json seed() const {
    const SamplingParams& s = sampling_;
    return s.greedy() ? json(nullptr) : json(s.seed);
  }
  SamplingParams sampling_;

 private:
  ServeContext& ctx_;
  bool compat_list_;
};

class DjlCall final : public Call {
 public:
  explicit DjlCall(ServeContext& ctx) : ctx_(ctx) {}
  bool details = false, full_text = false, list = false;
  std::vector<std::string> inputs;

  std::string stream_content_type() const override { return "application/jsonlines"; }
  std::string on_update(std::size_t, const RequestEvent& u) override {
    if (u.token < 0) return "";
    json line = {{"token", {{"id", u.token}, {"text", u.text}, {"log_prob", u.logprob}}}};
    if (u.finish != FinishReason::kNone && u.result) {
      line["generated_text"] = (full_text ? inputs.at(0) : "") + u.result->text;
      line["details"] = details_of(*u.result, 0);
    }
    return dump(line) + "\n";
  }
  HttpResponse final_response(const std::vector<std::shared_ptr<const BatchResult>>& rs) override {
    json all = json::array();
    for (std::size_t i = 0; i < rs.size(); ++i) {
      json out = {{"generated_text", (full_text ? inputs[i] : "") + rs[i]->text}};
      if (details) out["details"] = details_of(*rs[i], i);
      all.push_back(out);
    }
    return json_response(http::status::ok, list ? all : all[0]);
  }
  HttpResponse error(http::status s, const std::string& m) override { return djl_error(s, m); }
  std::string stream_error(const std::string& m) override {
    return dump({{"error", m}, {"code", 424}}) + "\n";
  }

 private:
  json details_of(const BatchResult& r, std::size_t i) const {
    json tokens = json::array();
    for (std::size_t t = 0; t < r.tokens.size(); ++t)
      tokens.push_back({{"id", r.tokens[t]},
                        {"text", token_text(ctx_, r.tokens[t])},
                        {"log_prob", t < r.logprobs.size() ? json(r.logprobs[t]) : json(nullptr)}});
    return {{"finish_reason", finish_reason_name(r.finish)},
            {"generated_tokens", r.tokens.size()},
            {"inputs", inputs.at(i)},
            {"tokens", tokens}};
  }
  ServeContext& ctx_;
};

}  // namespace

HttpResponse tgi_error(http::status s, const std::string& message) {
  const char* type = s == http::status::unprocessable_entity  ? "validation"
                     : s == http::status::too_many_requests   ? "overloaded"
                     : s == http::status::service_unavailable ? "unhealthy"
                     : s == http::status::failed_dependency   ? "generation"
                                                              : "validation";
  // TGI answers every refusal of a request's content with 422.
  if (s == http::status::bad_request) s = http::status::unprocessable_entity;
  return json_response(s, {{"error", message}, {"error_type", type}});
}

HttpResponse djl_error(http::status s, const std::string& message) {
  return json_response(s, {{"error", message}, {"code", static_cast<int>(s)}});
}

std::unique_ptr<Call> tgi_generate(ServeContext& ctx, const json& body, bool stream,
                                   bool compat_list) {
  if (!body.contains("inputs") || !body["inputs"].is_string())
    throw ApiError(ErrorKind::kValidation, "`inputs` must be a string");
  auto call = std::make_unique<TgiCall>(ctx, compat_list);
  BatchRequest r = request_from(body, 100);  // TGI's default max_new_tokens
  r.logprobs = std::max(r.logprobs, 0);      // TGI always reports each token's logprob
  call->inputs = body["inputs"].get<std::string>();
  set_prompt(ctx, call->inputs, r);
  call->details = flag(body, "details");
  call->full_text = flag(body, "return_full_text");
  call->sampling_ = r.sampling;
  if (body.contains("stream") && !body["stream"].is_null() && !body["stream"].is_boolean())
    throw ApiError(ErrorKind::kValidation,
                   "`stream` must be true or false, got " + dump(body["stream"]));
  call->stream = stream || (compat_list && body.contains("stream") && body["stream"].is_boolean() &&
                            body["stream"].get<bool>());
  call->route = stream ? "/generate_stream" : compat_list ? "/" : "/generate";
  call->requests.push_back(std::move(r));
  return call;
}

std::unique_ptr<Call> djl_invocations(ServeContext& ctx, const json& body, bool jsonlines_default) {
  auto call = std::make_unique<DjlCall>(ctx);
  const json& in = body.contains("inputs") ? body["inputs"] : json();
  if (in.is_string()) {
    call->inputs.push_back(in.get<std::string>());
  } else if (in.is_array() && !in.empty()) {
    for (const json& s : in) {
      if (!s.is_string())
        throw ApiError(ErrorKind::kValidation, "`inputs` must be a string or a list of strings");
      call->inputs.push_back(s.get<std::string>());
    }
    call->list = true;
  } else {
    throw ApiError(ErrorKind::kValidation,
                   "`inputs` must be a string or a non-empty list of strings");
  }
  if (body.contains("stream") && !body["stream"].is_null() && !body["stream"].is_boolean())
    throw ApiError(ErrorKind::kValidation,
                   "`stream` must be true or false, got " + dump(body["stream"]));
  call->stream = body.contains("stream") && body["stream"].is_boolean() ? body["stream"].get<bool>()
                                                                        : jsonlines_default;
  if (call->stream && call->list)
    throw ApiError(ErrorKind::kValidation,
                   "streaming takes one input; send a list without `stream`");
  call->details = flag(body, "details");
  call->full_text = flag(body, "return_full_text");
  call->route = "/invocations";
  check_choices(ctx, call->inputs.size(), 1);
  BatchRequest proto = request_from(body, 30);  // DJL's default max_new_tokens
  proto.logprobs = std::max(proto.logprobs, 0);
  std::int64_t work = 0;
  const json& params = body.contains("parameters") ? body["parameters"] : json();
  const bool seeded = params.is_object() && params.contains("seed") && !params["seed"].is_null();
  for (const std::string& text : call->inputs) {
    BatchRequest r = proto;
    if (!call->requests.empty() && !seeded && !r.sampling.greedy())
      r.sampling.seed = std::random_device{}();  // each input its own draw, as when sent alone
    set_prompt(ctx, text, r);
    count_work(ctx, r, 1, work);
    call->requests.push_back(std::move(r));
  }
  return call;
}

}  // namespace saker::serve
