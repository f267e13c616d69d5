// The OpenAI API as vLLM serves it: POST /v1/completions and /v1/chat/completions, JSON or
// server-sent events ending with `data: [DONE]`.
#include <algorithm>
#include <chrono>
#include <map>
#include <random>

#include "launcher/serve/api.h"
#include "launcher/serve/request_params.h"

namespace saker::serve {
namespace {

std::string random_id(const char* prefix) {
  static const char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kHex[rd() % 16];
  return id;
}

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* openai_reason(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    default:
      return "stop";
  }
}

// Fields that shape the reply rather than the generation; everything else goes to the engine.
const std::set<std::string> kShapeFields = {
    "model",      "prompt", "messages",   "stream",       "stream_options",        "n",
    "echo",       "user",   "logprobs",   "top_logprobs", "max_completion_tokens", "suffix",
    "logit_bias", "tools",  "tool_choice"};

BatchRequest request_from(const json& body, std::int64_t logprobs) {
  json params = json::object();
  for (const auto& [k, v] : body.items())
    if (!kShapeFields.count(k)) params[k] = v;
  if (body.contains("max_completion_tokens")) params["max_tokens"] = body["max_completion_tokens"];
  // OpenAI samples at temperature 1 unless told otherwise.
  if (!params.contains("temperature") || params["temperature"].is_null())
    params["temperature"] = 1.0;
  for (const char* k : {"suffix", "tools"})
    if (body.contains(k) && !body[k].is_null())
      throw ApiError(ErrorKind::kValidation, std::string("`") + k + "` is not supported");
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() && !body["logit_bias"].empty())
    throw ApiError(ErrorKind::kValidation, "`logit_bias` is not supported");
  BatchRequest r;
  r.max_new_tokens = 16;  // OpenAI's default max_tokens
  try {
    cli::apply_parameters(params, r);
  } catch (const std::invalid_argument& e) {
    throw ApiError(ErrorKind::kValidation, e.what());
  }
  if (!r.sampling.greedy() && (!params.contains("seed") || params["seed"].is_null()))
    r.sampling.seed = std::random_device{}();
  r.logprobs = static_cast<std::int32_t>(logprobs);
  return r;
}

std::int64_t choices_n(const json& body) {
  if (!body.contains("n") || body["n"].is_null()) return 1;
  if (!body["n"].is_number_integer() || body["n"].get<std::int64_t>() < 1 ||
      body["n"].get<std::int64_t>() > 16)
    throw ApiError(ErrorKind::kValidation,
                   "`n` must be an integer in [1, 16], got " + dump(body["n"]));
  return body["n"].get<std::int64_t>();
}

void check_model(const ServeContext& ctx, const json& body) {
  if (body.contains("model") && !body["model"].is_null() &&
      (!body["model"].is_string() || body["model"].get<std::string>() != ctx.model_name))
    throw ApiError(
        ErrorKind::kNotFound,
        "The model `" +
            (body["model"].is_string() ? body["model"].get<std::string>() : dump(body["model"])) +
            "` does not exist.");
}

// An optional boolean field: absent or null is `fallback`, anything but a boolean is refused.
bool flag(const json& obj, const char* key, bool fallback) {
  if (!obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_boolean())
    throw ApiError(ErrorKind::kValidation,
                   std::string("`") + key + "` must be true or false, got " + dump(obj[key]));
  return obj[key].get<bool>();
}

bool include_usage(const json& body) {
  if (!body.contains("stream_options") || body["stream_options"].is_null()) return false;
  if (!body["stream_options"].is_object())
    throw ApiError(ErrorKind::kValidation, "`stream_options` must be an object");
  return flag(body["stream_options"], "include_usage", false);
}

// The parts of the reply every OpenAI call shares.
class OpenAiCall : public Call {
 public:
  OpenAiCall(ServeContext& ctx, const char* object, const char* prefix)
      : ctx_(ctx), id_(random_id(prefix)), created_(now_s()), object_(object) {}
  bool usage_in_stream = false;
  std::int64_t prompt_tokens = 0;  // counted once per prompt

