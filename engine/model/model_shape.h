// What the engine, the KV pool and the frontends know of a model, whatever its family: sizes,
// special tokens and what FLOP counts need. Each family fills one from its config.json
// (engine/model/registry.h); nothing here is specific to one family.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace saker {

// A config.json the engine cannot run: the message names the file and the field.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelShape {
  std::string family;      // the registry's name for the implementation, e.g. "falcon"
  std::string model_type;  // config.json's model_type as written
  std::string variant;     // one line on the variant, e.g. "falcon-7b style (multi-query, ...)"
  std::int64_t layers = 0;
  std::int64_t hidden = 0;    // width of the residual stream
  std::int64_t heads = 0;     // query heads
  std::int64_t kv_heads = 0;  // KV heads of the whole model (a rank may hold fewer)
  std::int64_t head_dim = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_positions = 0;  // the context the model was trained for
  std::string dtype;               // weights as stored per config.json ("bfloat16"); may be empty
  std::int64_t bos_token_id = -1;  // -1: none
  std::vector<std::int64_t> eos_token_ids;
  // FLOP counting: elements of the weight matrices one token is multiplied by in one layer (2
  // FLOPs each: a multiply and an add). Attention adds 4 per query-head dimension per position
  // attended to (q·k and p·V), and the lm_head 2 per vocabulary entry per hidden unit.
  std::int64_t matrix_weights_per_layer = 0;
};

}  // namespace saker
