#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "engine/constraints/compiler.h"
#include "engine/model/checkpoint.h"
#include "engine/model/kv_cache.h"
#include "engine/model/registry.h"
#include "engine/step_runner.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/factory.h"
#include "parallel/collectives.h"
#include "parallel/watchdog.h"
#include "parallel/watched_communicator.h"

namespace saker {
namespace {

// Bytes the kernel says can be given to new allocations without swapping (MemAvailable).
std::size_t available_host_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  throw std::runtime_error("cannot read MemAvailable from /proc/meminfo; set kv_cache_bytes");
}

// Ranks on this node share its memory.
int local_ranks() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"})
    if (const char* s = std::getenv(v); s && std::atoi(s) > 0) return std::atoi(s);
  return 1;
}

void check_options(const EngineOptions& o) {
  auto positive = [](const char* field, double v) {
    if (!(v > 0)) throw OptionError(field, std::string(field) + " must be positive");
  };
  positive("block_size", static_cast<double>(o.block_size));
  positive("max_batch_size", o.max_batch_size);
  positive("max_batch_tokens", static_cast<double>(o.max_batch_tokens));
  positive("collective_timeout_s", o.collective_timeout_s);
  positive("peer_timeout_s", o.peer_timeout_s);
  positive("heartbeat_interval_s", o.heartbeat_interval_s);
  if (!(o.kv_cache_fraction > 0 && o.kv_cache_fraction <= 1))
    throw OptionError("kv_cache_fraction", "kv_cache_fraction must be in (0, 1], got " +
                                               std::to_string(o.kv_cache_fraction));
  if (!(o.max_batch_delay_s >= 0))
    throw OptionError("max_batch_delay_s", "max_batch_delay_s must be >= 0");
  if (o.kv_cache_bytes && *o.kv_cache_bytes == 0)
    throw OptionError("kv_cache_bytes", "kv_cache_bytes must be positive");
  if (o.kv_cache_tokens < 0) throw OptionError("kv_cache_tokens", "kv_cache_tokens must be >= 0");
  if (!o.speculative_method.empty() && o.speculative_method != "ngram" &&
      o.speculative_method != "draft")
    throw OptionError("speculative_method",
                      "speculative_method must be ngram (prompt lookup) or draft (a draft model, "
                      "speculative_model), got '" +
                          o.speculative_method + "'");
  if (o.speculative_method == "draft" && o.speculative_model.empty())
    throw OptionError("speculative_model",
                      "speculative_method draft needs speculative_model, a draft model directory");
  if (o.speculative_method == "ngram" && !o.speculative_model.empty())
    throw OptionError("speculative_model",
                      "speculative_model is a draft model; speculative_method ngram takes none");
  if (o.speculative_acceptance != "exact" && o.speculative_acceptance != "rejection")
    throw OptionError("speculative_acceptance",
                      "speculative_acceptance must be exact or rejection, got '" +
                          o.speculative_acceptance + "'");
  if (o.num_speculative_tokens < 1 || o.num_speculative_tokens > 16)
    throw OptionError("num_speculative_tokens", "num_speculative_tokens must be in [1, 16], got " +
                                                    std::to_string(o.num_speculative_tokens));
  if (o.ngram_max < 1 || o.ngram_max > 16)
    throw OptionError("ngram_max",
                      "ngram_max must be in [1, 16], got " + std::to_string(o.ngram_max));
}

bool speculates(const EngineOptions& o) {
  return !o.speculative_method.empty() || !o.speculative_model.empty();
}

// A logit row per sequence, and with speculative decoding one per proposed token too.
std::int64_t logit_rows(const EngineOptions& o) {
  const std::int64_t per_sequence = speculates(o) ? 1 + std::int64_t{o.num_speculative_tokens} : 1;
  return std::int64_t{o.max_batch_size} * per_sequence;
}

SpeculationConfig speculation(const EngineOptions& o) {
  SpeculationConfig c;
  if (!speculates(o)) return c;
  c.method = o.speculative_model.empty() ? SpecMethod::kNgram : SpecMethod::kDraft;
  c.num_tokens = o.num_speculative_tokens;
  c.ngram_max = o.ngram_max;
  c.acceptance =
      o.speculative_acceptance == "rejection" ? SpecAcceptance::kRejection : SpecAcceptance::kExact;
  c.adaptive = o.speculative_adaptive;
  return c;
}

