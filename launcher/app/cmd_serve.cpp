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
#include "kernels/dtype.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_flags.h"
#include "launcher/serve/api.h"
#include "launcher/serve/http_server.h"
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

struct ServeFlags {
  EngineFlags engine;
  std::string host = "127.0.0.1", name, formatter = "json";
  int port = 8080;
  std::size_t queue_limit = 1000;
  double drain = 30;
  std::string body_limit = "4MiB";
  std::int64_t max_input = 0, max_output = 0;
  double load_timeout = 1800;
  std::vector<std::string> ipc_endpoints;
  std::string api_key;  // --api-key, else $SAKER_API_KEY
  bool api_key_metrics = false;
  serve::ServerLimits http;
  std::string header_bytes = "16KiB", url_bytes = "8KiB", output_bytes = "4MiB";
  int json_depth = kMaxJsonDepth;
  std::int64_t max_choices = 64, max_request_tokens = 0;
  std::string ipc_mode = "0600";
  std::string ssl_certfile, ssl_keyfile, api_key_file;
};

po::options_description serve_options(ServeFlags& f) {
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")(
      "model", po::value(&f.engine.model_dir)->required(),
      "Hugging Face model directory (safetensors + tokenizer.json)")(
      "host", po::value(&f.host)->default_value(f.host), "address to listen on")(
      "port", po::value(&f.port)->default_value(f.port), "port (0: any free one, printed)")(
      "served-model-name", po::value(&f.name),
      "the model's name in the APIs (default: DIR's name)")(
      "job-queue-size", po::value(&f.queue_limit)->default_value(f.queue_limit),
      "waiting requests before 429")(
      "drain-timeout", po::value(&f.drain)->default_value(f.drain),
      "seconds in-flight requests may finish after SIGTERM / SIGINT")(
      "max-body-bytes", po::value(&f.body_limit)->default_value(f.body_limit),
      "request body size limit")("max-input-len", po::value(&f.max_input)->default_value(0),
                                 "prompt tokens (0: the context)")(
      "max-output-len", po::value(&f.max_output)->default_value(0),
      "new tokens per request (0: no own limit)")(
      "output-formatter", po::value(&f.formatter)->default_value(f.formatter),
      "json or jsonlines (DJL: /invocations streams by default)")(
      "model-loading-timeout", po::value(&f.load_timeout)->default_value(f.load_timeout),
      "seconds loading and warm-up may take before the job is aborted")(
      "ipc", po::value(&f.ipc_endpoints)->composing(),
      "backend socket for a frontend: unix:PATH or stdio (NDJSON; docs/ipc.md); HTTP stays on")(
      "log-prompts", po::bool_switch(), "log request bodies (prompts) too")(
      "api-key", po::value(&f.api_key),
      "require Authorization: Bearer KEY on every route but /ping, /health and /metrics "
      "(default: $SAKER_API_KEY, which keeps the key out of the process list)")(
      "api-key-file", po::value(&f.api_key_file),
      "read the API key from this file's first line (kept out of the process list too)")(
      "api-key-metrics", po::bool_switch(&f.api_key_metrics),
      "require the API key on /metrics too")(
      "ssl-certfile", po::value(&f.ssl_certfile),
      "serve HTTPS with this PEM certificate chain (with --ssl-keyfile)")(
      "ssl-keyfile", po::value(&f.ssl_keyfile), "the PEM private key of --ssl-certfile")(
      "max-connections", po::value(&f.http.connections)->default_value(f.http.connections),
      "open HTTP connections; more are answered 503 and closed")(
      "idle-timeout", po::value(&f.http.idle_timeout_s)->default_value(f.http.idle_timeout_s),
      "seconds a connection may wait idle, or take to send one request")(
      "request-timeout",
      po::value(&f.http.request_timeout_s)->default_value(f.http.request_timeout_s),
      "seconds a generation request may run before it is cancelled with 408 (0: no limit)")(
      "max-output-buffer", po::value(&f.output_bytes)->default_value(f.output_bytes),
      "a stream's unsent bytes before a client that stopped reading is cancelled")(
      "max-header-bytes", po::value(&f.header_bytes)->default_value(f.header_bytes),
      "request header fields, together (431 past it)")(
      "max-header-fields", po::value(&f.http.header_fields)->default_value(f.http.header_fields),
      "request header fields, counted (431 past it)")(
      "max-url-bytes", po::value(&f.url_bytes)->default_value(f.url_bytes),
      "request URL length (414 past it)")(
      "max-json-depth", po::value(&f.json_depth)->default_value(f.json_depth),
      "nesting of objects and arrays in a request body, checked while parsing (at most 256)")(
      "max-request-sequences", po::value(&f.max_choices)->default_value(f.max_choices),
      "sequences one request may ask for (prompts x n)")(
      "max-request-tokens", po::value(&f.max_request_tokens)->default_value(0),
      "prompt + new tokens over one request's sequences (0: sequences x the context)")(
      "ipc-socket-mode", po::value(&f.ipc_mode)->default_value(f.ipc_mode),
      "file mode of --ipc unix: sockets (octal; whoever can connect can submit work)");
  desc.add(engine_options(f.engine));
  return desc;
}

