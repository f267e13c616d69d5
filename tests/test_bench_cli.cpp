// Offline jobs (saker generate --input) and the serving benchmark (saker bench) from the command
// line, on one rank and under mpirun.
#include <fstream>
#include <limits>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/model/registry.h"
#include "launcher/bench/metrics.h"
#include "launcher/bench/workload.h"
#include "tests/run_command.h"
#include "tests/text_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using saker::test::Run;

namespace {

const fs::path kFixtures = SAKER_FIXTURES_DIR;

Run saker_cmd(const std::string& args, int np = 1) {
  std::string cmd = std::string("'") + SAKER_BIN + "' ";
  if (np > 1)
    cmd = std::string("'") + SAKER_MPIEXEC + "' --allow-run-as-root --oversubscribe -np " +
          std::to_string(np) + " " + cmd;
  return saker::test::run_command(cmd + args + " </dev/null");
}

fs::path text_model(const std::string& tag) {
  return saker::test::text_model(kFixtures, tag);
}

std::vector<json> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

fs::path write_file(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST_CASE("percentiles interpolate between order statistics", "[bench]") {
  std::vector<double> v;
  for (int i = 101; i >= 1; --i) v.push_back(i);
  const auto d = saker::cli::distribution(v);
  CHECK(d.mean == Approx(51));
  CHECK(d.p50 == Approx(51));
  CHECK(d.p90 == Approx(91));
  CHECK(d.p99 == Approx(100));
  const auto two = saker::cli::distribution({1.0, 2.0});
  CHECK(two.p50 == Approx(1.5));
  CHECK(two.p99 == Approx(1.99));
  const auto s = saker::cli::spread(v);
  CHECK(s.count == 101);
  CHECK(s.p10 == Approx(11));
  CHECK(s.p50 == Approx(51));
  CHECK(s.p90 == Approx(91));
  CHECK(saker::cli::spread({}).count == 0);
}

TEST_CASE("measurement pauses are taken out of a request's timestamps", "[bench]") {
  saker::BatchResult r;
  r.arrival = 1.0;
  r.scheduled = 1.5;
  r.first_token = 2.0;
  r.token_times = {2.0, 3.0, 5.0};
  r.finished = 5.0;
  // Paused 0.25 s at 0.5 (before everything), 0.5 s at 2.0 (right after the first token) and
  // 1 s at 4.0 (between the second and third tokens); a pause at 6.0 comes after the request.
  saker::cli::remove_pauses(r, {{0.5, 0.25}, {2.0, 0.5}, {4.0, 1.0}, {6.0, 9.0}});
  CHECK(r.arrival == Approx(0.75));
  CHECK(r.scheduled == Approx(1.25));
  CHECK(r.first_token == Approx(1.75));
  CHECK(r.token_times == std::vector<double>{1.75, 2.25, 3.25});
  CHECK(r.finished == Approx(3.25));
}

TEST_CASE(
    "a JSONL job on the demo models is the same with a draft model speculating, at tp 1 and 2",
    "[cli][jsonl][speculative][draft]") {
  const fs::path demo = kFixtures / ".." / ".." / "models" / "falcon-demo";
  const fs::path draft = kFixtures / ".." / ".." / "models" / "falcon-demo-draft";
  const std::vector<std::string> prompts = {"In the beginning", "The falcon",
                                            "User: Hello\nFalcon:", "And the LORD said"};
  std::ostringstream in;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    json params = {{"max_new_tokens", 24}, {"top_n_tokens", 2}};
    if (i % 2 == 1) params.update({{"do_sample", true}, {"temperature", 0.8}, {"seed", 7 + i}});
    in << json{{"prompt", prompts[i]}, {"parameters", params}}.dump() << "\n";
  }
  const fs::path input = write_file("saker_spec_job_in.jsonl", in.str());
  auto job = [&](int np, const std::string& extra) {
    const fs::path output = fs::temp_directory_path() / "saker_spec_job_out.jsonl";
    const Run r = saker_cmd("generate --threads 1 --model '" + demo.string() + "' --input '" +
                                input.string() + "' --output '" + output.string() +
                                "' --max-rolling-batch-size 4 " + extra,
                            np);
    INFO("np " << np << " " << extra << ": " << r.err);
    REQUIRE(r.code == 0);
    std::vector<json> kept;
    for (json l : read_lines(output)) {
      l.erase("timings");  // everything else must match
      kept.push_back(l);
    }
    return kept;
  };
  for (const int np : {1, 2}) {
    // Against the same tp without speculation (tp 2 sums its all-reduce in another order).
    const auto plain = job(np, "");
    REQUIRE(plain.size() == prompts.size());
    CHECK(job(np, "--speculative-model '" + draft.string() +
                      "' --num-speculative-tokens 3 --no-speculative-adaptive") == plain);
    CHECK(job(np, "--speculative-method ngram --no-speculative-adaptive") == plain);
  }
}

TEST_CASE("saker generate --input runs a JSONL job in input order, as each prompt alone would",
          "[cli][jsonl]") {
  const fs::path model = text_model("job");
  const std::vector<std::string> prompts = {"The falcon flies", "Hello", "a b c d e f g", "Falcon",
                                            "The quick brown fox"};
  std::ostringstream in;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    json line = {{"prompt", prompts[i]},
                 {"parameters", {{"max_new_tokens", 4 + 3 * i}, {"ignore_eos", true}}}};
    if (i % 2 == 0) line["id"] = "req-" + std::to_string(i);
    in << line.dump() << "\n";
    if (i == 2) in << "\n";  // blank lines are skipped
  }
  const fs::path input = write_file("saker_job_in.jsonl", in.str());
  for (const int np : {1, 2}) {
    const fs::path output = fs::temp_directory_path() / ("saker_job_out" + std::to_string(np));
    const Run r = saker_cmd("generate --threads 1 --model '" + model.string() + "' --input '" +
                                input.string() + "' --output '" + output.string() +
                                "' --max-rolling-batch-size 2 --max-rolling-batch-prefill-tokens 8",
                            np);
    INFO("np " << np << ": " << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.err.find("progress: 5/5 requests done") != std::string::npos);
    const auto lines = read_lines(output);
    REQUIRE(lines.size() == prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const json& l = lines[i];
      CHECK(l["index"] == i);
      CHECK(l.contains("id") == (i % 2 == 0));
      CHECK(l["generated_tokens"] == 4 + 3 * i);
      CHECK(l["finish_reason"] == "length");
      // The same prompt alone through the single-sequence path.
      const Run one = saker_cmd("generate --threads 1 --model '" + model.string() + "' --prompt '" +
                                prompts[i] + "' --max-new-tokens " + std::to_string(4 + 3 * i) +
                                " --ignore-eos --print-ids");
      std::istringstream ids(one.out);
      std::vector<int> want;
      for (int id; ids >> id;) want.push_back(id);
      CHECK(l["token_ids"].get<std::vector<int>>() == want);
    }
  }
}

