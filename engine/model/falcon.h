// The Falcon decoder (every variant of falcon.md section 2), written once against the Backend
// interface. Weights stay in their stored precision; activations are fp32.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/kv_cache.h"
#include "kernels/backend.h"

namespace saker {

// One sequence's part of a step: new tokens at positions start_pos.., read and written through
// its block table (which must cover start_pos + tokens.size() positions).
struct SequenceStep {
  std::span<const std::int32_t> tokens;
  std::int32_t start_pos = 0;
  std::span<const std::int32_t> block_table;
  bool all_logits = false;  // logits for every token, else for the last one only
};

struct ModelOptions {
  std::int64_t max_tokens = 256;     // tokens per step (all sequences together)
  std::int64_t max_logit_rows = 64;  // logit rows per step
  std::int64_t max_context = 0;      // 0: the config's max_position_embeddings
};

class FalconModel {
 public:
  // Binds the checkpoint's tensors (validated against the config) and allocates every buffer a
  // step needs, so a step allocates nothing.
  FalconModel(const FalconConfig& config, const Checkpoint& checkpoint, Backend& backend,
              ModelOptions options = {});
  ~FalconModel();
  FalconModel(const FalconModel&) = delete;
  FalconModel& operator=(const FalconModel&) = delete;

  // Runs one step; returns logits [rows, vocab]: per sequence in order, all its tokens' rows or
  // its last one. Valid until the next call.
  std::span<const float> forward(std::span<const SequenceStep> batch, KvCache& cache);

  const FalconConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  std::size_t weight_bytes() const { return weight_bytes_; }
  // Weight bytes one decode step streams: all of them, less the embedding table when lm_head is
  // separate (a lookup reads one row).
  std::size_t step_weight_bytes() const { return weight_bytes_ - embedding_only_bytes_; }

 private:
  struct Linear {
    Weight w;
    std::unique_ptr<Buffer> bias;  // null without bias
  };
  struct Norm {
    std::unique_ptr<Buffer> gamma, beta;
  };
  struct Layer {
    Norm ln_attn;  // input_layernorm or ln_attn
    Norm ln_mlp;   // ln_mlp or post_attention_layernorm; unused for one-norm parallel blocks
    Linear qkv, dense, fc_in, fc_out;
  };
  struct Workspace;

  Linear bind_linear(const Checkpoint& ck, const std::string& name, bool bias);
  Norm bind_norm(const Checkpoint& ck, const std::string& name);
  Weight bind_weight(const Checkpoint& ck, const std::string& name);
  void run_layer(const Layer& layer, std::int64_t n, const KvLayer& kv);

  FalconConfig config_;
  ModelOptions options_;
  Backend& backend_;
  AttentionShape shape_;
  Weight embeddings_, lm_head_;
  Norm ln_f_;
  std::vector<Layer> layers_;
  std::unique_ptr<Buffer> rotary_, alibi_;
  std::unique_ptr<Workspace> ws_;
  std::size_t weight_bytes_ = 0;
  std::size_t embedding_only_bytes_ = 0;
};

// Copies a (small) tensor to fp32, whatever its stored dtype.
std::vector<float> tensor_to_f32(const TensorInfo& t);

}  // namespace saker
