#include "launcher/app/engine_flags.h"

#include <cctype>
#include <cmath>
#include <iostream>
#include <sstream>

#include "launcher/app/fault_hooks.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

AdmissionPolicy parse_policy(const std::string& p) {
  if (p == "max_utilization") return AdmissionPolicy::kMaxUtilization;
  if (p == "guaranteed_no_evict") return AdmissionPolicy::kGuaranteedNoEvict;
  throw UsageError("--scheduler-policy must be max_utilization or guaranteed_no_evict, got '" + p +
                   "'");
}

Batching parse_batching(const std::string& b) {
  if (b == "rolling") return Batching::kRolling;
  if (b == "dynamic") return Batching::kDynamic;
  throw UsageError("--batching must be rolling or dynamic, got '" + b + "'");
}

// Replaces `word` in `text` wherever it stands as a whole word; whether it did.
bool replace_word(std::string& text, const std::string& word, const std::string& by) {
  auto part = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  bool any = false;
  for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at)) {
    const std::size_t end = at + word.size();
    if ((at > 0 && part(text[at - 1])) || (end < text.size() && part(text[end]))) {
      at = end;
      continue;
    }
    text.replace(at, word.size(), by);
    at += by.size();
    any = true;
  }
  return any;
}

}  // namespace

po::options_description engine_options(EngineFlags& o) {
  po::options_description d("engine");
  d.add_options()("threads", po::value(&o.threads)->default_value(o.threads),
                  "CPU threads per rank (0: OMP_NUM_THREADS, else its share of the cores)")(
      "device", po::value(&o.device)->default_value(o.device), kDeviceHelp)(
      "dtype", po::value(&o.dtype)->default_value(o.dtype), kDtypeHelp)(
      "batching", po::value(&o.batching)->default_value(o.batching),
      "rolling (continuous) or dynamic (request-level, DJL's rolling_batch=disable)")(
      "max-rolling-batch-size", po::value(&o.max_batch_size)->default_value(o.max_batch_size),
      "most sequences in flight (rolling)")("batch-size", po::value<std::int32_t>(),
                                            "requests per batch (dynamic; DJL's batch_size)")(
      "max-batch-delay", po::value(&o.max_batch_delay_ms)->default_value(o.max_batch_delay_ms),
      "ms a dynamic batch waits to fill (DJL's max_batch_delay)")(
      "max-rolling-batch-prefill-tokens",
      po::value(&o.max_batch_tokens)->default_value(o.max_batch_tokens),
      "tokens per iteration; longer prompts are chunked")(
      "scheduler-policy", po::value(&o.policy)->default_value(o.policy),
      "max_utilization or guaranteed_no_evict")(
      "block-size", po::value(&o.block_size)->default_value(o.block_size),
      "KV cache block size (tokens)")("kv-cache-memory", po::value(&o.kv_cache_memory),
                                      "KV pool per rank, e.g. 2GiB (default: a share of free "
                                      "memory, see --kv-cache-fraction)")(
      "kv-cache-fraction", po::value(&o.kv_cache_fraction)->default_value(o.kv_cache_fraction),
      "share of the memory free after loading given to the KV pool")(
      "collective-timeout",
      po::value(&o.collective_timeout_s)->default_value(o.collective_timeout_s),
      "seconds a step's collectives may take before the job is aborted (a hung rank)")(
      "peer-timeout", po::value(&o.peer_timeout_s)->default_value(o.peer_timeout_s),
      "seconds one collective may wait for the other ranks before the job is aborted (a lost "
      "rank or link)")("heartbeat-interval",
                       po::value(&o.heartbeat_interval_s)->default_value(o.heartbeat_interval_s),
                       "seconds an idle server waits before rank 0 checks every rank is there")(
      "enable-prefix-caching", po::bool_switch(&o.enable_prefix_caching),
      "reuse the KV blocks of prompt prefixes computed before (the default)")(
      "no-enable-prefix-caching", po::bool_switch(&o.no_enable_prefix_caching),
      "compute every prompt in full")("comm", po::value(&o.comm)->default_value(o.comm), kCommHelp)(
      "cpu-matmul", po::value(&o.cpu_matmul)->default_value(o.cpu_matmul), kCpuMatmulHelp)(
      "batch-invariant", po::bool_switch(&o.batch_invariant),
      "a sequence's outputs do not depend on the others in its step (the default; docs/cuda.md)")(
      "no-batch-invariant", po::bool_switch(&o.no_batch_invariant),
      "CUDA: each linear layer takes its fastest kernel per token count, timed at start; CPU: "
      "bf16 dot products of 16 tokens or more take AMX tiles where the CPU has them")(
      "kv-cache-dtype", po::value(&o.kv_cache_dtype)->default_value(o.kv_cache_dtype),
      kKvCacheDtypeHelp)(
      "speculative-method", po::value(&o.speculative_method),
      "ngram: speculative decoding by prompt lookup; draft: by --speculative-model")(
      "speculative-model", po::value(&o.speculative_model),
      "a draft model directory (a Falcon with the same tokenizer) that proposes tokens")(
      "speculative-acceptance",
      po::value(&o.speculative_acceptance)->default_value(o.speculative_acceptance),
      "exact: outputs stay token for token the same; rejection: speculative sampling (the same "
      "distribution, more proposals accepted when sampling)")(
      "no-speculative-adaptive", po::bool_switch(&o.no_speculative_adaptive),
      "propose on every step, even where measured not to pay")(
      "num-speculative-tokens",
      po::value(&o.num_speculative_tokens)->default_value(o.num_speculative_tokens),
      "tokens proposed per step (--speculative-method)")(
      "ngram-max", po::value(&o.ngram_max)->default_value(o.ngram_max),
      "longest suffix prompt lookup matches");
  return d;
}