// --dtype: auto, int8 and fp8, or the checkpoint's own precision by name (a conversion would be
// silent otherwise).
WeightQuant weight_quant(const std::string& d, const Checkpoint& ck) {
  if (d == "auto") return WeightQuant::kNone;
  if (d == "int8") return WeightQuant::kInt8;
  if (d == "w8a8") return WeightQuant::kW8A8;
  if (d == "fp8" || d == "fp8_e4m3") return WeightQuant::kFp8;
  const std::optional<DType> weights = ck.weight_dtype();
  const std::string stored = weights ? std::string(dtype_name(*weights)) : "?";
  const std::string want = d == "bf16" || d == "bfloat16"  ? "BF16"
                           : d == "fp16" || d == "float16" ? "F16"
                           : d == "fp32" || d == "float32" ? "F32"
                                                           : "";
  if (want.empty())
    throw OptionError("dtype",
                      "dtype must be auto, int8, w8a8, fp8, bf16, fp16 or fp32, got '" + d + "'");
  if (want != stored)
    throw OptionError("dtype", "dtype " + d + ": the checkpoint stores " + stored +
                                   " weights, and saker runs them as stored (auto), as int8 or as "
                                   "fp8");
  return WeightQuant::kNone;
}

// --kv-cache-dtype, resolved against the checkpoint and the backend.
DType resolve_kv_dtype(const std::string& d, const Checkpoint& ck, const Backend& backend,
                       const std::string& device) {
  DType t = DType::F32;
  if (d == "auto") {
    // The checkpoint's 16-bit dtype; an fp32 (or unknown) checkpoint keeps fp32.
    const std::optional<DType> weights = ck.weight_dtype();
    t = weights && (*weights == DType::BF16 || *weights == DType::F16) ? *weights : DType::F32;
  } else if (const std::optional<DType> named = kv_dtype_from_option(d)) {
    t = *named;
  } else {
    throw OptionError("kv_cache_dtype",
                      "kv_cache_dtype must be auto, fp32, bf16, fp16, fp8_e4m3 "
                      "or int8, got '" +
                          d + "'");
  }
  if (!backend.supports_kv_dtype(t))
    throw OptionError("kv_cache_dtype", "kv_cache_dtype " + d + " (" + std::string(dtype_name(t)) +
                                            "): the " + (device.empty() ? "chosen" : device) +
                                            " backend cannot keep its KV cache in this type");
  return t;
}

}  // namespace

RequestLimits read_model_limits(const std::string& model_dir, const Tokenizer* tokenizer) {
  const ModelShape c = load_model_shape(model_dir);
  RequestLimits l{c.vocab_size, c.max_positions,
                  std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json"),
                  nullptr};
  if (tokenizer)
    l.constraints = std::make_shared<ConstraintCompiler>(*tokenizer, c.vocab_size, c.eos_token_ids);
  return l;
}

struct Engine::Parts {
  explicit Parts(const std::string& dir)
      : shape(load_model_shape(dir)), checkpoint(Checkpoint::open(dir)) {}
  ModelShape shape;
  Checkpoint checkpoint;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> model_comm;  // NCCL for GPU ranks; null: the MPI communicator
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  // Speculative decoding's draft model (engine/speculative/), with its own KV pool.
  std::optional<ModelShape> draft_shape;
  std::optional<Checkpoint> draft_checkpoint;
  std::unique_ptr<Model> draft;
  std::unique_ptr<KvCache> draft_cache;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<CollectiveWatchdog> watchdog;
  // Every collective of the model, and the heartbeat, under --peer-timeout (a lost peer).
  std::unique_ptr<CollectiveWatchdog> peer_watchdog;
  std::unique_ptr<WatchedCommunicator> watched_comm;
  Communicator* comm = nullptr;
  SchedulerConfig sched;
  DType kv_dtype = DType::F32;
};

