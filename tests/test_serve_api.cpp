// The HTTP APIs without a network: routes, each API's error shape and status, and the shape of
// what they stream (the end-to-end tests with real clients are tests/serve/).
#include <fstream>
#include <set>
#include <string_view>

#include <catch2/catch.hpp>

#include "engine/model/falcon/config.h"
#include "launcher/serve/api.h"
#include "launcher/serve/routes.h"
#include "tests/golden.h"

using namespace saker;
using namespace saker::serve;

namespace {

struct Rig {
  ServingMetrics metrics;
  RequestQueue queue{8};
  Tokenizer tok = Tokenizer::load(test::kFixtures / "tokenizers" / "small384" / "tokenizer.json");
  ServeContext ctx{
      queue,  metrics, tok,  load_config(test::kFixtures / "gqa8x4-bf16-sharded").vocab_size,
      "demo", 2048,    0,    0,
      false,  false,   {},   {},
      {},     {},      false};
  Router router = make_router(ctx);

  Routed call(http::verb method, const std::string& target, const std::string& body = "") {
    HttpRequest req{method, target, 11};
    req.body() = body;
    req.prepare_payload();
    return router(req);
  }
  HttpResponse answer(http::verb method, const std::string& target, const std::string& body = "") {
    Routed r = call(method, target, body);
    REQUIRE(r.response);
    return std::move(*r.response);
  }
};

json body_of(const HttpResponse& r) {
  return json::parse(r.body());
}

}  // namespace

TEST_CASE("health answers 503 until the model is ready, then 200", "[serve]") {
  Rig rig;
  CHECK(rig.answer(http::verb::get, "/ping").result() == http::status::service_unavailable);
  CHECK(rig.answer(http::verb::get, "/health").result() == http::status::service_unavailable);
  CHECK(body_of(rig.answer(http::verb::get, "/health"))["error_type"] == "unhealthy");
  rig.queue.set_health(Health::kReady);
  CHECK(rig.answer(http::verb::get, "/ping").result() == http::status::ok);
  CHECK(rig.answer(http::verb::get, "/health").result() == http::status::ok);
  rig.queue.shutdown(1);
  CHECK(body_of(rig.answer(http::verb::get, "/ping"))["error"] == "the server is shutting down");
}

TEST_CASE("every API answers bad requests in its own shape and status", "[serve]") {
  Rig rig;
  rig.queue.set_health(Health::kReady);
  struct Case {
    http::verb method;
    std::string target, body;
    http::status status;
    std::string key, message;  // the field holding the message, and a part of it
  };
  const std::string ids2000 = [] {
    std::string s = "[";
    for (int i = 0; i < 2000; ++i) s += (i ? ",5" : "5");
    return s + "]";
  }();
  const Case cases[] = {
      {http::verb::post, "/v1/completions", "{not json", http::status::bad_request, "message",
       "not valid JSON"},
      {http::verb::post, "/generate", "{not json", http::status::unprocessable_entity, "error",
       "not valid JSON"},
      {http::verb::post, "/invocations", "{not json", http::status::bad_request, "error",
       "not valid JSON"},
      {http::verb::post, "/generate", "{\"inputs\": \"\xff\xfe\"}",
       http::status::unprocessable_entity, "error", "UTF-8"},
      {http::verb::post, "/generate", "[1, 2]", http::status::unprocessable_entity, "error",
       "must be a JSON object"},
      {http::verb::post, "/generate", R"({"inputs": 5})", http::status::unprocessable_entity,
       "error", "`inputs` must be a string"},
      {http::verb::post, "/generate", R"({"inputs": ""})", http::status::unprocessable_entity,
       "error", "`inputs` must not be empty"},
      {http::verb::post, "/generate", R"({"inputs": "hi", "parameters": {"temperature": -1}})",
       http::status::unprocessable_entity, "error", "temperature"},
      {http::verb::post, "/generate",
       R"({"inputs": "hi", "parameters": {"top_p": 2.0, "do_sample": true}})",
       http::status::unprocessable_entity, "error", "top_p must be in (0, 1], got 2"},
      {http::verb::post, "/invocations",
       R"({"inputs": "hi", "parameters": {"max_new_tokens": "many"}})", http::status::bad_request,
       "error", "`max_new_tokens` must be an integer"},
      {http::verb::post, "/v1/completions",
       R"({"model": "demo", "prompt": )" + ids2000 + R"(, "max_tokens": 100})",
       http::status::bad_request, "message",
       "`inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 `inputs` tokens and 100 "
       "`max_new_tokens`"},
      {http::verb::post, "/v1/completions", R"({"model": "other", "prompt": "hi"})",
       http::status::not_found, "message", "The model `other` does not exist."},
      {http::verb::post, "/v1/chat/completions", R"({"model": "demo", "messages": []})",
       http::status::bad_request, "message", "`messages` must be a non-empty list"},
      {http::verb::post, "/v1/completions", R"({"model": "demo", "prompt": "hi", "n": 0})",
       http::status::bad_request, "message", "`n` must be an integer in [1, 16]"},
      {http::verb::get, "/v1/nothing", "", http::status::not_found, "message",
       "no route /v1/nothing"},
      {http::verb::get, "/nothing", "", http::status::not_found, "error", "no route /nothing"},
      {http::verb::get, "/generate", "", http::status::method_not_allowed, "error",
       "GET is not allowed on /generate; use POST"},
      {http::verb::post, "/ping", "", http::status::method_not_allowed, "error", "use GET"},
  };
  for (const Case& c : cases) {
    INFO(c.target << " " << c.body.substr(0, 80));
    const HttpResponse r = rig.answer(c.method, c.target, c.body);
    CHECK(r.result() == c.status);
    const json j = body_of(r);
    REQUIRE(j.contains(c.key));
    CHECK_THAT(j[c.key].get<std::string>(), Catch::Contains(c.message));
    if (c.target.starts_with("/v1/")) CHECK(j["object"] == "error");
    if (c.target == "/generate" && c.status == http::status::unprocessable_entity)
      CHECK(j["error_type"] == "validation");
  }
}

