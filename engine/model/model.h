// The model as the engine drives it: one step of a batch of sequences through this rank's part
// of the weights, reading and writing the paged KV pool. Each family (engine/model/falcon/, ...)
// implements it against the Backend interface; engine/model/registry.h picks one from
// config.json. Everything above this seam (the step runner, the batch engine, the launcher)
// sees only Model and ModelShape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/model/kv_cache.h"
#include "engine/model/model_shape.h"
#include "kernels/backend.h"
#include "kernels/logit_summary.h"

namespace saker {

// One sequence's part of a step: new tokens at positions start_pos.., read and written through
// its block table (which must cover start_pos + tokens.size() positions).
struct SequenceStep {
  std::span<const std::int32_t> tokens;
  std::int32_t start_pos = 0;
  std::span<const std::int32_t> block_table;
  bool all_logits = false;  // logits for every token, else for the last one only
  std::uint64_t id = 0;     // the sequence's id, carried in iteration plans (logs, debugging)
};

// What forward() hands back to the host for the rows whose logits are wanted.
enum class LogitsMode {
  kRows,     // every row in full: [rows, vocab] floats
  kSummary,  // a LogitSummary per row (argmax, log-sum-exp, top kSummaryTopK), computed where
             // the logits live; full rows are not copied to the host
};

struct ModelOptions {
  std::int64_t max_tokens = 256;           // tokens per step (all sequences together)
  std::int64_t max_logit_rows = 64;        // logit rows per step
  std::int64_t max_context = 0;            // 0: the config's max_position_embeddings
  WeightQuant quant = WeightQuant::kNone;  // matrices streamed every step (`--dtype int8`)
};

class Model {
 public:
  virtual ~Model() = default;

  // Runs one step; every rank of the tensor-parallel group must call it with the same batch.
  // Returns, on the group's rank 0, logits [rows, vocab]: per sequence in order, all its tokens'
  // rows or its last one (valid until the next call); other ranks get an empty span.
  // With LogitsMode::kSummary it returns an empty span and summaries() holds the rows' summaries.
  virtual std::span<const float> forward(std::span<const SequenceStep> batch, KvCache& cache,
                                         LogitsMode mode = LogitsMode::kRows) = 0;
  // Rank 0, after a kSummary step: one summary per logit row, valid until the next call.
  virtual std::span<const LogitSummary> summaries() const = 0;

  virtual const ModelShape& shape() const = 0;
  // As given, with max_context filled in.
  virtual const ModelOptions& options() const = 0;
  // KV heads this rank stores (all of them on one rank; its groups' under tensor parallelism).
  virtual std::int64_t local_kv_heads() const = 0;
  // Bytes of weights this rank holds.
  virtual std::size_t weight_bytes() const = 0;
  // Weight bytes one decode step streams (the floor of a memory-bound step).
  virtual std::size_t step_weight_bytes() const = 0;
  // Whether kRows logits are already in host memory (the CPU backend): then LogitsMode::kSummary
  // saves no copy and only adds work (a log-sum-exp and a top-k over the vocabulary per row).
  virtual bool logits_on_host() const = 0;

  // What this rank's KV pool holds per token.
  KvShape kv_shape() const { return {shape().layers, local_kv_heads(), shape().head_dim}; }
};

}  // namespace saker
