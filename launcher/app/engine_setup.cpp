#include "launcher/app/engine_setup.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "parallel/collectives.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

// Bytes the kernel says can be given to new allocations without swapping (MemAvailable).
std::size_t available_host_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  throw std::runtime_error("cannot read MemAvailable from /proc/meminfo; set --kv-cache-memory");
}

// Ranks on this node share its memory.
int local_ranks() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"})
    if (const char* s = std::getenv(v); s && std::atoi(s) > 0) return std::atoi(s);
  return 1;
}

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

}  // namespace

po::options_description engine_options(EngineOptions& o) {
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
      "seconds a step's collectives may take before the job is aborted (a hung rank)");
  return d;
}

void finish_engine_options(const po::variables_map& vm, EngineOptions& o) {
  if (vm.count("batch-size")) {
    if (o.batching != "dynamic")
      throw UsageError(
          "--batch-size is for --batching dynamic; rolling batching takes "
          "--max-rolling-batch-size");
    o.max_batch_size = vm["batch-size"].as<std::int32_t>();
    if (o.max_batch_size <= 0) throw UsageError("--batch-size must be positive");
  }
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

std::int64_t kv_blocks_for_budget(std::size_t bytes, const ModelShape& s, std::int64_t kv_heads,
                                  std::int64_t block_size) {
  const auto per_block =
      static_cast<std::size_t>(2 * s.layers * kv_heads * s.head_dim * block_size) * sizeof(float);
  return static_cast<std::int64_t>(bytes / per_block);
}

Engine::Engine(const EngineOptions& o, Communicator& comm)
    : shape_(load_model_shape(o.model_dir)), checkpoint_(Checkpoint::open(o.model_dir)) {
  if (o.block_size <= 0) throw UsageError("--block-size must be positive");
  if (o.max_batch_size <= 0) throw UsageError("--max-rolling-batch-size must be positive");
  if (o.max_batch_tokens <= 0)
    throw UsageError("--max-rolling-batch-prefill-tokens must be positive");
  if (!(o.kv_cache_fraction > 0 && o.kv_cache_fraction <= 1))
    throw UsageError("--kv-cache-fraction must be in (0, 1], got " +
                     std::to_string(o.kv_cache_fraction));
  if (!(o.max_batch_delay_ms >= 0)) throw UsageError("--max-batch-delay must be >= 0");
  sched_.max_batch_size = o.max_batch_size;
  sched_.max_tokens_per_step = static_cast<std::int32_t>(o.max_batch_tokens);
  sched_.policy = parse_policy(o.policy);
  sched_.batching = parse_batching(o.batching);
  sched_.max_batch_delay_s = o.max_batch_delay_ms / 1e3;
  std::optional<std::size_t> kv_bytes;
  if (!o.kv_cache_memory.empty()) kv_bytes = parse_bytes(o.kv_cache_memory, "--kv-cache-memory");

  const WeightQuant quant = parse_dtype(o.dtype, checkpoint_);
  threads_ = thread_count(o.threads);
  backend_ = make_backend(o.device, threads_, shape_.max_positions);
  model_comm_ = make_model_communicator(*backend_, comm);
  // Running out of memory while loading says how much this rank needed and had.
  const std::optional<std::size_t> device_free_before = backend_->free_memory();
  const std::size_t host_free_before = available_host_memory();
  const std::string where = "rank " + std::to_string(comm.rank());
  try {
    // Every rank checks the layout itself, so an impossible one fails everywhere with one message.
    model_ =
        make_model(o.model_dir, checkpoint_, *backend_,
                   ModelOptions{o.max_batch_tokens, o.max_batch_size, shape_.max_positions, quant},
                   model_comm_ ? model_comm_.get() : &comm);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(where +
                             " ran out of host memory loading its shard: the checkpoint holds " +
                             std::to_string(checkpoint_.total_bytes()) + " bytes (about 1/" +
                             std::to_string(comm.size()) + " of them per rank); " +
                             std::to_string(host_free_before) + " bytes were available");
  } catch (const std::runtime_error& e) {
    if (!device_free_before || std::string(e.what()).find("out of memory") == std::string::npos)
      throw;
    throw std::runtime_error(
        where + " ran out of device memory loading its shard (" + e.what() +
        "): the checkpoint holds " + std::to_string(checkpoint_.total_bytes()) +
        " bytes (about 1/" + std::to_string(comm.size()) + " of them per rank); " +
        std::to_string(*device_free_before) + " bytes were free on the device");
  }

  // The KV pool: the budget given, or a share of what is free now that the weights are loaded
  // (ranks on one node split the node).
  const std::int64_t kv_heads = model_->local_kv_heads();
  std::size_t budget = 0;
  if (kv_bytes) {
    budget = *kv_bytes;
    // An explicit budget the machine cannot hold would end in the OOM killer, not an error.
    const std::size_t have = backend_->free_memory().value_or(available_host_memory());
    if (budget > have)
      throw std::runtime_error(where + ": --kv-cache-memory " + o.kv_cache_memory + " (" +
                               std::to_string(budget) + " bytes) is more than the " +
                               std::to_string(have) + " bytes free after loading");
  } else if (const auto device_free = backend_->free_memory()) {
    // A GPU: its own free memory now that the weights and workspaces are allocated (one rank
    // per GPU, so no sharing with other ranks).
    budget = static_cast<std::size_t>(o.kv_cache_fraction * static_cast<double>(*device_free));
  } else {
    // The CPU backend has copied the weights into its own memory by now, so what is available
    // is what is left (the checkpoint's page cache counts as available: it can be dropped).
    const std::size_t free_now = available_host_memory();
    budget = static_cast<std::size_t>(o.kv_cache_fraction * static_cast<double>(free_now) /
                                      local_ranks());
  }
  std::int64_t blocks = kv_blocks_for_budget(budget, shape_, kv_heads, o.block_size);
  // More than every sequence at full context could use is never needed.
  const std::int64_t most =
      o.max_batch_size * ((shape_.max_positions + o.block_size - 1) / o.block_size);
  blocks = std::min({blocks, most, (std::int64_t{1} << 24) - 1});
  blocks = min_over_ranks(comm, blocks);  // block ids mean the same slots on every rank
  if (blocks < 1)
    throw std::runtime_error(
        "the KV cache budget of " + std::to_string(budget) +
        " bytes on some rank holds no block of " + std::to_string(o.block_size) + " tokens (" +
        std::to_string(2 * shape_.layers * kv_heads * shape_.head_dim * o.block_size * 4) +
        " bytes); raise --kv-cache-memory or lower --block-size");
  try {
    cache_ = std::make_unique<KvCache>(*backend_, model_->kv_shape(), blocks, o.block_size);
  } catch (const std::bad_alloc&) {
    const std::int64_t per_block =
        2 * shape_.layers * kv_heads * shape_.head_dim * o.block_size * 4;
    throw std::runtime_error(
        where + " ran out of memory allocating its KV pool: " + std::to_string(blocks) +
        " blocks of " + std::to_string(per_block) +
        " bytes = " + std::to_string(blocks * per_block) + " bytes; lower --kv-cache-memory");
  }
  runner_ = std::make_unique<StepRunner>(*model_, *cache_, comm);
  if (!(o.collective_timeout_s > 0)) throw UsageError("--collective-timeout must be positive");
  const int rank = comm.rank();
  watchdog_ =
      std::make_unique<CollectiveWatchdog>(o.collective_timeout_s, [rank](const std::string& msg) {
        std::cerr << "saker: error (rank " << rank << "): " << msg << "; aborting the job"
                  << std::endl;
        world().abort(1);
      });
  runner_->set_watchdog(watchdog_.get());
}

}  // namespace saker::cli