TEST_CASE("saker generate --input names the file and line of a bad request", "[cli][jsonl]") {
  const fs::path model = text_model("bad_job");
  const std::string ok = R"({"prompt": "Hello"})";
  const std::pair<std::string, std::string> cases[] = {
      {"{\"prompt\": \"x\"", "line 2: not valid JSON"},
      {R"({"prompt": 3})", "line 2: `prompt` must be a string"},
      {R"({"prompt": "x", "parameters": {"top_p": 7}})",
       "line 2: parameter top_p must be in (0, 1], got 7"},
      {R"({"prompt": "x", "parameters": {"best_of": 2}})", "line 2: parameter `best_of` must be 1"},
      {R"({"prompt": "x", "parameters": {"beam_width": 2}})",
       "line 2: parameter `beam_width` is not supported"},
      {R"({"prompt": "x", "parameters": {"max_new_tokens": 100000}})",
       "line 2: prompt tokens + max_new_tokens must be <="},
      {R"({"prompt": "", "parameters": {}})", "line 2: the prompt is empty"},
      {R"({"text": "x"})", "line 2: unknown field `text`"},
      {R"({"prompt": "x", "parameters": {"guided_json": {"not": {}}}})",
       "line 2: guided_json: JSON schema keyword `not` (at #/not) is not supported"},
      {R"({"prompt": "x", "parameters": {"guided_regex": "(a"}})",
       "line 2: guided_regex: invalid regex"},
  };
  for (const auto& [line, msg] : cases) {
    const fs::path input = write_file("saker_bad_job.jsonl", ok + "\n" + line + "\n");
    const Run r = saker_cmd("generate --model '" + model.string() + "' --input '" + input.string() +
                            "' --output /tmp/saker_bad_out.jsonl");
    INFO(line << " -> " << r.err);
    CHECK(r.code == 2);
    CHECK(r.err.find(input.string() + " " + msg) != std::string::npos);
  }
}

TEST_CASE("saker bench reports vLLM's serving metrics for rolling and dynamic batching",
          "[cli][bench]") {
  const std::string model = (kFixtures / "gqa8x2-fp32").string();
  const fs::path out = fs::temp_directory_path() / "saker_bench.json";
  struct Case {
    std::string flags;
    int np;
    double max_batch;
  };
  const Case cases[] = {
      {"--batching rolling --max-rolling-batch-size 4", 1, 4},
      {"--batching dynamic --batch-size 3 --max-batch-delay 5", 1, 3},
      {"--request-rate 200 --max-concurrency 2", 1, 2},
      {"--max-rolling-batch-size 4", 2, 4},
      {"--max-concurrency 1", 1, 1},
  };
  for (const Case& c : cases) {
    const Run r = saker_cmd("bench --threads 1 --model '" + model +
                                "' --workload fixed:8:6 --num-requests 7 --output-json '" +
                                out.string() + "' " + c.flags,
                            c.np);
    INFO(c.flags << " np " << c.np << "\n" << r.out << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("TTFT (ms)") != std::string::npos);
    CHECK(r.out.find("E2E latency (ms)") != std::string::npos);
    std::ifstream in(out);
    const json j = json::parse(in);
    CHECK(j["completed"] == 7);
    CHECK(j["total_input_tokens"] == 56);
    CHECK(j["total_output_tokens"] == 42);  // EOS ignored: exactly as asked
    for (const char* k : {"request_throughput", "output_throughput", "total_token_throughput"})
      CHECK(j[k].get<double>() > 0);
    CHECK(j["output_throughput"].get<double>() == Approx(42 / j["duration_s"].get<double>()));
    for (const char* k : {"ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"}) {
      INFO(k);
      const json& d = j[k];
      CHECK(d["p50"].get<double>() > 0);
      CHECK(d["p50"].get<double>() <= d["p90"].get<double>());
      CHECK(d["p90"].get<double>() <= d["p99"].get<double>());
    }
    CHECK(j["e2el_ms"]["p50"].get<double>() >= j["ttft_ms"]["p50"].get<double>());
    CHECK(j["avg_batch_size"].get<double>() <= c.max_batch);
    CHECK(j["avg_batch_size"].get<double>() >= 1.0);
    // The engine's time per iteration: the forward pass and the host's part add up to the step.
    CHECK(j["forward_ms_per_iteration"].get<double>() > 0);
    CHECK(j["host_ms_per_iteration"].get<double>() > 0);
    CHECK(j["forward_ms_per_iteration"].get<double>() + j["host_ms_per_iteration"].get<double>() ==
          Approx(j["step_ms_per_iteration"].get<double>()));
    CHECK(j["host_fraction_of_step"].get<double>() ==
          Approx(j["host_ms_per_iteration"].get<double>() /
                 j["step_ms_per_iteration"].get<double>()));
    CHECK(r.out.find("engine time") != std::string::npos);
    // The floors: a decode step is bound by bytes or FLOPs, prefill by FLOPs at the FMA peak.
    CHECK(j["fma_peak_gflops"].get<double>() > 0);
    CHECK(j["decode_step_floor_ms"].get<double>() >= j["tpot_floor_ms"].get<double>());
    CHECK(j["prefill_fraction_of_fma_peak"].get<double>() ==
          Approx(j["prefill_tokens_per_s"].get<double>() *
                 j["prefill_flops_per_token"].get<double>() /
                 (j["fma_peak_gflops"].get<double>() * 1e9))
              .epsilon(1e-6));
    // One request at a time on one rank: every step is paired with its own floor, measured right
    // after it. 7 requests of 8 prompt tokens and 6 outputs: 7 prefill steps (the first token
    // each) and 35 decode steps; none otherwise.
    const bool alone = c.max_batch == 1 && c.np == 1;
    const json& dec = j["decode_step_fraction_of_paired_floor"];
    const json& pre = j["prefill_step_fraction_of_paired_peak"];
    CHECK(dec["count"] == (alone ? 35 : 0));
    CHECK(pre["count"] == (alone ? 7 : 0));
    CHECK(j["paired_read_bandwidth_gbps"]["count"] == dec["count"]);
    CHECK(j["paired_fma_peak_gflops"]["count"] == pre["count"]);
    for (const json* sp : {&dec, &pre})
      if ((*sp)["count"].get<int>() > 0) {
        CHECK((*sp)["p10"].get<double>() > 0);
        CHECK((*sp)["p10"].get<double>() <= (*sp)["p50"].get<double>());
        CHECK((*sp)["p50"].get<double>() <= (*sp)["p90"].get<double>());
      }
  }
}

TEST_CASE("saker bench --guided-json constrains every request; a bad schema is a usage error",
          "[cli][bench][structured]") {
  const fs::path model = text_model("bench_guided");
  const fs::path out = fs::temp_directory_path() / "saker_bench_guided.json";
  const fs::path schema = write_file("saker_bench_schema.json", R"({"enum": ["yes", "no"]})");
  const Run r = saker_cmd("bench --threads 1 --model '" + model.string() +
                          "' --workload fixed:8:16 --num-requests 6 --guided-json '" +
                          schema.string() + "' --output-json '" + out.string() + "'");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("constraint              guided_json " + schema.string()) != std::string::npos);
  std::ifstream in(out);
  const json j = json::parse(in);
  // Each output is "yes" or "no" and its end token: the structure ends it long before 16 tokens.
  CHECK(j["completed"] == 6);
  CHECK(j["total_output_tokens"].get<int>() < 6 * 16);
  const fs::path bad =
      write_file("saker_bench_bad_schema.json", R"({"type": "array", "contains": {}})");
  const Run b =
      saker_cmd("bench --model '" + model.string() + "' --guided-json '" + bad.string() + "'");
  CHECK(b.code == 2);
  CHECK(b.err.find("--guided-json: JSON schema keyword `contains`") != std::string::npos);
}

