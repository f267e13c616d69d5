#include "engine/model/falcon/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/model/config_file.h"

namespace saker {
namespace {

using nlohmann::json;

// Bounds on the shape fields: far past any Falcon (-180B: hidden 14848, 80 layers, vocab 65024),
// and small enough that no size computed from them overflows (found by the fuzzer: hidden_size
// 214748364864 overflowed the per-layer weight count).
constexpr std::int64_t kMaxDim = std::int64_t{1} << 24;     // vocab, positions, heads
constexpr std::int64_t kMaxHidden = std::int64_t{1} << 20;  // hidden_size
constexpr std::int64_t kMaxFfn = std::int64_t{1} << 22;     // ffn_hidden_size
constexpr std::int64_t kMaxLayers = 4096;

// Reads the first key of `names` that is present; names the file and key in errors.
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  const json* find(std::initializer_list<const char*> names) const {
    for (const char* n : names) {
      auto it = j_.find(n);
      if (it != j_.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }

  // Shapes are bounded (kMaxDim unless `max` says less) so that the products the model's sizes
  // are made of (rows x columns x layers x bytes) cannot overflow an int64.
  std::int64_t positive_int(std::initializer_list<const char*> names,
                            std::int64_t max = kMaxDim) const {
    const json* v = find(names);
    if (!v) throw ConfigError(source_ + ": missing field \"" + *names.begin() + "\"");
    return check_positive(*v, *names.begin(), max);
  }

  std::optional<std::int64_t> optional_positive_int(std::initializer_list<const char*> names,
                                                    std::int64_t max = kMaxDim) const {
    const json* v = find(names);
    if (!v) return std::nullopt;
    return check_positive(*v, *names.begin(), max);
  }

  bool boolean(std::initializer_list<const char*> names, bool fallback) const {
    const json* v = find(names);
    if (!v) return fallback;
    if (!v->is_boolean())
      throw ConfigError(source_ + ": field \"" + *names.begin() + "\" must be true or false, got " +
                        v->dump());
    return v->get<bool>();
  }

  double number(const json& v, const char* name) const {
    if (!v.is_number()) error(name, "must be a number", v);
    return v.get<double>();
  }

  [[noreturn]] void error(const char* name, const std::string& what, const json& v) const {
    throw ConfigError(source_ + ": field \"" + name + "\" " + what + ", got " + v.dump());
  }

 private:
  std::int64_t check_positive(const json& v, const char* name, std::int64_t max) const {
    if (!v.is_number_integer() || v.get<std::int64_t>() <= 0)
      error(name, "must be a positive integer", v);
    if (v.get<std::int64_t>() > max) error(name, "must be at most " + std::to_string(max), v);
    return v.get<std::int64_t>();
  }

  const json& j_;
  const std::string& source_;
};

std::vector<std::int64_t> token_ids(const json& v) {
  std::vector<std::int64_t> out;
  if (v.is_number_integer()) out.push_back(v.get<std::int64_t>());
  if (v.is_array())
    for (const auto& e : v)
      if (e.is_number_integer()) out.push_back(e.get<std::int64_t>());
  return out;
}

std::string shape_str(std::int64_t a) {
  return std::to_string(a);
}

// config.json's model_type; a config without one names its class in `architectures` instead
// (RW-era: the 40B-style RefinedWeb configs are the ones with n_head_kv).
std::string model_type_of(const json& j) {
  if (const auto it = j.find("model_type"); it != j.end() && !it->is_null())
    return it->is_string() ? it->get<std::string>() : it->dump();
  if (const auto it = j.find("architectures"); it != j.end() && it->is_array())
    for (const json& a : *it) {
      if (a == "FalconForCausalLM") return "falcon";
      if (a == "RWForCausalLM")
        return j.contains("n_head_kv") || j.contains("new_decoder_architecture")
                   ? "RefinedWeb"
                   : "RefinedWebModel";
    }
  return {};
}

}  // namespace

std::string layer_prefix(std::int64_t layer) {
  return "transformer.h." + std::to_string(layer) + ".";
}

std::string FalconConfig::variant() const {
  std::ostringstream s;
  if (alibi)
    s << "falcon-rw style";
  else if (new_arch && block == BlockKind::kParallelTwoNorm)
    s << "falcon-40b/180b style";
  else if (new_arch)
    s << "falcon-11b style";
  else
    s << "falcon-7b style";
  s << " (";
  if (kv_heads == 1)
    s << "multi-query";
  else if (kv_heads == heads)
    s << "multi-head";
  else
    s << "grouped KV, " << group_size() << " query heads per KV head";
  switch (block) {
    case BlockKind::kParallelOneNorm:
      s << ", parallel block, 1 LayerNorm";
      break;
    case BlockKind::kParallelTwoNorm:
      s << ", parallel block, ln_attn + ln_mlp";
      break;
    case BlockKind::kSequential:
      s << ", sequential block";
      break;
  }
  s << (alibi ? ", ALiBi" : ", rotary") << (bias ? ", biases" : "")
    << (tied_embeddings ? ", tied lm_head" : ", untied lm_head") << ")";
  return s.str();
}

ModelShape model_shape(const FalconConfig& c) {
  ModelShape s;
  s.family = "falcon";
  s.model_type = c.model_type;
  s.variant = c.variant();
  s.layers = c.layers;
  s.hidden = c.hidden;
  s.heads = c.heads;
  s.kv_heads = c.kv_heads;
  s.head_dim = c.head_dim;
  s.vocab_size = c.vocab_size;
  s.max_positions = c.max_positions;
  s.dtype = c.torch_dtype;
  s.bos_token_id = c.bos_token_id;
  s.eos_token_ids = c.eos_token_ids;
  // query_key_value, dense, dense_h_to_4h and dense_4h_to_h.
  s.matrix_weights_per_layer =
      c.qkv_rows() * c.hidden + c.hidden * c.heads * c.head_dim + 2 * c.hidden * c.ffn;
  return s;
}

namespace {

// Vocabulary, widths and head counts: the shapes of the tensors.
void read_shape(const Reader& r, const std::string& source, bool rw_new, bool rw_old,
                FalconConfig& c) {
  c.vocab_size = r.positive_int({"vocab_size"});
  c.hidden = r.positive_int({"hidden_size", "n_embed"}, kMaxHidden);
  c.layers = r.positive_int({"num_hidden_layers", "n_layer"}, kMaxLayers);
  c.heads = r.positive_int({"num_attention_heads", "n_head"});
  if (c.hidden % c.heads != 0)
    throw ConfigError(source + ": hidden_size " + shape_str(c.hidden) +
                      " is not a multiple of num_attention_heads " + shape_str(c.heads));
  c.head_dim = c.hidden / c.heads;
  if (c.head_dim % 2 != 0)
    throw ConfigError(source + ": head_dim " + shape_str(c.head_dim) + " must be even for rotary");

  c.new_arch = rw_new || r.boolean({"new_decoder_architecture"}, false);
  // RW-era configs default multi_query to false, current ones to true.
  const bool multi_query = r.boolean({"multi_query"}, !(rw_new || rw_old));
  const auto kv = r.optional_positive_int({"num_kv_heads", "n_head_kv"});
  if (c.new_arch)
    c.kv_heads = kv.value_or(c.heads);
  else
    c.kv_heads = multi_query ? 1 : c.heads;
  if (c.heads % c.kv_heads != 0)
    throw ConfigError(source + ": num_attention_heads " + shape_str(c.heads) +
                      " is not a multiple of num_kv_heads " + shape_str(c.kv_heads));
  c.ffn = r.optional_positive_int({"ffn_hidden_size"}, kMaxFfn).value_or(4 * c.hidden);
}

// Biases, ALiBi, tied embeddings and the block layout; refuses what the model cannot run.
void read_block(const Reader& r, const std::string& source, FalconConfig& c) {
  c.bias = r.boolean({"bias"}, false);
  c.alibi = r.boolean({"alibi"}, false);
  c.tied_embeddings = r.boolean({"tie_word_embeddings"}, true);
  const bool parallel = r.boolean({"parallel_attn"}, true);
  if (r.boolean({"apply_residual_connection_post_layernorm"}, false))
    throw ConfigError(source + ": apply_residual_connection_post_layernorm=true is not supported");
  if (const json* act = r.find({"activation"}); act && *act != "gelu")
    r.error("activation", "must be \"gelu\" (the only activation Falcon uses)", *act);

  if (c.new_arch) {
    if (!parallel)
      throw ConfigError(source + ": new_decoder_architecture requires parallel_attn=true");
    const auto n_ln = r.optional_positive_int({"num_ln_in_parallel_attn"}).value_or(2);
    if (n_ln != 1 && n_ln != 2) r.error("num_ln_in_parallel_attn", "must be 1 or 2", n_ln);
    c.block = n_ln == 2 ? BlockKind::kParallelTwoNorm : BlockKind::kParallelOneNorm;
  } else {
    c.block = parallel ? BlockKind::kParallelOneNorm : BlockKind::kSequential;
  }
}

// LayerNorm epsilon and the rotary base.
void read_norm_and_rotary(const Reader& r, FalconConfig& c) {
  if (const json* eps = r.find({"layer_norm_epsilon"})) {
    c.layer_norm_eps = static_cast<float>(r.number(*eps, "layer_norm_epsilon"));
    if (!(c.layer_norm_eps > 0)) r.error("layer_norm_epsilon", "must be positive", *eps);
  }
  // transformers 5 writes rope_parameters {rope_theta, rope_type}; older configs rope_theta.
  const json* theta = r.find({"rope_theta"});
  if (const json* rp = r.find({"rope_parameters"})) {
    if (!rp->is_object()) r.error("rope_parameters", "must be an object", *rp);
    // Not value(): a rope_type that is no string would escape as nlohmann's type_error.
    const auto rt = rp->find("rope_type");
    const std::string type = rt == rp->end()   ? "default"
                             : rt->is_string() ? rt->get<std::string>()
                                               : rt->dump();
    if (type != "default")
      r.error("rope_parameters", "has rope_type \"" + type + "\"; only default rotary is supported",
              *rp);
    if (auto it = rp->find("rope_theta"); it != rp->end()) theta = &*it;
  }
  if (const json* rs = r.find({"rope_scaling"}))
    r.error("rope_scaling", "is not supported (only unscaled rotary)", *rs);
  if (theta) {
    c.rope_theta = static_cast<float>(r.number(*theta, "rope_theta"));
    if (!(c.rope_theta > 0)) r.error("rope_theta", "must be positive", *theta);
  }
}

void read_special_tokens(const Reader& r, bool rw, FalconConfig& c) {
  if (const json* b = r.find({"bos_token_id"}); b && b->is_number_integer()) c.bos_token_id = *b;
  if (const json* e = r.find({"eos_token_id"})) c.eos_token_ids = token_ids(*e);
  // The RW-era configs of the 65024-vocabulary models carry placeholder ids 1/2; the tokenizer's
  // <|endoftext|> is 11 (docs/falcon.md section 1).
  if (rw && c.vocab_size == 65024) {
    c.bos_token_id = 11;
    c.eos_token_ids = {11};
  }
}

}  // namespace

FalconConfig parse_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": expected a JSON object");
  Reader r(j, source);
  FalconConfig c;
  c.model_type = model_type_of(j);
  const bool rw_new = c.model_type == "RefinedWeb";
  const bool rw_old = c.model_type == "RefinedWebModel";
  if (!rw_new && !rw_old && c.model_type != "falcon")
    throw ConfigError(source + ": model_type \"" + c.model_type +
                      "\" is not a Falcon model (expected falcon, RefinedWeb or RefinedWebModel)");
  read_shape(r, source, rw_new, rw_old, c);
  read_block(r, source, c);
  read_norm_and_rotary(r, c);
  c.max_positions = r.optional_positive_int({"max_position_embeddings"}).value_or(2048);
  // Informational: a value that is no string is ignored (value() would throw type_error).
  for (const char* key : {"dtype", "torch_dtype"})  // torch_dtype wins
    if (const auto it = j.find(key); it != j.end() && it->is_string()) c.torch_dtype = *it;
  read_special_tokens(r, rw_new || rw_old, c);
  return c;
}