  HttpResponse error(http::status s, const std::string& m) override { return openai_error(s, m); }
  std::string stream_error(const std::string& m) override {
    return "data: " +
           dump({{"object", "error"},
                 {"message", m},
                 {"type", "BadRequestError"},
                 {"param", nullptr},
                 {"code", 400}}) +
           "\n\n";
  }
  std::string end_stream() override {
    std::string out;
    if (usage_in_stream) {  // stream_options.include_usage: a last chunk with no choices
      json j = envelope(json::array(), object_);
      j["usage"] = usage();
      out = "data: " + dump(j) + "\n\n";
    }
    return out + "data: [DONE]\n\n";
  }

 protected:
  json envelope(json choices, const std::string& object) const {
    return {{"id", id_},
            {"object", object},
            {"created", created_},
            {"model", ctx_.model_name},
            {"choices", std::move(choices)}};
  }
  json usage() const {
    std::int64_t cached = 0;
    for (const auto& [prompt, tokens] : cached_tokens_) cached += tokens;
    return {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens_},
            {"total_tokens", prompt_tokens + completion_tokens_},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  }
  // Prompt tokens served from the prefix cache, counted once per prompt like prompt_tokens (its
  // n choices may differ: the first to be admitted computes what the others then reuse).
  void note_cached(std::size_t prompt, const BatchResult* r) {
    if (!r) return;
    std::int64_t& c = cached_tokens_[prompt];
    c = std::max(c, r->cached_tokens);
  }
  std::string token_str(std::int32_t id) const {
    return ctx_.tokenizer.decode(std::span(&id, 1), false);
  }

  ServeContext& ctx_;
  std::string id_;
  std::int64_t created_;
  std::string object_;
  std::int64_t completion_tokens_ = 0;
  std::map<std::size_t, std::int64_t> cached_tokens_;  // per prompt
};

class CompletionCall final : public OpenAiCall {
 public:
  explicit CompletionCall(ServeContext& ctx) : OpenAiCall(ctx, "text_completion", "cmpl-") {}
  std::int64_t n = 1;
  bool echo = false;
  std::vector<std::string> prompts;  // per prompt, for echo

  std::string on_update(std::size_t i, const RequestEvent& u) override {
    if (u.token >= 0) ++completion_tokens_;
    note_cached(i / static_cast<std::size_t>(n), u.result.get());
    std::string text = u.text;
    if (echo && u.index == 0 && u.token >= 0) text = prompts[i / n] + text;
    json choice = {{"index", i}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    if (u.token >= 0 && want_logprobs)
      choice["logprobs"] = logprobs({u.token}, {u.logprob}, {u.top});
    if (u.finish != FinishReason::kNone)
      choice["finish_reason"] = openai_reason(u.finish);
    else if (text.empty() && choice["logprobs"].is_null())
      return "";
    return "data: " + dump(envelope(json::array({choice}), object_)) + "\n\n";
  }
  HttpResponse final_response(const std::vector<std::shared_ptr<const BatchResult>>& rs) override {
    json choices = json::array();
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const BatchResult& r = *rs[i];
      completion_tokens_ += static_cast<std::int64_t>(r.tokens.size());
      note_cached(i / static_cast<std::size_t>(n), &r);
      json c = {{"index", i},
                {"text", (echo ? prompts[i / n] : "") + r.text},
                {"logprobs", nullptr},
                {"finish_reason", openai_reason(r.finish)}};
      if (want_logprobs) c["logprobs"] = logprobs(r.tokens, r.logprobs, r.top_logprobs);
      choices.push_back(c);
    }
    json out = envelope(choices, object_);
    out["usage"] = usage();
    return json_response(http::status::ok, out);
  }
  bool want_logprobs = false;