TEST_CASE("saker bench's shared-prefix workload is served from the prefix cache when it is on",
          "[cli][bench][prefix]") {
  const std::string model = (kFixtures / "gqa8x2-fp32").string();
  const fs::path out = fs::temp_directory_path() / "saker_bench_prefix.json";
  for (const bool on : {true, false}) {
    // One request at a time: every request after a prefix's first finds it cached (2 prefixes of
    // 32 tokens, 2 blocks of 16 each, and an 8-token question of its own).
    const Run r = saker_cmd("bench --threads 1 --model '" + model +
                            "' --workload shared-prefix:2:32:8:2 --num-requests 8 "
                            "--max-concurrency 1 --output-json '" +
                            out.string() + "'" + (on ? "" : " --no-enable-prefix-caching"));
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    std::ifstream in(out);
    const json j = json::parse(in);
    CHECK(j["enable_prefix_caching"] == on);
    CHECK(j["total_input_tokens"] == 8 * 40);
    CHECK(j["prefix_cache_queries"] == 8 * 40);
    if (on) {
      // At most 2 requests (each prefix's first) miss; every other one hits both prefix blocks.
      CHECK(j["prefix_cache_hits"].get<int>() >= 6 * 32);
      CHECK(j["prefix_cache_hits"].get<int>() <= 7 * 32);
      CHECK(r.out.find("prefix cache            on: ") != std::string::npos);
    } else {
      CHECK(j["prefix_cache_hits"] == 0);
    }
  }
}