EngineOptions finish_engine_options(const po::variables_map& vm, EngineFlags& f) {
  if (vm.count("batch-size")) {
    if (f.batching != "dynamic")
      throw UsageError(
          "--batch-size is for --batching dynamic; rolling batching takes "
          "--max-rolling-batch-size");
    f.max_batch_size = vm["batch-size"].as<std::int32_t>();
    if (f.max_batch_size <= 0) throw UsageError("--batch-size must be positive");
  }
  EngineOptions o;
  o.model_dir = f.model_dir;
  o.device = f.device;
  if (!o.device.empty() && o.device != "cuda" && o.device != "cpu")
    throw UsageError("--device must be cuda or cpu, not '" + o.device + "'");
  o.dtype = f.dtype;
  o.threads = thread_count(f.threads);
  o.max_batch_size = f.max_batch_size;
  o.max_batch_tokens = f.max_batch_tokens;
  o.block_size = f.block_size;
  if (!f.kv_cache_memory.empty())
    o.kv_cache_bytes = parse_bytes(f.kv_cache_memory, "--kv-cache-memory");
  o.kv_cache_fraction = f.kv_cache_fraction;
  o.policy = parse_policy(f.policy);
  o.batching = parse_batching(f.batching);
  if (!(f.max_batch_delay_ms >= 0)) throw UsageError("--max-batch-delay must be >= 0");
  o.max_batch_delay_s = f.max_batch_delay_ms / 1e3;
  o.collective_timeout_s = f.collective_timeout_s;
  o.peer_timeout_s = f.peer_timeout_s;
  o.heartbeat_interval_s = f.heartbeat_interval_s;
  if (f.enable_prefix_caching && f.no_enable_prefix_caching)
    throw UsageError(
        "--enable-prefix-caching and --no-enable-prefix-caching contradict each other");
  o.enable_prefix_caching = !f.no_enable_prefix_caching;
  if (f.batch_invariant && f.no_batch_invariant)
    throw UsageError("--batch-invariant and --no-batch-invariant contradict each other");
  o.batch_invariant = !f.no_batch_invariant;
  if (f.comm != "auto" && f.comm != "nccl" && f.comm != "mpi")
    throw UsageError("--comm must be auto, nccl or mpi, not '" + f.comm + "'");
  o.comm = f.comm;
  o.cpu_matmul = f.cpu_matmul;
  o.kv_cache_dtype = f.kv_cache_dtype;
  o.speculative_method = f.speculative_method;
  o.num_speculative_tokens = f.num_speculative_tokens;
  o.ngram_max = f.ngram_max;
  o.speculative_model = f.speculative_model;
  o.speculative_acceptance = f.speculative_acceptance;
  o.speculative_adaptive = !f.no_speculative_adaptive;
  return o;
}

