// saker launch: runs a model the way DJL Serving's engine=MPI does, from serving.properties
// (file < OPTION_* / SERVING_* environment < command line), as one mpirun job of
// tensor_parallel_degree ranks. It prints the command, runs it, forwards SIGTERM / SIGINT to it,
// and exits with its status.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "launcher/app/cli.h"
#include "launcher/launch/properties.h"

extern char** environ;

namespace saker::cli {
namespace {

std::string quoted(const std::string& a) {
  if (!a.empty() && a.find_first_not_of(
                        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@,") ==
                        std::string::npos)
    return a;
  std::string q = "'";
  for (const char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::vector<std::string> environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  return env;
}

// The signal to pass on; a handler may only set such a variable.
volatile sig_atomic_t g_signal = 0;
extern "C" void note_signal(int sig) {
  g_signal = sig;
}

// Rank 0 drains and then stops the other ranks itself, so a stop signal goes to rank 0 (whose pid
// it writes to the file launch names), not to mpirun: Open MPI's mpirun would pass it on only
// after its own kill timeout and then SIGKILL the ranks mid-drain. Without the file (rank 0 not
// up yet, or on another node) mpirun gets it.
void pass_on(int sig, pid_t mpirun, const std::string& pidfile) {
  std::ifstream in(pidfile);
  long rank0 = 0;
  if (in >> rank0 && rank0 > 0 && kill(static_cast<pid_t>(rank0), sig) == 0) {
    std::cerr << "saker launch: signal " << sig << " passed to rank 0 (pid " << rank0 << ")"
              << std::endl;
    return;
  }
  kill(mpirun, sig);
}

struct LaunchFlags {
  std::string properties_file, model_dir, tp, host = "127.0.0.1", hostfile, hosts,
                                              mpirun = "mpirun", kv_cache_dtype, peer_timeout;
  bool prefix_caching = false, no_prefix_caching = false;
  int port = 8080;
  double drain = 30;
  std::vector<std::string> sets;
};

po::options_description launch_options(LaunchFlags& f) {
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")(
      "properties", po::value(&f.properties_file),
      "serving.properties (default: DIR/serving.properties)")("model", po::value(&f.model_dir),
                                                              "model directory (option.model_id)")(
      "kv-cache-dtype", po::value(&f.kv_cache_dtype),
      "KV cache elements: auto, fp32, bf16, fp16, fp8_e4m3, int8 (option.kv_cache_dtype)")(
      "enable-prefix-caching", po::bool_switch(&f.prefix_caching),
      "reuse cached KV blocks of equal prompt prefixes (option.enable_prefix_caching=true, the "
      "default)")("no-enable-prefix-caching", po::bool_switch(&f.no_prefix_caching),
                  "option.enable_prefix_caching=false")(
      "tensor-parallel-degree", po::value(&f.tp),
      "ranks: a number or max (option.tensor_parallel_degree)")(
      "set", po::value(&f.sets)->composing(),
      "KEY=VALUE: any serving.properties key, over file and environment")(
      "host", po::value(&f.host)->default_value(f.host), "address rank 0 serves on")(
      "port", po::value(&f.port)->default_value(f.port), "port rank 0 serves on")(
      "drain-timeout", po::value(&f.drain)->default_value(f.drain),
      "seconds to finish requests on SIGTERM")("hostfile", po::value(&f.hostfile),
                                               "passed to mpirun (multi-node)")(
      "mpi-host", po::value(&f.hosts), "passed to mpirun as --host (multi-node)")(
      "peer-timeout", po::value(&f.peer_timeout),
      "seconds one collective may wait for a lost rank or link (serve's --peer-timeout)")(
      "mpirun", po::value(&f.mpirun)->default_value(f.mpirun), "the mpirun to run")(
      "dry-run", po::bool_switch(), "print the mpirun command only");
  return desc;
}

// file < environment < command line
Properties gather_properties(const LaunchFlags& f) {
  Properties p;
  std::string file = f.properties_file;
  if (file.empty() && !f.model_dir.empty() && std::ifstream(f.model_dir + "/serving.properties"))
    file = f.model_dir + "/serving.properties";
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw UsageError("cannot read --properties " + file);
    std::stringstream text;
    text << in.rdbuf();
    try {
      p = parse_properties(text.str(), file);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  for (const auto& [k, v] : properties_from_env(environment())) p[k] = v;
  if (!f.model_dir.empty()) p["option.model_id"] = f.model_dir;
  if (!f.tp.empty()) p["option.tensor_parallel_degree"] = f.tp;
  if (!f.kv_cache_dtype.empty()) p["option.kv_cache_dtype"] = f.kv_cache_dtype;
  if (f.prefix_caching && f.no_prefix_caching)
    throw UsageError("--enable-prefix-caching and --no-enable-prefix-caching contradict");
  if (f.prefix_caching || f.no_prefix_caching)
    p["option.enable_prefix_caching"] = f.prefix_caching ? "true" : "false";
  for (const std::string& kv : f.sets) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError("--set takes KEY=VALUE, got '" + kv + "'");
    p[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return p;
}

// Checks every key; warns of keys saker ignores and resolves tensor_parallel_degree=max.
LaunchSettings settings_of(const Properties& p) {
  LaunchSettings s;
  try {
    s = validate_properties(p);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  if (!s.unknown_keys.empty()) {
    std::string keys;
    for (const auto& k : s.unknown_keys) keys += (keys.empty() ? "" : ", ") + k;
    std::cerr << "saker launch: warning: ignoring keys saker does not know: " << keys << "\n";
  }
  if (s.tp_max) {
    const int gpus = visible_gpus();
    s.tensor_parallel = std::max(1, gpus);
    std::cerr << "saker launch: option.tensor_parallel_degree=max: " << s.tensor_parallel
              << (gpus ? " visible GPU(s)" : " rank (no GPU visible)") << "\n";
  }
  if (s.dtype && *s.dtype != "int8" && *s.dtype != "fp8" && *s.dtype != "w8a8")
    std::cerr << "saker launch: note: option.dtype=" << *s.dtype
              << ": weights are used in the checkpoint's stored precision\n";
  return s;
}

// Where and how the job runs; rank 0 writes its pid to `pidfile` for signals.
LaunchTarget target_of(const LaunchFlags& f, const std::string& pidfile) {
  LaunchTarget t;
  t.mpirun = f.mpirun;
  std::vector<char> self(4096);
  const auto n = readlink("/proc/self/exe", self.data(), self.size() - 1);
  t.saker = n > 0 ? std::string(self.data(), static_cast<std::size_t>(n)) : "saker";
  t.host = f.host;
  t.port = f.port;
  t.hostfile = f.hostfile;
  if (!f.peer_timeout.empty()) t.extra_serve_args = {"--peer-timeout", f.peer_timeout};
  t.hosts = f.hosts;
  t.as_root = geteuid() == 0;
  t.cores = static_cast<int>(thread_count(0));
  t.drain_timeout_s = f.drain;
  setenv("SAKER_RANK0_PIDFILE", pidfile.c_str(), 1);
  for (const std::string& e : environment()) {
    const std::string name = e.substr(0, e.find('='));
    if (name == "LD_LIBRARY_PATH" || name == "PATH" || name == "CUDA_VISIBLE_DEVICES" ||
        name.starts_with("NCCL_") || name.starts_with("SAKER_") || name.starts_with("OMP_"))
      t.env_to_forward.push_back(name);
  }
  return t;
}

// Whether `pid` has exited (a zombie its parent has not reaped yet counts as exited).
bool process_gone(pid_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

// Runs the command, passing SIGTERM / SIGINT on; the job's exit status.
int run_job(const std::vector<std::string>& cmd, const std::string& pidfile) {
  std::vector<char*> argv;
  for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (const int rc = posix_spawnp(&pid, cmd[0].c_str(), nullptr, nullptr, argv.data(), environ);
      rc != 0)
    throw std::runtime_error("cannot run " + cmd[0] + ": " + std::strerror(rc));
  std::signal(SIGTERM, note_signal);
  std::signal(SIGINT, note_signal);
  int status = 0;
  // Rank 0 gone while mpirun stays means mpirun is waiting on a node it cannot reach (a lost
  // link): the job is over either way, so the launcher ends mpirun and says so.
  constexpr auto kMpirunGrace = std::chrono::seconds(10);
  long rank0 = 0;
  std::optional<std::chrono::steady_clock::time_point> rank0_gone;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (rank0 <= 0) {
      std::ifstream in(pidfile);
      in >> rank0;
    } else if (!rank0_gone && process_gone(static_cast<pid_t>(rank0))) {
      rank0_gone = std::chrono::steady_clock::now();
    }
    if (rank0_gone && std::chrono::steady_clock::now() - *rank0_gone > kMpirunGrace) {
      std::cerr << "saker launch: rank 0 (pid " << rank0
                << ") ended, but mpirun did not exit within " << kMpirunGrace.count()
                << " s (a node it cannot reach?); ending it" << std::endl;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      std::remove(pidfile.c_str());
      return 1;
    }
    if (r < 0 && errno != EINTR)
      throw std::runtime_error(std::string("waiting for mpirun: ") + std::strerror(errno));
    if (const int sig = g_signal) {
      g_signal = 0;
      pass_on(sig, pid, pidfile);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::remove(pidfile.c_str());
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace

int run_launch(const std::vector<std::string>& args) {
  LaunchFlags f;
  const po::options_description desc = launch_options(f);
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: saker launch (--properties FILE | --model DIR) [options]"))
    return 0;
  if (f.port < 0 || f.port > 65535) throw UsageError("--port must be in [0, 65535]");
  const LaunchSettings s = settings_of(gather_properties(f));
  // The key reaches rank 0 through the environment (mpirun -x SAKER_API_KEY), so that it shows in
  // no process list.
  if (s.api_key) setenv("SAKER_API_KEY", s.api_key->c_str(), 1);
  const std::string pidfile = "/tmp/saker-launch-" + std::to_string(getpid()) + ".rank0";
  const std::vector<std::string> cmd = mpirun_command(s, target_of(f, pidfile));
  std::string line;
  for (const std::string& a : cmd) line += (line.empty() ? "" : " ") + quoted(a);
  if (vm["dry-run"].as<bool>()) {
    std::cout << line << "\n";
    return 0;
  }
  std::cerr << "saker launch: " << line << std::endl;
  return run_job(cmd, pidfile);
}

}  // namespace saker::cli