TEST_CASE("saker bench and the engine flags reject bad values", "[cli][bench]") {
  const std::string model = (kFixtures / "gqa8x2-fp32").string();
  const std::pair<std::string, std::string> cases[] = {
      {"--workload fixed:0:3", "--workload lengths must be positive"},
      {"--workload zipf", "--workload must be mixed"},
      {"--workload shared-prefix:2:32", "--workload shared-prefix takes"},
      {"--workload shared-prefix:2:4000:8:2", "positions; the model's context is"},
      {"--workload fixed:4000:10", "positions; the model's context is"},
      {"--request-rate -1", "--request-rate must be a positive number"},
      {"--batch-size 4", "--batch-size is for --batching dynamic"},
      {"--batching static", "--batching must be rolling or dynamic"},
      {"--kv-cache-memory 12XB", "unknown unit 'XB'"},
      {"--kv-cache-memory 1KiB", "holds no block of 16 tokens"},
      {"--kv-cache-memory 100TB", "bytes) is more than the"},
      {"--scheduler-policy fifo", "--scheduler-policy must be"},
      // The engine's OptionErrors name its fields; the app tells them back as the flags.
      {"--block-size 0", "--block-size must be positive"},
      {"--max-rolling-batch-size 0", "--max-rolling-batch-size must be positive"},
      {"--kv-cache-fraction 2", "--kv-cache-fraction must be in (0, 1]"},
      {"--dtype int4", "--dtype must be auto, int8, w8a8, fp8, bf16, fp16 or fp32"},
      {"--cpu-matmul fp16", "--cpu-matmul must be auto, fp32 or bf16, not 'fp16'"},
      {"--collective-timeout 0", "--collective-timeout must be positive"},
      {"--batch-invariant --no-batch-invariant", "--batch-invariant and --no-batch-invariant"},
      {"--random-weights --device cpu", "--random-weights makes the weights on a CUDA device"},
  };
  for (const auto& [flags, msg] : cases) {
    const Run r = saker_cmd("bench --model '" + model + "' --num-requests 2 " + flags);
    INFO(flags << " -> " << r.err);
    CHECK(r.code == 2);  // every one a usage error
    CHECK(r.err.find(msg) != std::string::npos);
  }
}

