// What every serving subcommand (generate, bench, serve) builds on each rank: the backend, this
// rank's shard of the model, a KV pool sized from a memory budget that all ranks agree on, the
// step runner, and on rank 0 the batch engine.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/batch_engine.h"
#include "engine/models.h"
#include "engine/step_runner.h"
#include "kernels/backend.h"
#include "launcher/app/cli.h"
#include "parallel/communicator.h"
#include "parallel/watchdog.h"

namespace saker::cli {

struct EngineOptions {
  std::string model_dir;
  int threads = 0;
  std::string device;                   // cuda, cpu, or empty: cuda when a GPU is visible
  std::string dtype = "auto";           // weights: auto (as stored) or int8; option.dtype
  std::int32_t max_batch_size = 32;     // option.max_rolling_batch_size (dynamic: batch_size)
  std::int64_t max_batch_tokens = 512;  // option.max_rolling_batch_prefill_tokens
  std::int64_t block_size = 16;
  std::string kv_cache_memory;     // per rank, e.g. "2GiB"; empty: a share of free memory
  double kv_cache_fraction = 0.9;  // of the memory free after loading
  std::string policy = "max_utilization";
  std::string batching = "rolling";
  double max_batch_delay_ms = 100;    // dynamic: max_batch_delay
  double collective_timeout_s = 600;  // a step's collectives longer than this abort the job
};

// The flags for EngineOptions (--max-rolling-batch-size, --kv-cache-memory, ...).
po::options_description engine_options(EngineOptions& o);

// After parsing: a dynamic batch holds --batch-size requests when that is given, else as many as
// --max-rolling-batch-size, so the two modes compare at the same maximum by default.
void finish_engine_options(const po::variables_map& vm, EngineOptions& o);

// "512MiB", "2GiB", "1.5G", "1000000" (bytes) → bytes; UsageError naming the flag otherwise.
std::size_t parse_bytes(const std::string& text, const std::string& flag);

// KV blocks for a byte budget: every layer holds K and V for block_size tokens of kv_heads heads.
std::int64_t kv_blocks_for_budget(std::size_t bytes, const ModelShape& s, std::int64_t kv_heads,
                                  std::int64_t block_size);

class Engine {
 public:
  // Collective: every rank of comm calls it. Throws UsageError / std::runtime_error naming the
  // problem (all ranks check the same things, so all fail together).
  Engine(const EngineOptions& o, Communicator& comm);

  const ModelShape& shape() const { return shape_; }
  Model& model() { return *model_; }
  KvCache& cache() { return *cache_; }
  StepRunner& runner() { return *runner_; }
  Backend& backend() { return *backend_; }
  unsigned threads() const { return threads_; }
  SchedulerConfig scheduler_config() const { return sched_; }
  const CollectiveWatchdog& watchdog() const { return *watchdog_; }

 private:
  ModelShape shape_;
  Checkpoint checkpoint_;
  unsigned threads_ = 0;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> model_comm_;  // NCCL for GPU ranks; null: the MPI communicator
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<StepRunner> runner_;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
  SchedulerConfig sched_;
};

}  // namespace saker::cli
