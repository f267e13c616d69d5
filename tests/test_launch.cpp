// saker launch: serving.properties parsing and precedence, every key's validation, the exact
// mpirun command (--dry-run), and a real 2-rank server started from a properties file.
#include <sys/wait.h>

#include <cctype>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include <algorithm>

#include <catch2/catch.hpp>

#include "launcher/launch/properties.h"
#include "tests/run_command.h"
#include "tests/text_model.h"

namespace fs = std::filesystem;
using namespace saker::cli;
using saker::test::Run;

namespace {

const fs::path kFixtures = SAKER_FIXTURES_DIR;

fs::path model_dir() {
  return kFixtures / "gqa8x2-fp32";
}

Run launch(const std::string& args, const std::string& env = "") {
  return saker::test::run_command(env + " '" + std::string(SAKER_BIN) + "' launch " + args +
                                  " </dev/null");
}

// The 384-token model with its tokenizer and a serving.properties for 2 ranks, in a directory of
// the test's own (CTest may run test cases at the same time).
fs::path launch_model(const std::string& tag) {
  const fs::path dir = saker::test::text_model(kFixtures, "launch_" + tag);
  std::ofstream(dir / "serving.properties")
      << "engine=MPI\noption.model_id=" << dir.string() << "\noption.tensor_parallel_degree=2\n";
  return dir;
}

fs::path write(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST_CASE("serving.properties lines, comments and continuations", "[launch]") {
  const Properties p = parse_properties(
      "# a comment\n! another\nengine=MPI\noption.model_id : /models/x\n  job_queue_size   12  \n"
      "option.rolling_batch=lmi-\\\n    dist\nempty=\n\r\nbatch_size=4\r\n",
      "serving.properties");
  CHECK(p.at("engine") == "MPI");
  CHECK(p.at("option.model_id") == "/models/x");
  CHECK(p.at("job_queue_size") == "12");
  CHECK(p.at("option.rolling_batch") == "lmi-dist");
  CHECK(p.at("empty") == "");
  CHECK(p.at("batch_size") == "4");
  CHECK(p.size() == 6);
  CHECK_THROWS_WITH(parse_properties("a=1\n=2\n", "f.properties"),
                    Catch::Contains("f.properties line 2: no key"));
  CHECK_THROWS_WITH(parse_properties("a=1\\", "f"),
                    Catch::Contains("ends inside a continued line"));
}

TEST_CASE("OPTION_* and SERVING_* environment variables name properties", "[launch]") {
  const Properties p =
      properties_from_env({"OPTION_MAX_ROLLING_BATCH_SIZE=8", "SERVING_JOB_QUEUE_SIZE=5",
                           "OPTION_=x", "HOME=/root", "junk"});
  CHECK(p == Properties{{"option.max_rolling_batch_size", "8"}, {"job_queue_size", "5"}});
}

TEST_CASE("every key is checked for type and range, with the key and value named", "[launch]") {
  const std::string dir = model_dir().string();
  const std::pair<Properties, std::string> bad[] = {
      {{}, "option.model_id is required"},
      {{{"option.model_id", "/nonexistent"}},
       "option.model_id=/nonexistent: must be a local model directory"},
      {{{"engine", "Python"}}, "engine=Python: saker runs as engine=MPI"},
      {{{"option.tensor_parallel_degree", "0"}}, "option.tensor_parallel_degree=0: must be >= 1"},
      {{{"option.tensor_parallel_degree", "two"}},
       "option.tensor_parallel_degree=two: must be an integer"},
      {{{"option.tensor_parallel_degree", "4294967297"}},
       "option.tensor_parallel_degree=4294967297: must be at most 65536"},
      {{{"option.rolling_batch", "sometimes"}}, "option.rolling_batch=sometimes: must be auto"},
      {{{"option.max_rolling_batch_size", "-1"}}, "option.max_rolling_batch_size=-1: must be >= 1"},
      {{{"option.max_rolling_batch_prefill_tokens", "1.5"}}, "must be an integer"},
      {{{"option.dtype", "fp4"}}, "option.dtype=fp4: must be fp16, bf16, fp32, int8, w8a8 or fp8"},
      {{{"option.max_input_len", "0"}}, "option.max_input_len=0: must be >= 1"},
      {{{"option.max_output_len", "x"}}, "option.max_output_len=x: must be an integer"},
      {{{"option.output_formatter", "xml"}},
       "option.output_formatter=xml: must be json or jsonlines"},
      {{{"option.model_loading_timeout", "0"}}, "option.model_loading_timeout=0: must be >= 1"},
      {{{"batch_size", "0"}}, "batch_size=0: must be >= 1"},
      {{{"max_batch_delay", "-5"}}, "max_batch_delay=-5: must be >= 0"},
      {{{"job_queue_size", "lots"}}, "job_queue_size=lots: must be an integer"},
      {{{"option.enable_prefix_caching", "yes"}},
       "option.enable_prefix_caching=yes: must be true or false"},
      {{{"option.batch_invariant", "1"}}, "option.batch_invariant=1: must be true or false"},
      {{{"option.kv_cache_dtype", "fp64"}},
       "option.kv_cache_dtype=fp64: must be auto, fp32, bf16, fp16, fp8_e4m3 or int8"},
      {{{"option.cpu_matmul", "fp16"}}, "option.cpu_matmul=fp16: must be auto, fp32 or bf16"},
      {{{"option.speculative_draft_model", "/nonexistent"}},
       "option.speculative_draft_model=/nonexistent: must be a local model directory"},
      {{{"option.speculative_length", "3"}},
       "option.speculative_length=3: needs option.speculative_draft_model"},
      {{{"option.speculative_draft_model", dir}, {"option.speculative_length", "0"}},
       "option.speculative_length=0: must be >= 1"},
      {{{"option.speculative_draft_model", dir}, {"option.speculative_length", "17"}},
       "option.speculative_length=17: must be at most 16"},
  };
  for (auto [p, msg] : bad) {
    if (!p.count("option.model_id") && msg.find("model_id is required") == std::string::npos)
      p["option.model_id"] = dir;
    INFO(msg);
    CHECK_THROWS_WITH(validate_properties(p), Catch::Contains(msg));
  }
  const LaunchSettings s = validate_properties({{"option.model_id", dir},
                                                {"option.tensor_parallel_degree", "max"},
                                                {"option.rolling_batch", "disable"},
                                                {"option.dtype", "bf16"},
                                                {"option.entryPoint", "x"}});
  CHECK(s.tp_max);
  CHECK(s.batching == "dynamic");
  CHECK(s.unknown_keys == std::vector<std::string>{"option.entryPoint"});
  // option.dtype=int8 quantizes the weights; the other names keep the stored precision.
  LaunchTarget t;
  t.saker = "/bin/saker";
  const auto int8 =
      mpirun_command(validate_properties({{"option.model_id", dir}, {"option.dtype", "int8"}}), t);
  const auto at = std::find(int8.begin(), int8.end(), "--dtype");
  REQUIRE(at != int8.end());
  CHECK(*(at + 1) == "int8");
  const auto fp8 =
      mpirun_command(validate_properties({{"option.model_id", dir}, {"option.dtype", "FP8"}}), t);
  const auto fp8_at = std::find(fp8.begin(), fp8.end(), "--dtype");
  REQUIRE(fp8_at != fp8.end());
  CHECK(*(fp8_at + 1) == "fp8");
  const auto bf16 = mpirun_command(s, t);
  CHECK(std::find(bf16.begin(), bf16.end(), "--dtype") == bf16.end());
  // option.enable_prefix_caching and option.batch_invariant: the serve flag either way; unset,
  // the engine's default (on).
  for (const auto& [key, value, flag] :
       {std::tuple{"option.enable_prefix_caching", "false", "--no-enable-prefix-caching"},
        std::tuple{"option.enable_prefix_caching", "TRUE", "--enable-prefix-caching"},
        std::tuple{"option.batch_invariant", "false", "--no-batch-invariant"},
        std::tuple{"option.batch_invariant", "true", "--batch-invariant"}}) {
    const auto c = mpirun_command(validate_properties({{"option.model_id", dir}, {key, value}}), t);
    CHECK(std::count(c.begin(), c.end(), std::string(flag)) == 1);
  }
  CHECK(std::count_if(bf16.begin(), bf16.end(), [](const std::string& a) {
          return a.find("prefix-caching") != std::string::npos ||
                 a.find("batch-invariant") != std::string::npos;
        }) == 0);
  // option.kv_cache_dtype: the serve flag with the canonical name; unset, no flag (auto).
  for (const auto& [value, name] :
       {std::pair{"BFloat16", "bf16"}, std::pair{"fp16", "fp16"}, std::pair{"auto", "auto"},
        std::pair{"float32", "fp32"}, std::pair{"FP8", "fp8_e4m3"},
        std::pair{"fp8_e4m3", "fp8_e4m3"}, std::pair{"INT8", "int8"}}) {
    const auto c = mpirun_command(
        validate_properties({{"option.model_id", dir}, {"option.kv_cache_dtype", value}}), t);
    const auto flag = std::find(c.begin(), c.end(), "--kv-cache-dtype");
    REQUIRE(flag != c.end());
    CHECK(*(flag + 1) == name);
  }
  CHECK(std::find(bf16.begin(), bf16.end(), "--kv-cache-dtype") == bf16.end());
  // option.cpu_matmul and option.dtype=w8a8: serve flags; unset, none (auto).
  for (const auto& [key, value, flag] : {std::tuple{"option.cpu_matmul", "FP32", "--cpu-matmul"},
                                         std::tuple{"option.cpu_matmul", "bf16", "--cpu-matmul"},
                                         std::tuple{"option.dtype", "W8A8", "--dtype"}}) {
    const auto c = mpirun_command(validate_properties({{"option.model_id", dir}, {key, value}}), t);
    const auto at = std::find(c.begin(), c.end(), flag);
    REQUIRE(at != c.end());
    std::string lowered = value;
    std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    CHECK(*(at + 1) == lowered);
  }
  CHECK(std::find(bf16.begin(), bf16.end(), "--cpu-matmul") == bf16.end());
  // DJL LMI's speculative decoding keys: the draft model and K, as serve flags.
  const auto spec = mpirun_command(validate_properties({{"option.model_id", dir},
                                                        {"option.speculative_draft_model", dir},
                                                        {"option.speculative_length", "5"}}),
                                   t);
  const auto draft = std::find(spec.begin(), spec.end(), "--speculative-model");
  REQUIRE(draft != spec.end());
  CHECK(*(draft + 1) == dir);
  const auto k = std::find(spec.begin(), spec.end(), "--num-speculative-tokens");
  REQUIRE(k != spec.end());
  CHECK(*(k + 1) == "5");
  CHECK(std::find(bf16.begin(), bf16.end(), "--speculative-model") == bf16.end());
}

TEST_CASE("the mpirun command for several configurations", "[launch]") {
  LaunchSettings s = validate_properties({{"option.model_id", model_dir().string()},
                                          {"option.tensor_parallel_degree", "4"},
                                          {"option.max_rolling_batch_size", "16"},
                                          {"option.max_rolling_batch_prefill_tokens", "256"},
                                          {"job_queue_size", "50"}});
  LaunchTarget t;
  t.saker = "/bin/saker";
  t.as_root = true;
  t.cores = 2;
  t.env_to_forward = {"LD_LIBRARY_PATH", "NCCL_DEBUG"};
  const std::string dir = model_dir().string();
  CHECK(mpirun_command(s, t) == std::vector<std::string>{"mpirun",
                                                         "--allow-run-as-root",
                                                         "--oversubscribe",
                                                         "-np",
                                                         "4",
                                                         "--bind-to",
                                                         "none",
                                                         "-x",
                                                         "LD_LIBRARY_PATH",
                                                         "-x",
                                                         "NCCL_DEBUG",
                                                         "/bin/saker",
                                                         "serve",
                                                         "--model",
                                                         dir,
                                                         "--host",
                                                         "127.0.0.1",
                                                         "--port",
                                                         "8080",
                                                         "--batching",
                                                         "rolling",
                                                         "--threads",
                                                         "1",
                                                         "--max-rolling-batch-size",
                                                         "16",
                                                         "--max-rolling-batch-prefill-tokens",
                                                         "256",
                                                         "--job-queue-size",
                                                         "50",
                                                         "--output-formatter",
                                                         "json",
                                                         "--model-loading-timeout",
                                                         "1800",
                                                         "--drain-timeout",
                                                         "30"});
  // Multi-node, not root, dynamic batching: no --threads guess, no oversubscription.
  s = validate_properties({{"option.model_id", dir},
                           {"option.tensor_parallel_degree", "8"},
                           {"option.rolling_batch", "disable"},
                           {"batch_size", "4"},
                           {"max_batch_delay", "50"},
                           {"option.output_formatter", "jsonlines"},
                           {"option.model_loading_timeout", "600"}});
  t = {};
  t.saker = "saker";
  t.hostfile = "hosts.txt";
  t.port = 9000;
  t.host = "0.0.0.0";
  CHECK(mpirun_command(s, t) == std::vector<std::string>{"mpirun",    "-np",
                                                         "8",         "--bind-to",
                                                         "none",      "--hostfile",
                                                         "hosts.txt", "saker",
                                                         "serve",     "--model",
                                                         dir,         "--host",
                                                         "0.0.0.0",   "--port",
                                                         "9000",      "--batching",
                                                         "dynamic",   "--batch-size",
                                                         "4",         "--max-batch-delay",
                                                         "50",        "--output-formatter",
                                                         "jsonlines", "--model-loading-timeout",
                                                         "600",       "--drain-timeout",
                                                         "30"});
}

TEST_CASE("saker launch: file < environment < command line, and --dry-run prints the command",
          "[launch][cli]") {
  const std::string dir = model_dir().string();
  const fs::path props =
      write("saker_launch.properties",
            "engine=MPI\noption.model_id=" + dir +
                "\noption.tensor_parallel_degree=2\noption.max_rolling_batch_size=16\n"
                "job_queue_size=10\noption.custom_thing=1\n");
  Run r = launch("--properties '" + props.string() + "' --dry-run");
  REQUIRE(r.code == 0);
  CHECK(r.out.find(" -np 2 ") != std::string::npos);
  CHECK(r.out.find("--max-rolling-batch-size 16") != std::string::npos);
  CHECK(r.out.find("--job-queue-size 10") != std::string::npos);
  CHECK(r.err.find("warning: ignoring keys saker does not know: option.custom_thing") !=
        std::string::npos);
  // The environment overrides the file; the command line overrides both.
  r = launch("--properties '" + props.string() + "' --dry-run --set job_queue_size=30",
             "OPTION_MAX_ROLLING_BATCH_SIZE=8 SERVING_JOB_QUEUE_SIZE=20");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("--max-rolling-batch-size 8") != std::string::npos);
  CHECK(r.out.find("--job-queue-size 30") != std::string::npos);
  // DIR/serving.properties is read when --properties is not given.
  r = launch("--model '" + dir + "' --tensor-parallel-degree 3 --dry-run");
  REQUIRE(r.code == 0);
  CHECK(r.out.find(" -np 3 ") != std::string::npos);
  r = launch("--properties '" + props.string() + "' --set option.rolling_batch=never --dry-run");
  CHECK(r.code == 2);
  CHECK(r.err.find("option.rolling_batch=never") != std::string::npos);
  // The KV cache flags are the serving.properties keys' (over the file), passed on to serve.
  r = launch("--properties '" + props.string() +
             "' --kv-cache-dtype FP8 --no-enable-prefix-caching --dry-run");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("--kv-cache-dtype fp8_e4m3") != std::string::npos);
  CHECK(r.out.find("--no-enable-prefix-caching") != std::string::npos);
  r = launch("--properties '" + props.string() + "' --kv-cache-dtype fp64 --dry-run");
  CHECK(r.code == 2);
  CHECK(r.err.find("option.kv_cache_dtype=fp64") != std::string::npos);
}

