// HTTP request bodies through the routes to the engine requests they make: OpenAI completions
// and chat (with and without a checkpoint chat template), TGI /generate and /generate_stream,
// DJL /invocations and /tokenize. Input: one byte picks the route, the rest is the body.
// A route answers at once (its response must be valid JSON) or makes requests that
// RequestQueue::submit either queues or refuses with RequestError; then each Call formats a
// made-up result, as the engine's events would reach it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "engine/constraints/compiler.h"
#include "launcher/serve/api.h"
#include "launcher/serve/routes.h"

using namespace saker;
using namespace saker::serve;

namespace {

constexpr const char* kTemplate =
    "{{ bos_token }}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) "
    "%}{{ raise_exception('roles must alternate') }}{% endif %}{{ '<|' + m['role'] + '|>\\n' + "
    "m['content'] | trim + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|assistant|>\\n' }}{% endif %}";

struct Rig {
  ServingMetrics metrics;
  RequestQueue queue{1u << 20};
  Tokenizer tok =
      Tokenizer::load(std::string(SAKER_FIXTURES_DIR) + "/tokenizers/small384/tokenizer.json");
  std::int64_t vocab = tok.id_limit();
  // The context's other fields keep their defaults, however many it grows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
  ServeContext plain{.queue = queue,
                     .metrics = metrics,
                     .tokenizer = tok,
                     .vocab_size = vocab,
                     .model_name = "demo",
                     .max_context = 2048,
                     .special_ids = {11}};
  // Its own limits and defaults: input and output lengths, jsonlines, a template.
  ServeContext templated{.queue = queue,
                         .metrics = metrics,
                         .tokenizer = tok,
                         .vocab_size = vocab,
                         .model_name = "demo",
                         .max_context = 512,
                         .max_input_len = 300,
                         .max_output_len = 200,
                         .jsonlines_default = true,
                         .special_ids = {11}};
#pragma GCC diagnostic pop
  Router plain_router, templated_router;

  Rig() {
    spdlog::set_level(spdlog::level::off);
    templated.chat_template = ChatTemplate::parse(kTemplate);
    templated.chat_vars = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
    queue.set_health(Health::kReady);
    RequestLimits limits{vocab, 2048, true, nullptr};
    limits.constraints =
        std::make_shared<ConstraintCompiler>(tok, vocab, std::vector<std::int64_t>{11});
    queue.set_limits(limits);
    plain_router = make_router(plain);
    templated_router = make_router(templated);
  }
};

Rig& rig() {
  static Rig r;
  return r;
}

constexpr const char* kTargets[] = {
    "/v1/completions",
    "/v1/chat/completions",
    "/generate",
    "/generate_stream",
    "/",
    "/invocations",
    "/tokenize",
    "/v1/chat/completions?x=1",
};

void check_json(const HttpResponse& r) {
  if (r[http::field::content_type] != "application/json") return;
  if (!json::accept(r.body())) {
    std::fprintf(stderr, "response is not JSON: %s\n", r.body().c_str());
    std::abort();
  }
}

// Feeds a Call what the engine would send back: one token event per choice, then the result.
void format_result(Call& call) {
  std::vector<std::shared_ptr<const BatchResult>> results;
  for (std::size_t i = 0; i < call.requests.size(); ++i) {
    const BatchRequest& q = call.requests[i];
    auto res = std::make_shared<BatchResult>();
    res->tokens = {q.prompt.front(), 11};
    res->text = rig().tok.decode(res->tokens);
    res->finish = FinishReason::kEosToken;
    res->prompt_tokens = static_cast<std::int64_t>(q.prompt.size());
    if (q.logprobs >= 0) {
      res->logprobs = {-0.5f, -1.0f};
      res->top_logprobs.assign(2, std::vector<TokenLogprob>(static_cast<std::size_t>(q.logprobs),
                                                            TokenLogprob{q.prompt.back(), -2.0f}));
    }
    RequestEvent e;
    e.id = q.id;
    e.token = res->tokens[0];
    e.text = rig().tok.decode(std::vector<std::int32_t>{e.token});
    e.logprob = -0.5f;
    if (q.logprobs > 0) e.top = res->top_logprobs[0];
    (void)call.on_update(i, e);
    e.token = 11;
    e.index = 1;
    e.finish = FinishReason::kEosToken;
    e.result = res;
    (void)call.on_update(i, e);
    results.push_back(res);
  }
  (void)call.end_stream();
  check_json(call.final_response(results));
  check_json(call.error(http::status::bad_request, "refused"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  Rig& r = rig();
  const std::uint8_t pick = data[0];
  HttpRequest req{http::verb::post, kTargets[pick % std::size(kTargets)], 11};
  req.body().assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  req.prepare_payload();
  Routed out = (pick & 0x80 ? r.templated_router : r.plain_router)(req);
  if (out.response) check_json(*out.response);
  if (out.call) {
    for (const BatchRequest& q : out.call->requests) {
      try {
        (void)r.queue.submit(
            q, [](RequestEvent&&) {}, out.call->route);
      } catch (const RequestError&) {
      }
    }
    // Nothing runs them: the queue is emptied for the next input.
    std::deque<RequestQueue::Command> taken;
    r.queue.take(taken, 0);
    r.queue.set_engine_waiting(0);
    if (!out.call->requests.empty() && !out.call->requests[0].prompt.empty())
      format_result(*out.call);
  }
  return 0;
}