Engine::Engine(const EngineOptions& o, Communicator& comm, EngineHooks hooks,
               std::shared_ptr<RequestQueue> queue)
    : hooks_(std::move(hooks)),
      queue_(queue ? std::move(queue) : std::make_shared<RequestQueue>()) {
  check_options(o);
  log_requests_ = o.log_requests;
  heartbeat_interval_s_ = o.heartbeat_interval_s;
  load(o, comm);
  if (hooks_.after_load) hooks_.after_load();
  size_kv_pool(o, comm);
  Parts& p = *parts_;
  p.runner = std::make_unique<StepRunner>(*p.model, *p.cache, comm);
  if (p.draft) p.runner->attach_draft(*p.draft, *p.draft_cache);
  runner_ = p.runner.get();
  if (hooks_.before_step) p.runner->before_each_step(hooks_.before_step);
  p.watchdog = std::make_unique<CollectiveWatchdog>(o.collective_timeout_s, fatal(comm.rank()));
  p.runner->set_watchdog(p.watchdog.get());
  if (p.watched_comm) {
    p.runner->set_peer_watchdog(p.peer_watchdog.get(), o.peer_timeout_s, o.heartbeat_interval_s);
    p.watched_comm->enable();  // the load's own waits (a slow shard) are the load timeout's
  }
  if (is_driver()) start_driver(o);
  if (o.warm_up) warm_up();
  if (is_driver()) queue_->set_health(Health::kReady);
}

Engine::~Engine() = default;

std::function<void(const std::string&)> Engine::fatal(int rank) const {
  if (hooks_.fatal) return hooks_.fatal;
  return [rank](const std::string& msg) {
    std::cerr << "saker: error (rank " << rank << "): " << msg << "; aborting" << std::endl;
    std::abort();
  };
}

void Engine::load(const EngineOptions& o, Communicator& comm) {
  parts_ = std::make_unique<Parts>(o.model_dir);
  Parts& p = *parts_;
  p.comm = &comm;
  if (comm.size() > 1) {
    // A lost peer's message names the ranks and their hosts.
    const std::vector<std::string> hosts = rank_hosts(comm);
    std::string others;
    for (int r = 0; r < comm.size(); ++r)
      if (r != comm.rank())
        others += (others.empty() ? "" : ", ") +
                  ("rank " + std::to_string(r) + " on host " + hosts[static_cast<std::size_t>(r)]);
    p.peer_watchdog = std::make_unique<CollectiveWatchdog>(
        o.peer_timeout_s, fatal(comm.rank()), "--peer-timeout",
        "a peer is gone, hung or cut off (rank " + std::to_string(comm.rank()) + " on host " +
            hosts[static_cast<std::size_t>(comm.rank())] + " waited for " + others + ")");
  }
  const WeightQuant quant = weight_quant(o.dtype, p.checkpoint);
  threads_ = o.threads ? o.threads : usable_cpus();
  try {
    p.backend = make_backend(o.device, threads_, p.shape.max_positions,
                             DeviceOptions{o.batch_invariant, o.random_weights, o.cpu_matmul});
  } catch (const std::invalid_argument& e) {
    if (std::string_view(e.what()).starts_with("cpu_matmul"))
      throw OptionError("cpu_matmul", e.what());
    throw;
  }
  backend_ = p.backend.get();
  p.kv_dtype = resolve_kv_dtype(o.kv_cache_dtype, p.checkpoint, *p.backend, o.device);
  try {
    p.model_comm = make_model_communicator(*p.backend, comm, o.comm);
  } catch (const std::invalid_argument& e) {
    throw OptionError("comm", e.what());
  }
  if (p.peer_watchdog)
    p.watched_comm = std::make_unique<WatchedCommunicator>(p.model_comm ? *p.model_comm : comm,
                                                           *p.peer_watchdog, o.peer_timeout_s);
  Communicator* model_comm = p.watched_comm ? p.watched_comm.get()
                             : p.model_comm ? p.model_comm.get()
                                            : &comm;
  // Running out of memory while loading says how much this rank needed and had.
  const std::optional<std::size_t> device_free_before = p.backend->free_memory();
  const std::size_t host_free_before = available_host_memory();
  const std::string where = "rank " + std::to_string(comm.rank());
  const std::string share =
      " bytes (about 1/" + std::to_string(comm.size()) + " of them per rank); ";
  try {
    // Every rank checks the layout itself, so an impossible one fails everywhere with one message.
    p.model = make_model(
        o.model_dir, p.checkpoint, *p.backend,
        ModelOptions{o.max_batch_tokens, logit_rows(o), p.shape.max_positions, quant}, model_comm);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(where +
                             " ran out of host memory loading its shard: the checkpoint holds " +
                             std::to_string(p.checkpoint.total_bytes()) + share +
                             std::to_string(host_free_before) + " bytes were available");
  } catch (const std::runtime_error& e) {
    if (!device_free_before || std::string(e.what()).find("out of memory") == std::string::npos)
      throw;
    throw std::runtime_error(
        where + " ran out of device memory loading its shard (" + e.what() +
        "): the checkpoint holds " + std::to_string(p.checkpoint.total_bytes()) + share +
        std::to_string(*device_free_before) + " bytes were free on the device");
  }
  limits_ = {p.shape.vocab_size, p.model->options().max_context, false, nullptr};
  if (!o.speculative_model.empty()) load_draft(o, comm);
}