TEST_CASE("saker launch runs a real 2-rank server and stops it gracefully", "[launch][cli]") {
  const fs::path dir = launch_model("run");
  const int port = 18000 + static_cast<int>(::getpid() % 2000);
  const fs::path log = fs::temp_directory_path() / "saker_launch.log";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // option.api_key from the environment (OPTION_API_KEY), as SageMaker passes options.
    const std::string cmd = "OPTION_API_KEY=launch-key-42 exec '" + std::string(SAKER_BIN) +
                            "' launch --properties '" + (dir / "serving.properties").string() +
                            "' --port " + std::to_string(port) + " >'" + log.string() + "' 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  bool ready = false;
  for (int i = 0; i < 150 && !ready; ++i) {
    ready =
        saker::test::run_command("curl -s -o /dev/null -w '%{http_code}' " + url + "/ping").out ==
        "200";
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(ready);
  const std::string body =
      " -H 'Content-Type: application/json' -d '{\"inputs\": \"The falcon\", "
      "\"parameters\": {\"max_new_tokens\": 5, \"details\": true}}'";
  CHECK(
      saker::test::run_command("curl -s -o /dev/null -w '%{http_code}' " + url + "/generate" + body)
          .out == "401");
  const Run gen = saker::test::run_command("curl -s -H 'Authorization: Bearer launch-key-42' " +
                                           url + "/generate" + body);
  CHECK(gen.out.find("\"generated_tokens\":5") != std::string::npos);
  // The key is in no command line of the job (mpirun's -x names the variable only).
  CHECK(saker::test::run_command(
            "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c launch-key-[4]2")
            .out == "0\n");
  // SIGTERM to launch reaches rank 0, which drains and stops every rank: the job exits 0.
  ::kill(pid, SIGTERM);
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (::waitpid(pid, &status, WNOHANG) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  INFO(text);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(text.find("passed to rank 0") != std::string::npos);
  CHECK(text.find("stopped") != std::string::npos);
  CHECK(text.find("launch-key-42") == std::string::npos);
}

namespace {

// Starts `cmd` in the background with its output in `log`; returns the pid.
pid_t spawn(const std::string& cmd, const fs::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string full = "exec " + cmd + " >'" + log.string() + "' 2>&1 </dev/null";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Waits up to `limit` for pid; returns its wait status, or -1 if it is still running (killed).
int wait_for(pid_t pid, std::chrono::seconds limit, double* seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - t0 > limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return status;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

bool wait_ready(const std::string& url) {
  for (int i = 0; i < 150; ++i) {
    if (saker::test::run_command("curl -s -o /dev/null -w '%{http_code}' " + url + "/ping").out ==
        "200")
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

}  // namespace

TEST_CASE("a rank killed while serving ends the launched job within 10 s, named",
          "[launch][fault]") {
  const fs::path dir = launch_model("kill");
  const int port = 20000 + static_cast<int>(::getpid() % 2000);
  const fs::path log = fs::temp_directory_path() / "saker_launch_kill.log";
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  // Rank 1 dies (SIGKILL) before its 4th step; saker launch forwards SAKER_* to every rank.
  const pid_t pid =
      spawn("env SAKER_TEST_FAULT=1:kill:4 '" + std::string(SAKER_BIN) + "' launch --model '" +
                dir.string() + "' --port " + std::to_string(port),
            log);
  REQUIRE(wait_ready(url));
  saker::test::run_command(
      "curl -s -m 20 " + url +
      "/generate -d '{\"inputs\": \"The falcon\", \"parameters\": {\"max_new_tokens\": 30}}'");
  double seconds = 0;
  const int status = wait_for(pid, std::chrono::seconds(10), &seconds);
  const std::string text = slurp(log);
  INFO(text);
  REQUIRE(status != -1);  // gone within 10 s of the request that hit the dead rank
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(text.find("rank 1") != std::string::npos);
  CHECK(text.find("signal 9") != std::string::npos);
}

TEST_CASE("a hung collective is ended by the watchdog with a message, health 503 meanwhile",
          "[launch][fault]") {
  const fs::path dir = launch_model("hang");
  const int port = 22000 + static_cast<int>(::getpid() % 2000);
  const fs::path log = fs::temp_directory_path() / "saker_watchdog.log";
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  const pid_t pid =
      spawn("'" + std::string(SAKER_MPIEXEC) +
                "' --allow-run-as-root --oversubscribe -np 2 -x SAKER_TEST_FAULT=1:hang:3 '" +
                std::string(SAKER_BIN) + "' serve --threads 1 --model '" + dir.string() +
                "' --port " + std::to_string(port) + " --collective-timeout 4",
            log);
  REQUIRE(wait_ready(url));
  // The request's third step never completes: rank 1 stopped before it.
  const pid_t req = spawn("curl -s -m 30 " + url +
                              "/generate -d '{\"inputs\": \"hi\", \"parameters\": "
                              "{\"max_new_tokens\": 30}}'",
                          fs::temp_directory_path() / "saker_watchdog_req.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  const Run ping = saker::test::run_command("curl -s -w ' %{http_code}' " + url + "/ping");
  CHECK(ping.out.find("503") != std::string::npos);
  CHECK(ping.out.find("stuck") != std::string::npos);
  double seconds = 0;
  const int status = wait_for(pid, std::chrono::seconds(20), &seconds);
  double ignored = 0;
  wait_for(req, std::chrono::seconds(5), &ignored);
  const std::string text = slurp(log);
  INFO(text);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(text.find("collective watchdog: step 3 has not completed after") != std::string::npos);
}

TEST_CASE("a load slower than the model loading timeout ends the job with a message",
          "[launch][fault]") {
  const fs::path dir = launch_model("slow");
  const fs::path log = fs::temp_directory_path() / "saker_slow_load.log";
  // Rank 0's load takes 30 s more than it should; option.model_loading_timeout is 2 s.
  const pid_t pid = spawn("env SAKER_TEST_FAULT=0:delay_load:30 '" + std::string(SAKER_BIN) +
                              "' launch --model '" + dir.string() +
                              "' --set option.model_loading_timeout=2 --port 0",
                          log);
  double seconds = 0;
  const int status = wait_for(pid, std::chrono::seconds(20), &seconds);
  const std::string text = slurp(log);
  INFO(text);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(seconds < 15);
  CHECK(text.find("loading the model took longer than --model-loading-timeout (2 s)") !=
        std::string::npos);
}

namespace {

// The pid of the saker rank `rank` that mpirun `mpirun_pid` started (its direct child).
pid_t rank_of(pid_t mpirun_pid, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (!std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const std::string stat = slurp(e.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid != mpirun_pid) continue;
    std::string env = slurp(e.path() / "environ");
    std::replace(env.begin(), env.end(), '\0', '\n');
    if ((env + "\n").find(want + "\n") != std::string::npos) return std::stoi(name);
  }
  return -1;
}

}  // namespace

TEST_CASE("a rank that stops answering ends the job within seconds, the lost rank named",
          "[launch][fault]") {
  // SIGSTOP stands for a lost link or a frozen node: the process is there, it just never answers.
  const fs::path dir = launch_model("lost");
  for (const int lost : {1, 0}) {
    INFO("rank " << lost << " stops");
    const int port = 24000 + static_cast<int>(::getpid() % 2000) + lost;
    const fs::path log =
        fs::temp_directory_path() / ("saker_lost_" + std::to_string(lost) + ".log");
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const pid_t pid =
        spawn("'" + std::string(SAKER_MPIEXEC) + "' --allow-run-as-root --oversubscribe -np 2 '" +
                  std::string(SAKER_BIN) + "' serve --threads 1 --model '" + dir.string() +
                  "' --port " + std::to_string(port) + " --peer-timeout 3 --heartbeat-interval 0.5",
              log);
    REQUIRE(wait_ready(url));
    // A few idle heartbeats pass first: an idle server is not mistaken for a lost one.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    REQUIRE(::waitpid(pid, nullptr, WNOHANG) == 0);
    const pid_t victim = rank_of(pid, lost);
    REQUIRE(victim > 0);
    ::kill(victim, SIGSTOP);
    // A request in flight (rank 1's case) or arriving (rank 0's, which is frozen) gets an error,
    // not a hang.
    const Run req = saker::test::run_command(
        "curl -s -m 25 -o /dev/null -w '%{http_code}' " + url +
        "/generate -d '{\"inputs\": \"hi\", \"parameters\": {\"max_new_tokens\": 400}}'");
    double seconds = 0;
    const int status = wait_for(pid, std::chrono::seconds(30), &seconds);
    ::kill(victim, SIGKILL);
    const std::string text = slurp(log);
    INFO(text);
    REQUIRE(status != -1);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
    CHECK(req.out != "200");
    CHECK(text.find(lost == 1 ? "(--peer-timeout 3 s)" : "(--peer-timeout 3.5 s)") !=
          std::string::npos);
    CHECK(text.find("rank " + std::to_string(lost) + " on host ") != std::string::npos);
    if (lost == 0) CHECK(text.find("waiting for rank 0's next plan") != std::string::npos);
  }
}
