// DJL Serving's serving.properties as `saker launch` reads it: the file, then OPTION_* /
// SERVING_* environment variables, then command-line settings, each overriding the one before;
// every key checked for type and range; and the mpirun command that runs the job.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace saker::cli {

using Properties = std::map<std::string, std::string>;

// key=value, key: value or key value lines; # and ! comments; a trailing backslash continues
// the line. Throws std::invalid_argument naming the file and line of a line with no key.
Properties parse_properties(const std::string& text, const std::string& source);

// OPTION_MAX_ROLLING_BATCH_SIZE → option.max_rolling_batch_size, SERVING_JOB_QUEUE_SIZE →
// job_queue_size, from `env` (NAME=VALUE strings, as environ holds them).
Properties properties_from_env(const std::vector<std::string>& env);

// The validated settings the launch needs.
struct LaunchSettings {
  std::string model_dir;
  int tensor_parallel = 1;  // option.tensor_parallel_degree; "max" resolved by the caller
  bool tp_max = false;
  std::string batching = "rolling";  // option.rolling_batch: disable → dynamic
  std::optional<std::int64_t> max_rolling_batch_size, max_rolling_batch_prefill_tokens;
  std::optional<std::string> dtype;
  std::optional<std::int64_t> max_input_len, max_output_len;
  std::string output_formatter = "json";
  double model_loading_timeout_s = 1800;
  std::optional<std::int64_t> batch_size;
  std::optional<double> max_batch_delay_ms;
  std::optional<std::int64_t> job_queue_size;
  std::optional<bool> enable_prefix_caching;  // option.enable_prefix_caching
  std::optional<bool> batch_invariant;        // option.batch_invariant
  // option.speculative_draft_model (a draft model directory), option.speculative_length (K).
  std::optional<std::string> speculative_draft_model;
  std::optional<std::int64_t> speculative_length;
  std::optional<std::string>
      kv_cache_dtype;  // option.kv_cache_dtype: auto, fp32, bf16, fp16, fp8_e4m3, int8
  std::optional<std::string> cpu_matmul;  // option.cpu_matmul: auto, fp32 or bf16
  // option.api_key: passed to rank 0 as SAKER_API_KEY in the environment, never on a command line.
  std::optional<std::string> api_key;
  std::vector<std::string> unknown_keys;  // warned about once
};

// Throws std::invalid_argument naming the key, its value and what it must be.
LaunchSettings validate_properties(const Properties& p);

struct LaunchTarget {
  std::string mpirun = "mpirun";
  std::string saker;  // this executable
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string hostfile, hosts;  // passed through for multi-node jobs
  bool as_root = false;
  int cores = 1;  // on this node: above it, ranks oversubscribe
  double drain_timeout_s = 30;
  std::vector<std::string> env_to_forward;  // names passed with -x
  std::vector<std::string> extra_serve_args;
};

// The mpirun command line, one argument per element.
std::vector<std::string> mpirun_command(const LaunchSettings& s, const LaunchTarget& t);

}  // namespace saker::cli