void Engine::load_draft(const EngineOptions& o, Communicator& comm) {
  Parts& p = *parts_;
  const std::string& dir = o.speculative_model;
  try {
    p.draft_shape = load_model_shape(dir);
    p.draft_checkpoint = Checkpoint::open(dir);
  } catch (const std::exception& e) {
    throw OptionError("speculative_model", "speculative_model " + dir + ": " + e.what());
  }
  if (p.draft_shape->vocab_size != p.shape.vocab_size)
    throw OptionError("speculative_model",
                      "speculative_model " + dir + " has a vocabulary of " +
                          std::to_string(p.draft_shape->vocab_size) + " tokens; the target's has " +
                          std::to_string(p.shape.vocab_size) + " (they must share the tokenizer)");
  // Same split as the target: a draft big enough to matter (Falcon-7B for -180B) would not fit
  // replicated, and its steps then cost every rank the same, as the target's do.
  // Its steps: the catch-up of a whole step's tokens, or one token per drafting sequence.
  const ModelOptions mo{std::max<std::int64_t>(o.max_batch_tokens, o.max_batch_size),
                        o.max_batch_size,
                        std::min(p.draft_shape->max_positions, p.model->options().max_context),
                        weight_quant(o.dtype, *p.draft_checkpoint)};
  try {
    p.draft = make_model(dir, *p.draft_checkpoint, *p.backend, mo,
                         p.watched_comm ? static_cast<Communicator*>(p.watched_comm.get())
                         : p.model_comm ? p.model_comm.get()
                                        : &comm);
  } catch (const OptionError&) {
    throw;
  } catch (const std::exception& e) {
    throw OptionError("speculative_model", "speculative_model " + dir + ": " + e.what());
  }
}

void Engine::size_kv_pool(const EngineOptions& o, Communicator& comm) {
  Parts& p = *parts_;
  const std::string where = "rank " + std::to_string(comm.rank());
  const std::int64_t kv_heads = p.model->local_kv_heads();
  // What KvCache allocates per block: the elements, and the 8-bit forms' per-vector scales.
  const KvShape block_shape{p.shape.layers, kv_heads, p.shape.head_dim, p.kv_dtype};
  auto per_token = static_cast<std::int64_t>(block_shape.bytes_per_token());
  if (p.draft) {  // a block holds the draft's KV of its tokens too
    KvShape d = p.draft->kv_shape();
    d.dtype = p.kv_dtype;
    per_token += static_cast<std::int64_t>(d.bytes_per_token());
  }
  const auto per_block = per_token * static_cast<std::int64_t>(o.block_size);
  std::int64_t blocks = 0;
  std::size_t budget = 0;
  if (o.kv_cache_tokens > 0) {
    blocks = (o.kv_cache_tokens + o.block_size - 1) / o.block_size;
    budget = static_cast<std::size_t>(blocks * per_block);
  } else {
    if (o.kv_cache_bytes) {
      budget = *o.kv_cache_bytes;
      // An explicit budget the machine cannot hold would end in the OOM killer, not an error.
      const std::size_t have = p.backend->free_memory().value_or(available_host_memory());
      if (budget > have)
        throw OptionError("kv_cache_bytes", where + ": kv_cache_bytes (" + std::to_string(budget) +
                                                " bytes) is more than the " + std::to_string(have) +
                                                " bytes free after loading");
    } else if (const auto device_free = p.backend->free_memory()) {
      // A GPU: its own free memory now that the weights and workspaces are allocated (one rank
      // per GPU, so no sharing with other ranks).
      budget = static_cast<std::size_t>(o.kv_cache_fraction * static_cast<double>(*device_free));
    } else {
      // The CPU backend has copied the weights into its own memory by now, so what is available
      // is what is left (the checkpoint's page cache counts as available: it can be dropped).
      budget = static_cast<std::size_t>(
          o.kv_cache_fraction * static_cast<double>(available_host_memory()) / local_ranks());
    }
    blocks = static_cast<std::int64_t>(budget / static_cast<std::size_t>(per_block));
    // More than every sequence at full context could use is never needed.
    const std::int64_t most =
        o.max_batch_size * ((p.shape.max_positions + o.block_size - 1) / o.block_size);
    blocks = std::min({blocks, most, (std::int64_t{1} << 24) - 1});
  }
  blocks = min_over_ranks(comm, blocks);  // block ids mean the same slots on every rank
  if (blocks < 1)
    throw OptionError("kv_cache_bytes", "the KV cache budget of " + std::to_string(budget) +
                                            " bytes on some rank holds no block of " +
                                            std::to_string(o.block_size) + " tokens (" +
                                            std::to_string(per_block) +
                                            " bytes); raise kv_cache_bytes or lower block_size");
  try {
    KvShape kv = p.model->kv_shape();
    kv.dtype = p.kv_dtype;
    p.cache = std::make_unique<KvCache>(*p.backend, kv, blocks, o.block_size);
    if (p.draft) {
      KvShape d = p.draft->kv_shape();
      d.dtype = p.kv_dtype;
      p.draft_cache = std::make_unique<KvCache>(*p.backend, d, blocks, o.block_size);
    }
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(where + " ran out of memory allocating its KV pool: " +
                             std::to_string(blocks) + " blocks of " + std::to_string(per_block) +
                             " bytes = " + std::to_string(blocks * per_block) + " bytes");
  }
  p.sched.max_batch_size = o.max_batch_size;
  p.sched.max_tokens_per_step = static_cast<std::int32_t>(o.max_batch_tokens);
  p.sched.policy = o.policy;
  p.sched.batching = o.batching;
  p.sched.max_batch_delay_s = o.max_batch_delay_s;
  p.sched.enable_prefix_caching = o.enable_prefix_caching;
}