 private:
  json logprobs(const std::vector<std::int32_t>& ids, const std::vector<float>& lps,
                const std::vector<std::vector<TokenLogprob>>& tops) const {
    json tokens = json::array(), token_lps = json::array(), top = json::array(),
         offsets = json::array();
    std::size_t offset = 0;
    for (std::size_t t = 0; t < ids.size(); ++t) {
      const std::string s = token_str(ids[t]);
      tokens.push_back(s);
      token_lps.push_back(t < lps.size() ? json(lps[t]) : json(nullptr));
      json alts = json::object();
      if (t < tops.size())
        for (const TokenLogprob& a : tops[t]) alts[token_str(a.id)] = a.logprob;
      top.push_back(alts);
      offsets.push_back(offset);
      offset += s.size();
    }
    return {{"tokens", tokens},
            {"token_logprobs", token_lps},
            {"top_logprobs", top},
            {"text_offset", offsets}};
  }
};

class ChatCall final : public OpenAiCall {
 public:
  explicit ChatCall(ServeContext& ctx) : OpenAiCall(ctx, "chat.completion.chunk", "chatcmpl-") {}
  bool logprobs = false;

  std::string on_update(std::size_t i, const RequestEvent& u) override {
    std::string out;
    if (u.index == 0 && u.token >= 0) {  // the role comes first, on its own
      json c = {{"index", i},
                {"delta", {{"role", "assistant"}, {"content", ""}}},
                {"logprobs", nullptr},
                {"finish_reason", nullptr}};
      out += "data: " + dump(envelope(json::array({c}), object_)) + "\n\n";
    }
    if (u.token >= 0) ++completion_tokens_;
    note_cached(0, u.result.get());
    json c = {{"index", i},
              {"delta", u.text.empty() ? json::object() : json{{"content", u.text}}},
              {"logprobs", nullptr},
              {"finish_reason", nullptr}};
    if (logprobs && u.token >= 0)
      c["logprobs"] = {{"content", json::array({entry(u.token, u.logprob, u.top)})}};
    if (u.finish != FinishReason::kNone)
      c["finish_reason"] = openai_reason(u.finish);
    else if (u.text.empty() && !logprobs)
      return out;
    return out + "data: " + dump(envelope(json::array({c}), object_)) + "\n\n";
  }
  HttpResponse final_response(const std::vector<std::shared_ptr<const BatchResult>>& rs) override {
    json choices = json::array();
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const BatchResult& r = *rs[i];
      completion_tokens_ += static_cast<std::int64_t>(r.tokens.size());
      note_cached(0, &r);
      json c = {{"index", i},
                {"message", {{"role", "assistant"}, {"content", r.text}}},
                {"logprobs", nullptr},
                {"finish_reason", openai_reason(r.finish)}};
      if (logprobs) {
        json content = json::array();
        for (std::size_t t = 0; t < r.tokens.size(); ++t)
          content.push_back(
              entry(r.tokens[t], t < r.logprobs.size() ? r.logprobs[t] : 0.0f,
                    t < r.top_logprobs.size() ? r.top_logprobs[t] : std::vector<TokenLogprob>{}));
        c["logprobs"] = {{"content", content}};
      }
      choices.push_back(c);
    }
    json out = envelope(choices, "chat.completion");
    out["usage"] = usage();
    return json_response(http::status::ok, out);
  }

 private:
  json entry(std::int32_t id, float lp, const std::vector<TokenLogprob>& top) const {
    auto bytes = [](const std::string& s) {
      json b = json::array();
      for (const unsigned char c : s) b.push_back(c);
      return b;
    };
    const std::string s = token_str(id);
    json alts = json::array();
    for (const TokenLogprob& a : top) {
      const std::string t = token_str(a.id);
      alts.push_back({{"token", t}, {"logprob", a.logprob}, {"bytes", bytes(t)}});
    }
    return {{"token", s}, {"logprob", lp}, {"bytes", bytes(s)}, {"top_logprobs", alts}};
  }
};