void check_flags(const ServeFlags& f) {
  if (f.port < 0 || f.port > 65535) throw UsageError("--port must be in [0, 65535]");
  if (f.queue_limit == 0) throw UsageError("--job-queue-size must be positive");
  if (!(f.drain >= 0)) throw UsageError("--drain-timeout must be >= 0");
  if (!(f.load_timeout > 0)) throw UsageError("--model-loading-timeout must be positive");
  if (f.formatter != "json" && f.formatter != "jsonlines")
    throw UsageError("--output-formatter must be json or jsonlines, got '" + f.formatter + "'");
  if (f.http.connections == 0) throw UsageError("--max-connections must be positive");
  if (!(f.http.idle_timeout_s > 0)) throw UsageError("--idle-timeout must be positive");
  if (!(f.http.request_timeout_s >= 0)) throw UsageError("--request-timeout must be >= 0");
  if (f.http.header_fields == 0) throw UsageError("--max-header-fields must be positive");
  if (f.json_depth < 1 || f.json_depth > 256)
    throw UsageError("--max-json-depth must be in [1, 256]");  // recursive walkers stay shallow
  if (f.max_choices < 1) throw UsageError("--max-request-sequences must be positive");
  if (f.max_request_tokens < 0) throw UsageError("--max-request-tokens must be >= 0");
  if (f.ssl_certfile.empty() != f.ssl_keyfile.empty())
    throw UsageError("--ssl-certfile and --ssl-keyfile go together");
  if (!f.api_key.empty() && !f.api_key_file.empty())
    throw UsageError("give --api-key or --api-key-file, not both");
}

// The key of --api-key-file: its first line, without the line end.
std::string read_key_file(const std::string& path) {
  std::ifstream in(path);
  std::string key;
  if (!in || !std::getline(in, key))
    throw UsageError("--api-key-file " + path + ": cannot read a line from it");
  if (!key.empty() && key.back() == '\r') key.pop_back();
  if (key.empty()) throw UsageError("--api-key-file " + path + ": the first line is empty");
  return key;
}

unsigned ipc_mode(const std::string& text) {
  std::size_t used = 0;
  unsigned long mode = 0;
  try {
    mode = std::stoul(text, &used, 8);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || mode > 0777)
    throw UsageError("--ipc-socket-mode must be an octal file mode such as 0600, got '" + text +
                     "'");
  return static_cast<unsigned>(mode);
}

// The name the APIs give the model: --served-model-name, else the directory's.
std::string served_name(const ServeFlags& f) {
  if (!f.name.empty()) return f.name;
  const auto dir = std::filesystem::path(f.engine.model_dir).lexically_normal();
  const std::string name = dir.filename().string();
  return name.empty() ? dir.parent_path().filename().string() : name;
}

// What the APIs share on rank 0: the queue, metrics, tokenizer, limits and chat template.
serve::ServeContext serve_context(const ServeFlags& f, bool log_prompts, RequestQueue& queue,
                                  serve::ServingMetrics& metrics, const Tokenizer& tokenizer) {
  const RequestLimits limits = read_model_limits(f.engine.model_dir);
  serve::ServeContext ctx{queue,
                          metrics,
                          tokenizer,
                          limits.vocab,
                          served_name(f),
                          limits.max_context,
                          f.max_input,
                          f.max_output,
                          log_prompts,
                          f.formatter == "jsonlines",
                          {},
                          {},
                          {},
                          {},
                          false};
  for (const AddedToken& t : tokenizer.added_tokens())
    if (t.special) ctx.special_ids.insert(t.id);
  ctx.api_key = f.api_key_file.empty() ? f.api_key : read_key_file(f.api_key_file);
  if (ctx.api_key.empty())
    if (const char* env = std::getenv("SAKER_API_KEY")) ctx.api_key = env;
  ctx.metrics_need_key = f.api_key_metrics;
  ctx.max_json_depth = f.json_depth;
  ctx.max_choices = f.max_choices;
  ctx.max_request_tokens = f.max_request_tokens;
  ctx.max_token_bytes = tokenizer.max_token_bytes();
  // A chat template that cannot be parsed stops the server here, naming the line and column.
  if (auto tmpl = ChatTemplate::from_model_dir(f.engine.model_dir)) {
    ctx.chat_template = std::move(tmpl->first);
    ctx.chat_vars = std::move(tmpl->second);
    spdlog::info("chat: the checkpoint's chat template");
  } else {
    spdlog::info("chat: no chat template in the checkpoint; the Falcon User:/Falcon: format");
  }
  return ctx;
}

