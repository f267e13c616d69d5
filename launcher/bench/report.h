// saker bench's report: vLLM's serving metrics, the engine's counters, and the time per output
// token against the floors measured in the same run, printed as a table and written as JSON.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "launcher/bench/simulator.h"

namespace saker::cli {

// What FLOP counts need of the model.
struct FlopShape {
  double layers = 0;
  double matrix_weights_per_layer = 0;  // qkv, dense, and the MLP's two matrices
  double attention_width = 0;           // query heads x head dim
  double lm_head_weights = 0;           // vocabulary x hidden
};

// FLOPs of one token through the layers when it attends to `ctx` positions: 2 per weight of the
// matrices, and 4 per head dimension per position for q·k and p·V.
double layer_flops_per_token(const FlopShape& s, double ctx);
// A prompt token of a `len`-token prompt sees (len + 1) / 2 positions on average; the lm_head runs
// for the prompt's last token only and is left out.
double prefill_flops_per_token(const FlopShape& s, double len);
// A decode token at context `ctx` also goes through the lm_head.
double decode_flops_per_token(const FlopShape& s, double ctx);
double mean_prompt_tokens(const std::vector<BenchRequest>& reqs);

// The run's settings, as the report names them.
struct BenchSettings {
  std::string model, variant, workload, request_rate, batching;
  std::int64_t num_requests = 0, max_concurrency = 0, max_batch_tokens = 0;
  std::int32_t max_batch_size = 0;
  double max_batch_delay_ms = 0;
  int tp = 1;
  unsigned threads = 0;
  bool prefix_caching = true;
  std::string guided_json;  // the schema file every request was constrained by, if any
};

struct BenchReport {
  nlohmann::json json;
  std::string text;
};

// `step_bytes`: the weight bytes all ranks stream per decode step.
BenchReport make_report(const BenchSettings& s, const FlopShape& shape,
                        const std::vector<BenchRequest>& reqs, const BenchRun& run,
                        double step_bytes);

}  // namespace saker::cli