// The text of one message: a string, or a list of text parts.
std::string message_text(const json& m) {
  if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
    throw ApiError(ErrorKind::kValidation, "each message needs a string `role`");
  const json& c = m.contains("content") ? m["content"] : json();
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array())
    throw ApiError(ErrorKind::kValidation, "each message needs `content`: a string or text parts");
  std::string content;
  for (const json& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      throw ApiError(ErrorKind::kValidation,
                     "message content parts must be {\"type\": \"text\", \"text\": str}");
    content += part["text"].get<std::string>();
  }
  return content;
}

// The checkpoint's own template when it has one. Otherwise the format Falcon's instruct models
// were tuned on: an optional system message on its own line, then "User: ..." / "Falcon: ..."
// turns; the reply ends where the model starts the next user turn.
std::string chat_prompt(const ServeContext& ctx, const json& messages, BatchRequest& r) {
  if (!messages.is_array() || messages.empty())
    throw ApiError(ErrorKind::kValidation, "`messages` must be a non-empty list");
  std::vector<ChatMessage> turns;
  for (const json& m : messages) {
    // message_text checks the role first: `m["role"]` on a const object without one is undefined.
    std::string content = message_text(m);
    turns.push_back({m["role"].get<std::string>(), std::move(content)});
  }
  if (ctx.chat_template) {
    try {
      return ctx.chat_template->render(turns, true, ctx.chat_vars);
    } catch (const ChatTemplateError& e) {
      throw ApiError(ErrorKind::kValidation,
                     e.what());  // raise_exception(): the template's message
    }
  }
  std::string out;
  for (const ChatMessage& m : turns) {
    if (m.role == "system")
      out += m.content + "\n";
    else if (m.role == "user")
      out += "User: " + m.content + "\n";
    else if (m.role == "assistant")
      out += "Falcon: " + m.content + "\n";
    else
      throw ApiError(ErrorKind::kValidation,
                     "message role must be system, user or assistant, got `" + m.role + "`");
  }
  r.stop.push_back("\nUser:");
  return out + "Falcon:";
}

}  // namespace

HttpResponse openai_error(http::status s, const std::string& message) {
  const char* type = s == http::status::not_found             ? "NotFoundError"
                     : s == http::status::too_many_requests   ? "RateLimitError"
                     : s == http::status::service_unavailable ? "ServiceUnavailableError"
                     : s == http::status::unauthorized        ? "AuthenticationError"
                                                              : "BadRequestError";
  if (s == http::status::unprocessable_entity || s == http::status::failed_dependency)
    s = http::status::bad_request;
  return json_response(s, {{"object", "error"},
                           {"message", message},
                           {"type", type},
                           {"param", nullptr},
                           {"code", static_cast<int>(s)}});
}

