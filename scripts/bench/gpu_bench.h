// saker_gpu_bench's steps and their reports (scripts/bench/gpu_bench*.cpp).
//
// Each step of the benchmark returns a small report that prints the lines the step shows as it
// runs (print), its part of the markdown table printed last (markdown) and its fields of
// gpu_bench.json (to_json); BenchReport puts them together in the order they are printed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace saker::gpu_bench {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Args {
  fs::path out = "gpu-bench-results";
  fs::path workdir = fs::temp_directory_path() / "saker-falcon7b-sparse";
  std::vector<std::int64_t> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  std::int64_t context = 128;  // tokens already in each sequence's cache when decode is timed
  std::int64_t steps = 16;     // decode steps timed per batch size
  std::int64_t prefill_tokens = 2048;  // one prompt of this many tokens
  DType kv_dtype = DType::F32;         // --kv-cache-dtype: the decode and prefill runs' KV cache
  bool skip_model = false;
  bool checkpoint_only = false;  // write and validate the sparse checkpoint, nothing else (no GPU)
  // Long contexts: Falcon-7B's shape with this many positions (0: its own 2048), and --quick:
  // decode timed by default and without batch invariance only, no stage breakdown.
  std::int64_t max_positions = 0;
  bool quick = false;
  fs::path config;  // --config FILE: this model's shape (a Hugging Face config.json), not 7B's
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0);
double median(std::vector<double> v);
std::string fmt(double v, int prec);

// --- the device ----------------------------------------------------------------------------------

struct DeviceInfo {
  std::string description;
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct BandwidthReport {
  double read_gbs = 0;  // streaming read kernel
  double copy_gbs = 0;  // device to device, read + write
  double h2d_gbs = 0;   // host (pinned) to device
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct GemmReport {
  double tflops = 0;  // cuBLASLt bf16 8192^3, fp32 accumulation
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

// --- the Falcon-7B-shaped model
// --------------------------------------------------------------------

struct ModelLoadReport {
  std::size_t weight_bytes = 0;
  double seconds = 0;          // weights made on the device, synchronised
  std::size_t step_bytes = 0;  // weight bytes one decode step streams
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct PrefillReport {
  std::int64_t tokens = 0;  // one prompt
  double seconds = 0;       // median of the timed runs
  double flops = 0;  // the prompt's matrix FLOPs: weights (2 per weight per token) + attention
  double gemm_tflops = 0;  // cuBLASLt's measured bf16 rate, the reference
  double tokens_per_s() const { return static_cast<double>(tokens) / seconds; }
  double tflops() const { return flops / seconds * 1e-12; }
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct DecodeRow {
  std::int64_t batch;
  double step_ms, tokens_per_s, floor_ms, pct_of_floor;
  double direct_ms;  // the same steps without graphs (call by call)
  // With graphs, the logits hand-off included: full rows to the host and a host argmax over
  // each; full rows and a host summary of each (what log-probabilities and top-k need); device
  // summaries (LogitsMode::kSummary) and their argmax.
  double rows_argmax_ms = 0, rows_summary_ms = 0, summary_ms = 0;
  // Graphs on, by CudaOptions: neither programmatic dependent launch (PDL) nor fused kernels
  // (the backend before them); PDL at any number of tokens; fused kernels; both. step_ms is the
  // default's (PDL up to pdl_max_tokens tokens, fused kernels).
  double plain_ms = 0, pdl_only_ms = 0, fuse_only_ms = 0, both_ms = 0;
  // The defaults without batch invariance (CudaOptions::batch_invariant off: each linear layer
  // its fastest path per token count, attention's key ranges cut to fill the GPU): the price of
  // invariance is step_ms / tuned_ms.
  double tuned_ms = 0;
  void print(std::ostream& o) const;
  json to_json() const;
};

struct DecodeReport {
  std::int64_t context = 0;  // tokens in each sequence's cache
  DType kv_dtype = DType::F32;
  // The defaults' limits (CudaOptions), quoted in the settings table's caption.
  std::int64_t pdl_max_tokens = 0, fuse_max_tokens = 0;
  bool quick = false;  // --quick: only the default and not batch-invariant were timed
  std::vector<DecodeRow> rows;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct GraphsReport {
  cuda::GraphStats stats;
  void print(std::ostream& o) const;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

// One stage of the batch-1 breakdown: the mean time of one call, issued back to back.
struct Stage {
  std::string name;
  double us = 0;
  double bytes = 0;     // weight bytes the call streams (0: not a weight-streaming call)
  double per_step = 0;  // calls per decode step
};

// One linear layer shape at one token count, on each path forced (CudaBackend::set_linear_path):
// mean us per call back to back, negative where the path cannot take the call.
struct LinearRow {
  std::string shape;
  std::int64_t rows = 0, cols = 0, tokens = 0;
  double us_gemv = -1, us_mma = -1, us_lt = -1;
};

struct StageReport {
  std::int64_t context = 0;
  double read_gbs = 0;            // what the GB/s columns are a percentage of
  double tflops = 0;              // cuBLASLt's measured bf16 rate: the tensor-core floor's
  std::vector<Stage> stages;      // the batch-1 breakdown and the comparisons after it
  std::vector<Stage> sweep;       // GEMV kernel variants
  std::vector<LinearRow> linear;  // every linear path on every shape, 1 to 256 tokens
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct ModelReport {
  ModelLoadReport load;
  PrefillReport prefill;
  DecodeReport decode;
  GraphsReport graphs;
  StageReport stages;
  void markdown(std::ostream& o) const;
  void to_json(json& j) const;
};

struct BenchReport {
  DeviceInfo device;
  BandwidthReport bandwidth;
  GemmReport gemm;
  std::optional<ModelReport> model;  // none with --skip-model
  std::string markdown() const;
  json to_json() const;
};

// --- steps ---------------------------------------------------------------------------------------

// --checkpoint-only: writes the sparse checkpoint and validates it (no GPU); prints where it is.
void check_sparse_checkpoint(const Args& args);

// Builds the model from the sparse checkpoint in args.workdir (removed afterwards) and times
// prefill, decode at each batch size and the batch-1 stages; prints each result as it comes.
ModelReport run_model_bench(const Args& args, double read_gbs, double tflops);

// The model's dimensions, which the stage breakdown runs its calls at.
struct StageShapes {
  std::int64_t hidden, heads, kv_heads, head_dim, vocab_size, layers, max_positions;
};

// Where a batch-1 decode step's time goes, call by call, on the model's shapes (gpu_bench_stages):
// kv is the first layer's cache, table its sequence's block table, filled up to `context`.
StageReport stage_breakdown(cuda::CudaBackend& backend, const KvLayer& kv,
                            const std::vector<std::int32_t>& table, std::int64_t context,
                            const StageShapes& c, double read_gbs, double tflops);

}  // namespace saker::gpu_bench