TEST_CASE("the APIs stream in their clients' formats", "[serve]") {
  Rig rig;
  rig.queue.set_health(Health::kReady);
  auto result = std::make_shared<BatchResult>();
  result->tokens = {40, 41};
  result->text = "ab";
  result->finish = FinishReason::kLength;
  RequestEvent first;
  first.token = 40;
  first.text = "a";
  first.logprob = -0.5f;
  RequestEvent last = first;
  last.token = 41;
  last.index = 1;
  last.text = "b";
  last.finish = FinishReason::kLength;
  last.result = result;

  auto tgi = rig.call(http::verb::post, "/generate_stream",
                      R"({"inputs": "hi", "parameters": {"max_new_tokens": 2}})")
                 .call;
  REQUIRE(tgi);
  CHECK(tgi->stream);
  CHECK(tgi->requests.at(0).max_new_tokens == 2);
  const std::string e1 = tgi->on_update(0, first), e2 = tgi->on_update(0, last);
  REQUIRE(e1.starts_with("data:"));
  const json j1 = json::parse(e1.substr(5)), j2 = json::parse(e2.substr(5));
  CHECK(j1["token"] == json{{"id", 40}, {"text", "a"}, {"logprob", -0.5}, {"special", false}});
  CHECK(j1["generated_text"].is_null());
  CHECK(j2["generated_text"] == "ab");
  CHECK(j2["details"]["finish_reason"] == "length");
  CHECK(j2["details"]["generated_tokens"] == 2);

  auto oa =
      rig.call(
             http::verb::post, "/v1/completions",
             R"({"model": "demo", "prompt": "hi", "stream": true, "stream_options": {"include_usage": true}, "temperature": 0})")
          .call;
  REQUIRE(oa);
  CHECK(oa->requests.at(0).sampling.greedy());
  const std::string c1 = oa->on_update(0, first);
  REQUIRE(c1.starts_with("data: "));
  CHECK(json::parse(c1.substr(6))["choices"][0]["text"] == "a");
  CHECK(json::parse(oa->on_update(0, last).substr(6))["choices"][0]["finish_reason"] == "length");
  const std::string tail = oa->end_stream();
  CHECK(tail.ends_with("data: [DONE]\n\n"));
  CHECK(json::parse(tail.substr(6, tail.find("\n\n") - 6))["usage"]["completion_tokens"] == 2);
  // OpenAI samples at temperature 1 unless told otherwise, with a fresh seed each time.
  auto sampled =
      rig.call(http::verb::post, "/v1/completions", R"({"model": "demo", "prompt": "hi"})").call;
  CHECK(sampled->requests.at(0).sampling.temperature == 1.0f);

  auto chat =
      rig.call(
             http::verb::post, "/v1/chat/completions",
             R"({"model": "demo", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "stream": true})")
          .call;
  REQUIRE(chat);
  CHECK(rig.tok.decode(chat->requests.at(0).prompt) == "Be brief.\nUser: Hi\nFalcon:");
  CHECK(chat->requests.at(0).stop == std::vector<std::string>{"\nUser:"});
  const std::string s1 = chat->on_update(0, first);
  CHECK(s1.find("\"role\":\"assistant\"") != std::string::npos);  // the role chunk comes first

  auto djl = rig.call(http::verb::post, "/invocations", R"({"inputs": "hi", "stream": true})").call;
  REQUIRE(djl);
  CHECK(djl->stream_content_type() == "application/jsonlines");
  CHECK(json::parse(djl->on_update(0, first))["token"] ==
        json{{"id", 40}, {"text", "a"}, {"log_prob", -0.5}});
  const json jl = json::parse(djl->on_update(0, last));
  CHECK(jl["generated_text"] == "ab");
  CHECK(jl["details"]["finish_reason"] == "length");
  CHECK(djl->requests.at(0).max_new_tokens == 30);  // DJL's default
}

