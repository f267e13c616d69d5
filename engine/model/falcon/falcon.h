// The Falcon decoder (every variant of docs/falcon.md section 2) behind the Model interface,
// written once against the Backend interface. Weights stay in their stored precision; activations
// are fp32. With a shard, the model holds one tensor-parallel rank's slice and joins its group's
// collectives: an all-reduce per layer (two for sequential blocks), a gather of logits to rank 0.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/model/checkpoint.h"
#include "engine/model/falcon/config.h"
#include "engine/model/falcon/shard_plan.h"
#include "engine/model/model.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"

namespace saker {

// This rank's place in its tensor-parallel group; the default is the whole model on one rank.
struct TensorParallel {
  const RankShard* shard = nullptr;  // null: every weight whole (the model keeps a copy)
  Communicator* comm = nullptr;      // required with a shard
};

class FalconModel final : public Model {
 public:
  // Binds the checkpoint's tensors (validated against the config) and allocates every buffer a
  // step needs, so a step allocates nothing.
  FalconModel(const FalconConfig& config, const Checkpoint& checkpoint, Backend& backend,
              ModelOptions options = {}, TensorParallel tp = {});
  ~FalconModel() override;
  FalconModel(const FalconModel&) = delete;
  FalconModel& operator=(const FalconModel&) = delete;

  // Model::forward. With LogitsMode::kSummary under tensor parallelism the full rows are still
  // gathered to rank 0 and summarised there.
  std::span<const float> forward(std::span<const SequenceStep> batch, KvCache& cache,
                                 LogitsMode mode = LogitsMode::kRows) override;
  std::span<const LogitSummary> summaries() const override { return summaries_; }

  const FalconConfig& config() const { return config_; }
  const ModelShape& shape() const override { return model_shape_; }
  const ModelOptions& options() const override { return options_; }
  std::int64_t local_kv_heads() const override { return attn_.kv_heads; }
  // Bytes of weights this rank holds (mapped in place or read into its own memory).
  std::size_t weight_bytes() const override { return weight_bytes_; }
  // Weight bytes one decode step streams: all of them, less the embedding table when lm_head is
  // separate (a lookup reads one row).
  bool logits_on_host() const override { return backend_.host_accessible(); }
  std::size_t step_weight_bytes() const override { return weight_bytes_ - embedding_only_bytes_; }

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
  // How a rank takes its part of a [rows, cols] tensor (docs/falcon.md section 3).
  enum class Split {
    kWhole,      // replicated
    kQkvRows,    // column-parallel: this rank's query heads and its groups' keys and values
    kFfnRows,    // column-parallel: dense_h_to_4h
    kHeadCols,   // row-parallel: dense, the columns of this rank's heads
    kFfnCols,    // row-parallel: dense_4h_to_h
    kVocabRows,  // word embeddings and lm_head
  };
  struct Workspace;

  Weight bind_weight(const Checkpoint& ck, const std::string& name, Split split, WeightQuant quant);
  Linear bind_linear(const Checkpoint& ck, const std::string& name, Split split);
  Norm bind_norm(const Checkpoint& ck, const std::string& name);
  // The constructor's steps, in order.
  void bind_weights(const Checkpoint& ck, bool has_lm_head);
  Layer bind_layer(const Checkpoint& ck, std::int64_t layer);
  void upload_position_tables();
  void allocate_workspace();
  std::vector<Range> row_ranges(Split split, std::int64_t rows) const;
  void run_layer(const Layer& layer, std::int64_t n, const KvLayer& kv);
  void all_reduce(float* data, std::int64_t count);
  std::span<const float> gather_logits(std::int64_t rows);
  std::span<const LogitSummary> summarize(std::int64_t rows);

  FalconConfig config_;
  ModelShape model_shape_;
  ModelOptions options_;
  Backend& backend_;
  std::optional<RankShard> shard_;  // this rank's part; none: the whole model
  Communicator* comm_ = nullptr;    // the tensor-parallel group, with a shard
  AttentionShape attn_;             // this rank's heads
  Weight embeddings_, lm_head_;
  std::int64_t vocab_begin_ = 0;  // first vocabulary id of this rank's embedding / lm_head rows
  Norm ln_f_;
  std::vector<Layer> layers_;
  std::unique_ptr<Buffer> rotary_, alibi_;
  std::unique_ptr<Workspace> ws_;
  std::span<const LogitSummary> summaries_;
  std::vector<std::vector<std::byte>> owned_;  // weight slices read out of the mapping
  bool reads_mapping_ = false;  // some weight is used in place in the checkpoint's mapping
  std::size_t weight_bytes_ = 0;
  std::size_t embedding_only_bytes_ = 0;
};

// Copies a (small) tensor to fp32, whatever its stored dtype.
std::vector<float> tensor_to_f32(const TensorInfo& t);

}  // namespace saker