std::size_t parse_bytes(const std::string& text, const std::string& flag) {
  std::istringstream in(text);
  double v = 0;
  std::string unit;
  if (!(in >> v) || v <= 0 || !std::isfinite(v))
    throw UsageError(flag + " must be a positive size such as 512MiB or 2GiB, got '" + text + "'");
  in >> unit;
  static const std::pair<const char*, double> units[] = {
      {"", 1},          {"B", 1},
      {"K", 1e3},       {"KB", 1e3},
      {"KiB", 1024.0},  {"M", 1e6},
      {"MB", 1e6},      {"MiB", 1 << 20},
      {"G", 1e9},       {"GB", 1e9},
      {"GiB", 1 << 30}, {"T", 1e12},
      {"TB", 1e12},     {"TiB", 1099511627776.0}};
  for (const auto& [name, scale] : units)
    if (unit == name) return static_cast<std::size_t>(v * scale);
  throw UsageError(flag + ": unknown unit '" + unit + "' in '" + text +
                   "' (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
}

std::string flag_of(const std::string& field) {
  static const std::pair<const char*, const char*> flags[] = {
      {"model_dir", "--model"},
      {"device", "--device"},
      {"dtype", "--dtype"},
      {"threads", "--threads"},
      {"max_batch_size", "--max-rolling-batch-size"},
      {"max_batch_tokens", "--max-rolling-batch-prefill-tokens"},
      {"block_size", "--block-size"},
      {"kv_cache_bytes", "--kv-cache-memory"},
      {"kv_cache_fraction", "--kv-cache-fraction"},
      {"max_batch_delay_s", "--max-batch-delay"},
      {"collective_timeout_s", "--collective-timeout"},
      {"peer_timeout_s", "--peer-timeout"},
      {"heartbeat_interval_s", "--heartbeat-interval"},
      {"kv_cache_dtype", "--kv-cache-dtype"},
      {"comm", "--comm"},
      {"cpu_matmul", "--cpu-matmul"},
      {"speculative_method", "--speculative-method"},
      {"speculative_model", "--speculative-model"},
      {"num_speculative_tokens", "--num-speculative-tokens"},
      {"ngram_max", "--ngram-max"},
      {"speculative_acceptance", "--speculative-acceptance"}};
  for (const auto& [name, flag] : flags)
    if (field == name) return flag;
  return field;
}

std::unique_ptr<Engine> make_engine(const EngineOptions& o, Communicator& comm,
                                    std::shared_ptr<RequestQueue> queue) {
  auto faults = std::make_shared<const FaultHooks>(FaultHooks::from_env(comm.rank()));
  EngineHooks hooks;
  hooks.after_load = [faults] { faults->after_load(); };
  hooks.before_step = [faults](std::uint64_t step) { faults->before_step(step); };
  const int rank = comm.rank();
  hooks.fatal = [rank](const std::string& msg) {
    std::cerr << "saker: error (rank " << rank << "): " << msg << "; aborting the job" << std::endl;
    world().abort(1);
  };
  try {
    return std::make_unique<Engine>(o, comm, std::move(hooks), std::move(queue));
  } catch (const OptionError& e) {
    // The engine names its fields; the user typed flags: "max_batch_size must be positive" →
    // "--max-rolling-batch-size must be positive".
    std::string msg = e.what();
    bool named = false;
    for (const char* field :
         {"kv_cache_bytes", "block_size", "max_batch_size", "max_batch_tokens", "kv_cache_fraction",
          "max_batch_delay_s", "collective_timeout_s", "peer_timeout_s", "heartbeat_interval_s",
          "dtype", "device", "kv_cache_dtype", "comm", "cpu_matmul"})
      named |= replace_word(msg, field, flag_of(field));
    throw UsageError(named ? msg : msg + " (" + flag_of(e.field()) + ")");
  }
}

}  // namespace saker::cli