TEST_CASE("metrics render in the Prometheus text format", "[serve]") {
  ServingMetrics m;
  m.finished(10, 5, 0.001, 0.02, 0.01, 0.07, "length");
  m.finished(3, 1, 0.5, 0.6, -1, 0.6, "cancelled");
  Gauges g;
  g.running = 2;
  g.kv_usage = 0.25;
  m.set_gauges(g);
  const std::string t = m.render("demo");
  CHECK_THAT(t, Catch::Contains("vllm:num_requests_running{model_name=\"demo\"} 2\n"));
  CHECK_THAT(t, Catch::Contains("vllm:gpu_cache_usage_perc{model_name=\"demo\"} 0.25\n"));
  CHECK_THAT(t, Catch::Contains("vllm:prompt_tokens_total{model_name=\"demo\"} 13\n"));
  CHECK_THAT(t, Catch::Contains("finished_reason=\"abort\"} 1\n"));
  CHECK_THAT(t, Catch::Contains("# TYPE vllm:time_to_first_token_seconds histogram\n"));
  CHECK_THAT(t,
             Catch::Contains(
                 "vllm:time_to_first_token_seconds_bucket{model_name=\"demo\",le=\"0.02\"} 1\n"));
  CHECK_THAT(t,
             Catch::Contains(
                 "vllm:time_to_first_token_seconds_bucket{model_name=\"demo\",le=\"+Inf\"} 2\n"));
  CHECK_THAT(t,
             Catch::Contains("vllm:time_per_output_token_seconds_count{model_name=\"demo\"} 1\n"));
}

TEST_CASE("the engine's state reaches the metrics: the block pool and the prefix cache",
          "[serve][prefix]") {
  ServingMetrics m;
  EngineSnapshot s;
  s.kv_blocks = 100;
  s.kv_blocks_used = 30;
  s.kv_blocks_cached = 12;
  s.prefix_cache_queries = 500;
  s.prefix_cache_hits = 320;
  s.running = 3;
  m.on_state(s);
  const std::string t = m.render("demo");
  CHECK_THAT(t, Catch::Contains("vllm:num_requests_running{model_name=\"demo\"} 3\n"));
  CHECK_THAT(t, Catch::Contains("vllm:gpu_cache_usage_perc{model_name=\"demo\"} 0.3\n"));
  CHECK_THAT(t, Catch::Contains("saker:kv_blocks_used{model_name=\"demo\"} 30\n"));
  CHECK_THAT(t, Catch::Contains("saker:kv_blocks_free{model_name=\"demo\"} 70\n"));
  CHECK_THAT(t, Catch::Contains("saker:kv_blocks_cached{model_name=\"demo\"} 12\n"));
  CHECK_THAT(t, Catch::Contains("# TYPE vllm:prefix_cache_queries_total counter\n"));
  CHECK_THAT(t, Catch::Contains("vllm:prefix_cache_queries_total{model_name=\"demo\"} 500\n"));
  CHECK_THAT(t, Catch::Contains("vllm:prefix_cache_hits_total{model_name=\"demo\"} 320\n"));
}