TEST_CASE("the KV pool is sized from --kv-cache-memory, the same on every rank", "[cli][kv]") {
  const fs::path dir = kFixtures / "gqa8x2-fp32";  // 2 KV heads: one per rank at tp 2
  const saker::ModelShape c = saker::load_model_shape(dir);
  const std::int64_t per_block = 2 * c.layers * c.kv_heads * c.head_dim * 16 * 4;  // fp32 K and V
  const fs::path out = fs::temp_directory_path() / "saker_bench_kv.json";
  for (const int np : {1, 2}) {
    const Run r = saker_cmd("bench --threads 1 --model '" + dir.string() +
                                "' --workload fixed:8:6 --num-requests 3 --kv-cache-memory " +
                                std::to_string(10 * per_block + per_block / 4) +
                                " --output-json '" + out.string() + "'",
                            np);
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::ifstream in(out);
    // Each rank holds 1/np of the KV heads, so the same bytes hold np times the blocks.
    CHECK(json::parse(in)["kv_blocks"] == 10 * np);
  }
}

TEST_CASE("saker bench --speculative-method ngram speculates at a full batch and reports it",
          "[cli][bench][speculative]") {
  // A batch of one: each sequence needs logit rows for its proposals beyond the batch's one each.
  const fs::path model = text_model("bench_spec");
  const fs::path out = fs::temp_directory_path() / "saker_bench_spec.json";
  const Run r = saker_cmd("bench --threads 1 --model '" + model.string() +
                          "' --workload fixed:8:32 --num-requests 2 --max-rolling-batch-size 1 "
                          "--speculative-method ngram --num-speculative-tokens 3 "
                          "--no-speculative-adaptive --output-json '" +
                          out.string() + "'");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("speculative decoding") != std::string::npos);
  std::ifstream in(out);
  const json j = json::parse(in);
  CHECK(j["spec_decode_num_drafts"].get<int>() > 0);
  CHECK(j["spec_decode_num_draft_tokens"].get<int>() >=
        j["spec_decode_num_accepted_tokens"].get<int>());
  CHECK(j["spec_decode_num_accepted_tokens"].get<int>() > 0);
  CHECK(j["spec_decode_mean_accepted_length"].get<double>() > 1.0);
  const Run bad = saker_cmd("bench --model '" + model.string() + "' --speculative-method draft");
  CHECK(bad.code == 2);
  CHECK(bad.err.find("needs speculative_model") != std::string::npos);
  CHECK(bad.err.find("--speculative-model") != std::string::npos);
}