std::unique_ptr<Call> openai_completions(ServeContext& ctx, const json& body) {
  check_model(ctx, body);
  auto call = std::make_unique<CompletionCall>(ctx);
  call->n = choices_n(body);
  call->echo = flag(body, "echo", false);
  call->stream = flag(body, "stream", false);
  call->usage_in_stream = include_usage(body);
  call->route = "/v1/completions";
  std::int64_t logprobs = -1;
  if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    if (!body["logprobs"].is_number_integer() || body["logprobs"].get<std::int64_t>() < 0 ||
        body["logprobs"].get<std::int64_t>() > 20)
      throw ApiError(ErrorKind::kValidation,
                     "`logprobs` must be an integer in [0, 20], got " + dump(body["logprobs"]));
    logprobs = body["logprobs"].get<std::int64_t>();
    call->want_logprobs = true;
  }
  // One prompt (text or token ids) or a list of texts.
  const json& p = body.contains("prompt") ? body["prompt"] : json();
  std::vector<std::vector<std::int32_t>> id_prompts;
  if (p.is_string()) {
    call->prompts.push_back(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    std::vector<std::int32_t> ids;
    for (const json& t : p) {
      if (!t.is_number_integer() || t.get<std::int64_t>() < 0 ||
          t.get<std::int64_t>() >= ctx.vocab_size)
        throw ApiError(ErrorKind::kValidation, "`prompt` token ids must be integers in [0, " +
                                                   std::to_string(ctx.vocab_size) + ")");
      ids.push_back(t.get<std::int32_t>());
    }
    call->prompts.push_back(ctx.tokenizer.decode(ids));
    id_prompts.push_back(std::move(ids));
  } else if (p.is_array() && !p.empty()) {
    check_choices(ctx, p.size(), call->n);
    for (const json& s : p) {
      if (!s.is_string())
        throw ApiError(ErrorKind::kValidation,
                       "`prompt` must be a string, a list of strings or a list of token ids");
      call->prompts.push_back(s.get<std::string>());
    }
  } else {
    throw ApiError(ErrorKind::kValidation,
                   "`prompt` must be a non-empty string, list of strings or list of token ids");
    for (const std::string& text : call->prompts)
      if (text.empty()) throw ApiError(ErrorKind::kValidation, "`prompt` must not be empty");
  }
  check_choices(ctx, call->prompts.size(), call->n);
  // The parameters are read once; each prompt's copy gets its own random seed unless one was set.
  const BatchRequest proto = request_from(body, logprobs);
  const bool seeded = body.contains("seed") && !body["seed"].is_null();
  std::int64_t work = 0;
  for (std::size_t i = 0; i < call->prompts.size(); ++i) {
    BatchRequest base = proto;
    if (i > 0 && !seeded && !base.sampling.greedy()) base.sampling.seed = std::random_device{}();
    if (id_prompts.empty()) {
      set_prompt(ctx, call->prompts[i], base);
    } else {
      base.prompt = id_prompts[0];
      check_lengths(ctx, base);
    }
    count_work(ctx, base, call->n, work);
    call->prompt_tokens += static_cast<std::int64_t>(base.prompt.size());
    for (std::int64_t j = 0; j < call->n; ++j) {
      BatchRequest r = base;
      r.sampling.seed = base.sampling.seed + static_cast<std::uint64_t>(j);  // n different draws
      call->requests.push_back(std::move(r));
    }
  }
  return call;
}

std::unique_ptr<Call> openai_chat(ServeContext& ctx, const json& body) {
  check_model(ctx, body);
  auto call = std::make_unique<ChatCall>(ctx);
  const std::int64_t n = choices_n(body);
  call->stream = flag(body, "stream", false);
  call->usage_in_stream = include_usage(body);
  call->route = "/v1/chat/completions";
  std::int64_t logprobs = -1;
  if (flag(body, "logprobs", false)) {
    call->logprobs = true;
    logprobs = 0;
    if (body.contains("top_logprobs") && !body["top_logprobs"].is_null()) {
      if (!body["top_logprobs"].is_number_integer() ||
          body["top_logprobs"].get<std::int64_t>() < 0 ||
          body["top_logprobs"].get<std::int64_t>() > 20)
        throw ApiError(ErrorKind::kValidation, "`top_logprobs` must be an integer in [0, 20]");
      logprobs = body["top_logprobs"].get<std::int64_t>();
    }
  }
  BatchRequest base = request_from(body, logprobs);
  const std::string prompt =
      chat_prompt(ctx, body.contains("messages") ? body["messages"] : json(), base);
  set_prompt(ctx, prompt, base);
  std::int64_t work = 0;
  count_work(ctx, base, n, work);
  call->prompt_tokens = static_cast<std::int64_t>(base.prompt.size());
  for (std::int64_t j = 0; j < n; ++j) {
    BatchRequest r = base;
    r.sampling.seed = base.sampling.seed + static_cast<std::uint64_t>(j);
    call->requests.push_back(std::move(r));
  }
  return call;
}

}  // namespace saker::serve