// Ranks > 0: load the shard and follow rank 0 until it stops.
int follow(EngineOptions o, Communicator& comm) {
  // mpirun forwards SIGTERM / SIGINT to every rank; only rank 0 decides when the job ends.
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGINT, SIG_IGN);
  o.text = false;
  make_engine(o, comm)->serve();
  return 0;
}

}  // namespace

int run_serve(const std::vector<std::string>& args) {
  ServeFlags f;
  const po::options_description desc = serve_options(f);
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker serve --model DIR [--host H] [--port P] [options]"))
    return 0;
  EngineOptions o = finish_engine_options(vm, f.engine);
  o.warm_up = true;  // one iteration end to end before /ping says ready
  o.log_requests = true;
  check_flags(f);
  f.http.body_bytes = parse_bytes(f.body_limit, "--max-body-bytes");
  f.http.header_bytes = parse_bytes(f.header_bytes, "--max-header-bytes");
  f.http.url_bytes = parse_bytes(f.url_bytes, "--max-url-bytes");
  f.http.output_bytes = parse_bytes(f.output_bytes, "--max-output-buffer");
  serve::IpcLimits ipc_limits;
  ipc_limits.line_bytes = f.http.body_bytes;  // a message is a request body
  ipc_limits.socket_mode = ipc_mode(f.ipc_mode);

  // Logs go to stderr: stdout may carry the backend socket's protocol (--ipc stdio).
  spdlog::set_default_logger(spdlog::stderr_color_mt("saker"));
  Communicator& comm = world().tensor_parallel();
  if (comm.rank() != 0) return follow(o, comm);

  // saker launch passes stop signals to rank 0 directly (cmd_launch.cpp).
  if (const char* pidfile = std::getenv("SAKER_RANK0_PIDFILE"))
    std::ofstream(pidfile) << getpid() << "\n";
  const Tokenizer tokenizer = Tokenizer::from_model_dir(o.model_dir);
  serve::ServingMetrics metrics;
  // The queue exists before the engine: the port answers 503 while the model loads.
  auto queue = std::make_shared<RequestQueue>(f.queue_limit);
  serve::ServeContext ctx =
      serve_context(f, vm["log-prompts"].as<bool>(), *queue, metrics, tokenizer);
  serve::HttpServer server(*queue, serve::make_router(ctx), f.http);
  if (!f.ssl_certfile.empty()) server.use_tls(f.ssl_certfile, f.ssl_keyfile);
  serve::IpcServer ipc(server.io_context(), ctx, ipc_limits);
  for (const std::string& e : f.ipc_endpoints) {
    ipc.open(e);
    spdlog::info("backend socket on {}", e);
  }
  server.start(f.host, static_cast<unsigned short>(f.port), [&queue, drain = f.drain](int sig) {
    spdlog::info("signal {}: draining for up to {} s", sig, drain);
    queue->shutdown(drain);
  });
  spdlog::info("listening on {}://{}:{} (503 until the model is loaded and warmed up)",
               f.ssl_certfile.empty() ? "http" : "https", f.host, server.port());

  // A load that takes too long (a stuck filesystem, a rank that never joins) ends the whole job
  // with a message instead of a server that answers 503 forever.
  LoadWatchdog watchdog(f.load_timeout);
  const auto engine = make_engine(o, comm, queue);
  watchdog.done();
  engine->set_observer(&metrics);
  // Capacity: the pool's tokens, and how many sequences of the full context fit at once.
  const std::int64_t per_sequence =
      (ctx.max_context + engine->block_size() - 1) / engine->block_size();
  spdlog::info(
      "ready: {} ({} KV blocks of {} tokens in {} = {} tokens, {} sequences of {} tokens at "
      "once; {} rank(s))",
      ctx.model_name, engine->kv_blocks(), engine->block_size(),
      dtype_name(engine->kv_cache_dtype()), engine->kv_blocks() * engine->block_size(),
      engine->kv_blocks() / per_sequence, ctx.max_context, comm.size());
  engine->serve();
  boost::asio::post(server.io_context(), [&ipc] { ipc.close(); });
  server.stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace saker::cli
