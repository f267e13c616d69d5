// Falcon config.json → the effective structure the engine runs (docs/falcon.md section 1).
// Current `falcon` configs and RW-era `RefinedWeb` / `RefinedWebModel` configs both parse here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/model/checkpoint.h"
#include "engine/model/model_shape.h"

namespace saker {

// How a decoder layer combines attention and MLP.
enum class BlockKind {
  kParallelOneNorm,  // 7B, 11B: h = ln(x); out = x + mlp(h) + attn(h)
  kParallelTwoNorm,  // 40B, 180B: out = x + mlp(ln_mlp(x)) + attn(ln_attn(x))
  kSequential,       // rw: y = x + attn(ln(x)); out = y + mlp(ln2(y))
};

struct FalconConfig {
  // As written (falcon, RefinedWeb, RefinedWebModel), or implied by `architectures` without one.
  std::string model_type;
  std::int64_t vocab_size = 0;
  std::int64_t hidden = 0;    // H
  std::int64_t layers = 0;    // L
  std::int64_t heads = 0;     // query heads nh
  std::int64_t kv_heads = 0;  // effective KV heads (1 for multi-query)
  std::int64_t head_dim = 0;  // H / nh
  std::int64_t ffn = 0;       // MLP width
  bool new_arch = false;
  bool bias = false;
  bool alibi = false;
  bool tied_embeddings = true;
  BlockKind block = BlockKind::kParallelOneNorm;
  float layer_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  std::int64_t max_positions = 2048;
  std::string torch_dtype;  // informational ("bfloat16"), may be empty
  std::int64_t bos_token_id = -1;
  std::vector<std::int64_t> eos_token_ids;

  std::int64_t group_size() const { return heads / kv_heads; }  // query heads per KV head
  std::int64_t qkv_rows() const { return (heads + 2 * kv_heads) * head_dim; }
  // A short description of the variant, e.g. "falcon-7b style (multi-query, parallel block, ...)".
  std::string variant() const;
};

// What the engine sees of it (family "falcon").
ModelShape model_shape(const FalconConfig& c);

// Parses config.json contents. `source` names the file in error messages.
FalconConfig parse_config(const nlohmann::json& j, const std::string& source);
// Reads DIR/config.json (and generation_config.json for eos ids when present).
FalconConfig load_config(const std::filesystem::path& model_dir);

// The checkpoint tensors this config needs, with their shapes. lm_head.weight is listed when the
// embeddings are untied, or when `with_lm_head` says the checkpoint stores it anyway.
std::vector<ExpectedTensor> expected_tensors(const FalconConfig& c, bool with_lm_head);

// Element count of expected_tensors(c, with_lm_head).
std::int64_t parameter_count(const FalconConfig& c, bool with_lm_head);

std::string layer_prefix(std::int64_t layer);  // "transformer.h.{i}."

}  // namespace saker
