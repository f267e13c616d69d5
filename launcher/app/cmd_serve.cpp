// saker serve: the HTTP frontends on rank 0, the other ranks executing its plans. The port opens
// before the weights load, so orchestrators can poll /ping and /health (503 until a warm-up
// iteration has run).
#include <unistd.h>

#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include "engine/tokenizer/tokenizer.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_setup.h"
#include "launcher/app/fault_hooks.h"
#include "launcher/serve/api.h"
#include "launcher/serve/ipc_server.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

class LoadWatchdog {
 public:
  explicit LoadWatchdog(double seconds)
      : thread_([this, seconds] {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return done_; }))
            return;
          spdlog::error(
              "loading the model took longer than --model-loading-timeout ({} s); aborting the job",
              seconds);
          world().abort(1);
        }) {}
  ~LoadWatchdog() { done(); }
  void done() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

int run_serve(const std::vector<std::string>& args) {
  EngineOptions o;
  std::string host = "127.0.0.1", name, formatter = "json";
  int port = 8080;
  std::size_t queue = 1000;
  double drain = 30;
  std::string body_limit = "4MiB";
  std::int64_t max_input = 0, max_output = 0;
  double load_timeout = 1800;
  std::vector<std::string> ipc_endpoints;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")(
      "model", po::value(&o.model_dir)->required(),
      "Hugging Face model directory (safetensors + tokenizer.json)")(
      "host", po::value(&host)->default_value(host), "address to listen on")(
      "port", po::value(&port)->default_value(port), "port (0: any free one, printed)")(
      "served-model-name", po::value(&name), "the model's name in the APIs (default: DIR's name)")(
      "job-queue-size", po::value(&queue)->default_value(queue), "waiting requests before 429")(
      "drain-timeout", po::value(&drain)->default_value(drain),
      "seconds in-flight requests may finish after SIGTERM / SIGINT")(
      "max-body-bytes", po::value(&body_limit)->default_value(body_limit),
      "request body size limit")("max-input-len", po::value(&max_input)->default_value(0),
                                 "prompt tokens (0: the context)")(
      "max-output-len", po::value(&max_output)->default_value(0),
      "new tokens per request (0: no own limit)")(
      "output-formatter", po::value(&formatter)->default_value(formatter),
      "json or jsonlines (DJL: /invocations streams by default)")(
      "model-loading-timeout", po::value(&load_timeout)->default_value(load_timeout),
      "seconds loading and warm-up may take before the job is aborted")(
      "ipc", po::value(&ipc_endpoints)->composing(),
      "backend socket for a frontend: unix:PATH or stdio (NDJSON; docs/ipc.md); HTTP stays on")(
      "log-prompts", po::bool_switch(), "log request bodies (prompts) too");
  desc.add(engine_options(o));
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker serve --model DIR [--host H] [--port P] [options]"))
    return 0;
  finish_engine_options(vm, o);
  if (port < 0 || port > 65535) throw UsageError("--port must be in [0, 65535]");
  if (queue == 0) throw UsageError("--job-queue-size must be positive");
  if (!(drain >= 0)) throw UsageError("--drain-timeout must be >= 0");
  if (!(load_timeout > 0)) throw UsageError("--model-loading-timeout must be positive");
  if (formatter != "json" && formatter != "jsonlines")
    throw UsageError("--output-formatter must be json or jsonlines, got '" + formatter + "'");
  const std::size_t body_bytes = parse_bytes(body_limit, "--max-body-bytes");

  // Logs go to stderr: stdout may carry the backend socket's protocol (--ipc stdio).
  spdlog::set_default_logger(spdlog::stderr_color_mt("saker"));
  Communicator& comm = world().tensor_parallel();
  const FaultHooks faults = FaultHooks::from_env(comm.rank());
  if (comm.rank() != 0) {
    // mpirun forwards SIGTERM / SIGINT to every rank; only rank 0 decides when the job ends.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    Engine engine(o, comm);
    faults.after_load();
    engine.runner().before_each_step([&faults](std::uint64_t step) { faults.before_step(step); });
    engine.runner().serve();
    return 0;
  }

  // saker launch passes stop signals to rank 0 directly (cmd_launch.cpp).
  if (const char* pidfile = std::getenv("SAKER_RANK0_PIDFILE"))
    std::ofstream(pidfile) << getpid() << "\n";
  const ModelShape config = load_model_shape(o.model_dir);
  const Tokenizer tokenizer = Tokenizer::from_model_dir(o.model_dir);
  if (name.empty())
    name = std::filesystem::path(o.model_dir).lexically_normal().filename().string();
  if (name.empty())
    name = std::filesystem::path(o.model_dir).lexically_normal().parent_path().filename().string();
  serve::ServingMetrics metrics;
  serve::EngineLoop loop(metrics, queue);
  serve::ServeContext ctx{loop,
                          metrics,
                          tokenizer,
                          config,
                          name,
                          config.max_positions,
                          max_input,
                          max_output,
                          vm["log-prompts"].as<bool>(),
                          formatter == "jsonlines",
                          {},
                          {},
                          {}};
  for (const AddedToken& t : tokenizer.added_tokens())
    if (t.special) ctx.special_ids.insert(t.id);
  // A chat template that cannot be parsed stops the server here, naming the line and column.
  if (auto tmpl = ChatTemplate::from_model_dir(o.model_dir)) {
    ctx.chat_template = std::move(tmpl->first);
    ctx.chat_vars = std::move(tmpl->second);
    spdlog::info("chat: the checkpoint's chat template");
  } else {
    spdlog::info("chat: no chat template in the checkpoint; the Falcon User:/Falcon: format");
  }
  serve::HttpServer server(loop, serve::make_router(ctx), body_bytes);
  serve::IpcServer ipc(server.io_context(), ctx);
  for (const std::string& e : ipc_endpoints) {
    ipc.open(e);
    spdlog::info("backend socket on {}", e);
  }
  server.start(host, static_cast<unsigned short>(port), [&loop, drain](int sig) {
    spdlog::info("signal {}: draining for up to {} s", sig, drain);
    loop.shutdown(drain);
  });
  spdlog::info("listening on http://{}:{} (503 until the model is loaded and warmed up)", host,
               server.port());

  // A load that takes too long (a stuck filesystem, a rank that never joins) ends the whole job
  // with a message instead of a server that answers 503 forever.
  LoadWatchdog watchdog(load_timeout);
  Engine engine(o, comm);
  faults.after_load();
  engine.runner().before_each_step([&faults](std::uint64_t step) { faults.before_step(step); });
  BatchEngine batch(engine.runner(), engine.scheduler_config(), config.eos_token_ids, &tokenizer);
  {
    // One iteration end to end before /ping says ready.
    BatchRequest warm;
    warm.prompt = {0};
    warm.max_new_tokens = 1;
    warm.ignore_eos = true;
    batch.add(warm);
    batch.run_to_completion();
    batch.take_result(0);
  }
  watchdog.done();
  const CollectiveWatchdog& collectives = engine.watchdog();
  const double stall_s = o.collective_timeout_s / 2;
  loop.set_stall_probe([&collectives, stall_s] { return collectives.busy_seconds() > stall_s; });
  loop.set_health(serve::Health::kReady);
  spdlog::info("ready: {} ({} KV blocks of {} tokens, {} rank(s))", name,
               engine.cache().num_blocks(), engine.cache().block_size(), comm.size());
  loop.run(batch, engine.runner());
  boost::asio::post(server.io_context(), [&ipc] { ipc.close(); });
  server.stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace saker::cli