void Engine::start_driver(const EngineOptions& o) {
  Parts& p = *parts_;
  if (o.text) {
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_model_dir(o.model_dir));
    constraints_ = std::make_shared<ConstraintCompiler>(*tokenizer_, p.shape.vocab_size,
                                                        p.shape.eos_token_ids);
  }
  limits_.text = tokenizer_ != nullptr;
  limits_.constraints = constraints_;
  batch_ = std::make_unique<BatchEngine>(*p.runner, p.sched, p.shape.eos_token_ids,
                                         tokenizer_.get(), constraints_);
  spec_ = speculation(o);
  batch_->set_speculation(spec_);
  queue_->set_limits(limits_);
  queue_->set_stall_probe([w = p.watchdog.get(), stall = o.collective_timeout_s / 2,
                           peer = p.peer_watchdog.get(), peer_stall = o.peer_timeout_s / 2] {
    return w->busy_seconds() > stall || (peer && peer->busy_seconds() > peer_stall);
  });
}

void Engine::warm_up() {
  if (!is_driver()) {
    parts_->runner->serve();
    return;
  }
  // One iteration end to end (every rank, every kernel) before health says ready.
  BatchRequest warm;
  warm.id = queue_->next_id();
  warm.prompt = {0};
  warm.max_new_tokens = 1;
  warm.ignore_eos = true;
  batch_->add(warm);
  run();  // the one loop; the warm request has no sink, and its result is dropped
  reset_stats();
}

bool Engine::is_driver() const {
  return parts_->runner->is_driver();
}
std::int64_t Engine::kv_blocks() const {
  return parts_->cache->num_blocks();
}
std::int64_t Engine::block_size() const {
  return parts_->cache->block_size();
}
DType Engine::kv_cache_dtype() const {
  return parts_->kv_dtype;
}
int Engine::ranks() const {
  return parts_->comm->size();
}
std::size_t Engine::step_weight_bytes() const {
  return parts_->model->step_weight_bytes();
}
const ModelShape& Engine::shape() const {
  return parts_->shape;
}
std::size_t Engine::weight_bytes() const {
  return parts_->model->weight_bytes();
}
std::vector<std::int64_t> Engine::eos_token_ids() const {
  return parts_->shape.eos_token_ids;
}
double Engine::now() const {
  return batch_ ? batch_->now() : 0.0;
}

EngineSnapshot Engine::stats() const {
  std::lock_guard lock(stats_mu_);
  return snapshot_;
}

void Engine::reset_stats() {
  const std::int32_t blocks = batch_->blocks().num_blocks();
  batch_ = std::make_unique<BatchEngine>(
      *parts_->runner, parts_->sched, parts_->shape.eos_token_ids, tokenizer_.get(), constraints_);
  batch_->set_speculation(spec_);
  std::lock_guard lock(stats_mu_);
  snapshot_ = {};
  snapshot_.kv_blocks = blocks;
}

}  // namespace saker