TEST_CASE("chat prompts come from the checkpoint's chat template when it has one",
          "[serve][chat_template]") {
  std::ifstream in(test::kFixtures / "chat_templates" / "cases.json");
  const json cases = json::parse(in)["cases"];
  int rendered = 0, refused = 0;
  for (const json& c : cases) {
    // The route always asks for the generation prompt.
    if (!c["add_generation_prompt"].get<bool>()) continue;
    Rig rig;
    rig.queue.set_health(Health::kReady);
    rig.ctx.chat_template = ChatTemplate::parse(c["template"].get<std::string>());
    rig.ctx.chat_vars = {{"bos_token", c["bos_token"].get<std::string>()},
                         {"eos_token", c["eos_token"].get<std::string>()}};
    const json body = {{"model", "demo"}, {"messages", c["messages"]}, {"max_tokens", 4}};
    Routed r = rig.call(http::verb::post, "/v1/chat/completions", body.dump());
    INFO(c["name"].get<std::string>());
    if (c.contains("expected_error")) {
      // raise_exception() in the template: a 400 carrying the template's own message.
      REQUIRE(r.response);
      CHECK(r.response->result() == http::status::bad_request);
      CHECK(body_of(*r.response)["message"] == c["expected_error"]);
      ++refused;
      continue;
    }
    REQUIRE(r.call);
    // transformers' rendering, through the tokenizer and back (byte-level BPE round-trips).
    CHECK(rig.tok.decode(r.call->requests.at(0).prompt) == c["expected"].get<std::string>());
    CHECK(r.call->requests.at(0).stop.empty());  // the template's own eos ends the turn
    ++rendered;
  }
  CHECK(rendered >= 10);
  CHECK(refused >= 3);
}

TEST_CASE("the route table has one row per method and path, each reachable through the router",
          "[serve]") {
  const std::span<const Route> table = routes();
  for (std::size_t i = 0; i < table.size(); ++i)
    for (std::size_t j = i + 1; j < table.size(); ++j) {
      INFO(table[i].path);
      CHECK_FALSE((table[i].method == table[j].method && table[i].path == table[j].path));
    }
  Rig rig;
  rig.queue.set_health(Health::kReady);
  // A body each family accepts (completions and chat each leave the other's field alone).
  const std::string openai_body =
      R"({"model": "demo", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})";
  const std::string body = R"({"inputs": "hi"})";
  std::set<std::string_view> generation;
  for (const Route& r : table) {
    INFO(http::to_string(r.method) << " " << r.path);
    Routed out = rig.call(r.method, std::string(r.path),
                          r.family == ApiFamily::kOpenAi ? openai_body : body);
    if (std::holds_alternative<Generate>(r.handler)) {
      REQUIRE(out.call);
      CHECK(out.call->route == r.path);
      generation.insert(r.path);
    } else {
      REQUIRE(out.response);
      CHECK(out.response->result() == http::status::ok);
    }
  }
  CHECK(generation == std::set<std::string_view>{"/v1/completions", "/v1/chat/completions",
                                                 "/generate", "/generate_stream", "/",
                                                 "/invocations"});
}

TEST_CASE("a known path asked with another method answers 405 with Allow, in its API's shape",
          "[serve]") {
  Rig rig;
  rig.queue.set_health(Health::kReady);
  const HttpResponse oa = rig.answer(http::verb::get, "/v1/chat/completions");
  CHECK(oa.result() == http::status::method_not_allowed);
  CHECK(oa[http::field::allow] == "POST");
  CHECK(body_of(oa)["object"] == "error");
  CHECK(body_of(oa)["message"] == "GET is not allowed on /v1/chat/completions; use POST");
  const HttpResponse djl = rig.answer(http::verb::delete_, "/ping?probe=1");
  CHECK(djl.result() == http::status::method_not_allowed);
  CHECK(djl[http::field::allow] == "GET");
  CHECK(body_of(djl)["code"] == 405);
  const HttpResponse tgi = rig.answer(http::verb::put, "/tokenize");
  CHECK(tgi[http::field::allow] == "POST");
  CHECK(body_of(tgi)["error"] == "PUT is not allowed on /tokenize; use POST");
  // An unknown path is 404 whatever the method, and carries no Allow.
  const HttpResponse none = rig.answer(http::verb::post, "/v1/nothing");
  CHECK(none.result() == http::status::not_found);
  CHECK(none.find(http::field::allow) == none.end());
}