FalconConfig load_config(const std::filesystem::path& model_dir) {
  FalconConfig c = parse_config(read_config_json(model_dir), (model_dir / "config.json").string());
  const auto gen_path = model_dir / "generation_config.json";
  const bool rw = c.model_type != "falcon";
  if (!rw && std::filesystem::exists(gen_path)) {
    const json g = read_json_file(gen_path);
    if (g.is_object() && g.contains("eos_token_id")) {
      auto ids = token_ids(g["eos_token_id"]);
      if (!ids.empty()) c.eos_token_ids = std::move(ids);
    }
  }
  return c;
}

std::vector<ExpectedTensor> expected_tensors(const FalconConfig& c, bool with_lm_head) {
  const std::int64_t H = c.hidden;
  std::vector<ExpectedTensor> out;
  out.push_back({"transformer.word_embeddings.weight", {c.vocab_size, H}});
  auto add_norm = [&](const std::string& name) {
    out.push_back({name + ".weight", {H}});
    out.push_back({name + ".bias", {H}});
  };
  auto add_linear = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    out.push_back({name + ".weight", {rows, cols}});
    if (c.bias) out.push_back({name + ".bias", {rows}});
  };
  for (std::int64_t l = 0; l < c.layers; ++l) {
    const std::string p = layer_prefix(l);
    switch (c.block) {
      case BlockKind::kParallelOneNorm:
        add_norm(p + "input_layernorm");
        break;
      case BlockKind::kParallelTwoNorm:
        add_norm(p + "ln_attn");
        add_norm(p + "ln_mlp");
        break;
      case BlockKind::kSequential:
        add_norm(p + "input_layernorm");
        add_norm(p + "post_attention_layernorm");
        break;
    }
    add_linear(p + "self_attention.query_key_value", c.qkv_rows(), H);
    add_linear(p + "self_attention.dense", H, c.heads * c.head_dim);
    add_linear(p + "mlp.dense_h_to_4h", c.ffn, H);
    add_linear(p + "mlp.dense_4h_to_h", H, c.ffn);
  }
  add_norm("transformer.ln_f");
  if (with_lm_head || !c.tied_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

std::int64_t parameter_count(const FalconConfig& c, bool with_lm_head) {
  std::int64_t n = 0;
  for (const auto& t : expected_tensors(c, with_lm_head)) {
    std::int64_t e = 1;
    for (auto d : t.shape) e *= d;
    n += e;
  }
  return n;
}

}  // namespace saker