TEST_CASE("the copy workload gives a passage twice and begins it a third time", "[bench]") {
  const auto w = saker::cli::parse_workload("copy:10:20", 2048);
  const auto reqs =
      saker::cli::make_requests(w, 3, std::numeric_limits<double>::infinity(), 384, 1);
  REQUIRE(reqs.size() == 3);
  for (const auto& r : reqs) {
    REQUIRE(r.prompt.size() == 25);
    CHECK(std::equal(r.prompt.begin(), r.prompt.begin() + 10, r.prompt.begin() + 10));
    CHECK(std::equal(r.prompt.begin(), r.prompt.begin() + 5, r.prompt.begin() + 20));
    CHECK(r.output == 20);
  }
  CHECK(reqs[0].prompt != reqs[1].prompt);
  CHECK(saker::cli::parse_workload("copy", 2048).a == 64);
  CHECK_THROWS_WITH(saker::cli::parse_workload("copy:1000:200", 2048),
                    Catch::Contains("positions; the model's context is 2048"));
}

TEST_CASE("saker bench --speculative-model: the model drafting for itself has every proposal kept",
          "[cli][bench][speculative][draft]") {
  const fs::path model = text_model("bench_draft");
  const fs::path out = fs::temp_directory_path() / "saker_bench_draft.json";
  const Run r = saker_cmd("bench --threads 1 --model '" + model.string() +
                          "' --workload fixed:8:32 --num-requests 2 --max-rolling-batch-size 2 "
                          "--speculative-model '" +
                          model.string() +
                          "' --num-speculative-tokens 3 --no-speculative-adaptive --output-json '" +
                          out.string() + "'");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  std::ifstream in(out);
  const json j = json::parse(in);
  CHECK(j["spec_decode_num_draft_tokens"].get<int>() > 0);
  CHECK(j["spec_decode_num_accepted_tokens"] == j["spec_decode_num_draft_tokens"]);
  CHECK(j["spec_decode_mean_accepted_length"].get<double>() > 3.0);
  // A draft with another vocabulary is refused, named.
  const fs::path demo_draft = kFixtures / ".." / ".." / "models" / "falcon-demo-draft";
  const Run bad = saker_cmd("bench --model '" + model.string() + "' --speculative-model '" +
                            demo_draft.string() + "'");
  CHECK(bad.code == 2);
  CHECK(bad.err.find("--speculative-model") != std::string::npos);
  CHECK(bad.err.find("vocabulary of 8192 tokens; the target's has 384") != std::string::npos);
}