TEST_CASE("with an API key, routes answer 401 in their API's shape until the key is sent",
          "[serve][auth]") {
  Rig rig;
  rig.ctx.api_key = "s3cret-key";
  rig.queue.set_health(Health::kReady);
  auto with = [&](http::verb method, const std::string& target, const std::string& auth,
                  const std::string& body = "{}") {
    HttpRequest req{method, target, 11};
    if (!auth.empty()) req.set(http::field::authorization, auth);
    req.body() = body;
    req.prepare_payload();
    return rig.router(req);
  };
  struct Case {
    http::verb method;
    const char* path;
    const char* error_key;  // where each API's error shape puts the message
  };
  for (const Case& c :
       {Case{http::verb::post, "/v1/completions", "error"},
        Case{http::verb::post, "/v1/chat/completions", "error"},
        Case{http::verb::get, "/v1/models", "error"}, Case{http::verb::post, "/generate", "error"},
        Case{http::verb::post, "/invocations", "error"},
        Case{http::verb::post, "/tokenize", "error"}, Case{http::verb::get, "/metrics", ""}}) {
    INFO(c.path);
    for (const std::string auth : {"", "Bearer wrong", "Bearer s3cret-ke", "Bearer s3cret-key2",
                                   "Basic s3cret-key", "s3cret-key"}) {
      INFO("Authorization: '" << auth << "'");
      Routed r = with(c.method, c.path, auth);
      const bool refused = r.response && r.response->result() == http::status::unauthorized;
      // /metrics stays open for scrapers unless asked otherwise.
      CHECK(refused == (std::string(c.path) != "/metrics"));
      if (refused) {
        CHECK(r.response->at(http::field::www_authenticate) == "Bearer");
        CHECK(json::parse(r.response->body()).dump().find("API key") != std::string::npos);
      }
    }
    Routed ok = with(c.method, c.path, "Bearer s3cret-key");
    CHECK_FALSE((ok.response && ok.response->result() == http::status::unauthorized));
  }
  // Each family's shape: OpenAI's error object, TGI's error_type.
  const json openai = json::parse(with(http::verb::post, "/v1/completions", "").response->body());
  CHECK(openai["code"] == 401);
  CHECK(openai["type"] == "AuthenticationError");
  CHECK(
      json::parse(with(http::verb::post, "/generate", "").response->body()).contains("error_type"));
  // Probes stay open; /metrics closes when asked.
  CHECK(with(http::verb::get, "/ping", "").response->result() == http::status::ok);
  CHECK(with(http::verb::get, "/health", "").response->result() == http::status::ok);
  rig.ctx.metrics_need_key = true;
  CHECK(with(http::verb::get, "/metrics", "").response->result() == http::status::unauthorized);
  CHECK(with(http::verb::get, "/metrics", "Bearer s3cret-key").response->result() ==
        http::status::ok);
}

TEST_CASE("a request's sequences and tokens are bounded before its requests are built",
          "[serve][limits]") {
  Rig rig;
  rig.queue.set_health(Health::kReady);
  rig.ctx.max_choices = 8;
  auto status_and_message = [&](const std::string& path, const json& body) {
    Routed r = rig.call(http::verb::post, path, body.dump());
    if (!r.response) return std::pair<int, std::string>{200, ""};
    return std::pair<int, std::string>{static_cast<int>(r.response->result()), r.response->body()};
  };
  // prompts x n against --max-request-sequences.
  auto [s1, m1] = status_and_message(
      "/v1/completions", {{"prompt", json::array({"a", "b", "c"})}, {"n", 3}, {"max_tokens", 1}});
  CHECK(s1 == 400);
  CHECK_THAT(m1,
             Catch::Contains("3 prompts x n = 3 make 9 sequences") && Catch::Contains("at most 8"));
  CHECK(status_and_message("/v1/completions",
                           {{"prompt", json::array({"a", "b"})}, {"n", 4}, {"max_tokens", 1}})
            .first == 200);
  json inputs = json::array();
  for (int i = 0; i < 9; ++i) inputs.push_back("x");
  CHECK(status_and_message("/invocations", {{"inputs", inputs}}).first == 400);
  // Their tokens against --max-request-tokens, counted as prompts are tokenized.
  rig.ctx.max_request_tokens = 100;
  auto [s2, m2] = status_and_message(
      "/v1/completions", {{"prompt", json::array({"a", "b"})}, {"n", 2}, {"max_tokens", 30}});
  CHECK(s2 == 400);
  CHECK_THAT(m2, Catch::Contains("more than 100 tokens"));
  CHECK(status_and_message("/v1/completions", {{"prompt", "a"}, {"n", 2}, {"max_tokens", 30}})
            .first == 200);
  // A prompt longer in bytes than max_input tokens of the longest token is refused unread; with
  // `truncate` it is tokenized and cut.
  rig.ctx.max_token_bytes = rig.tok.max_token_bytes();
  const std::size_t max_bytes = 2047 * rig.tok.max_token_bytes();
  const std::string text(max_bytes + 1, 'a');
  auto [s3, m3] = status_and_message("/generate", {{"inputs", text}});
  CHECK(s3 == 422);
  CHECK_THAT(m3, Catch::Contains("is at most " + std::to_string(max_bytes) + " bytes"));
  CHECK(status_and_message("/generate", {{"inputs", text}, {"parameters", {{"truncate", 8}}}})
            .first == 200);
}
