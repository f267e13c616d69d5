// The engine's command-line flags, shared by generate --input, serve and bench: parsed into
// EngineOptions, and the engine's neutral errors told back in the flags' own names.
#pragma once

#include <cstddef>
#include <string>

#include "engine/engine.h"
#include "launcher/app/cli.h"

namespace saker::cli {

struct EngineFlags {
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
  double peer_timeout_s = 20;         // one collective longer than this: a peer is lost
  double heartbeat_interval_s = 2;    // serving and idle: rank 0's no-op plan this often
  // Prefix caching is on unless --no-enable-prefix-caching; --enable-prefix-caching says so.
  bool enable_prefix_caching = false, no_enable_prefix_caching = false;
  // Batch invariance (the CUDA backend's linear layers) is on unless --no-batch-invariant.
  bool batch_invariant = false, no_batch_invariant = false;
  std::string kv_cache_dtype = "auto";  // option.kv_cache_dtype
  std::string comm = "auto";            // --comm: auto, nccl or mpi
  std::string cpu_matmul = "auto";      // --cpu-matmul: auto, fp32 or bf16
  std::string speculative_method;       // ngram, draft, or empty: as --speculative-model says
  std::string speculative_model;        // a draft model directory
  std::int32_t num_speculative_tokens = 3;
  std::int32_t ngram_max = 4;
  std::string speculative_acceptance = "exact";
  bool no_speculative_adaptive = false;
};

// The flags for EngineFlags (--max-rolling-batch-size, --kv-cache-memory, ...).
po::options_description engine_options(EngineFlags& f);

// After parsing: a dynamic batch holds --batch-size requests when that is given, else as many as
// --max-rolling-batch-size, so the two modes compare at the same maximum by default. Checks the
// flags (UsageError naming the flag) and gives the engine's options.
EngineOptions finish_engine_options(const po::variables_map& vm, EngineFlags& f);

// "512MiB", "2GiB", "1.5G", "1000000" (bytes) → bytes; UsageError naming the flag otherwise.
std::size_t parse_bytes(const std::string& text, const std::string& flag);

// The flag that sets an EngineOptions field ("max_batch_size" → "--max-rolling-batch-size").
std::string flag_of(const std::string& field);

// Builds the engine (collective); an OptionError comes back as a UsageError naming the flag.
// Fault-injection hooks from the environment (tests) and the job-wide abort are attached.
std::unique_ptr<Engine> make_engine(const EngineOptions& o, Communicator& comm,
                                    std::shared_ptr<RequestQueue> queue = nullptr);

}  // namespace saker::cli
