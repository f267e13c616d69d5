#include "engine/model/falcon.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/ops.h"

namespace saker {

struct FalconModel::Workspace {
  std::unique_ptr<Buffer> x, h, h2, qkv, attn, a, m, b, sel, sel_norm, logits;
  std::vector<std::int32_t> ids;
  std::vector<TokenPlace> places;
  std::vector<std::int64_t> logit_rows;  // token row of each logit row
};

std::vector<float> tensor_to_f32(const TensorInfo& t) {
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<float> out(n);
  const std::byte* p = t.data.data();
  for (std::size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32:
        std::memcpy(&out[i], p + 4 * i, 4);
        break;
      case DType::BF16:
      case DType::F16: {
        std::uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = t.dtype == DType::BF16 ? bf16_to_f32(v) : f16_to_f32(v);
        break;
      }
    }
  }
  return out;
}

Weight FalconModel::bind_weight(const Checkpoint& ck, const std::string& name) {
  const TensorInfo& t = ck.get(name);
  weight_bytes_ += t.data.size();
  return backend_.upload_weight(Weight{t.dtype, t.data.data(), t.shape[0], t.shape[1]});
}

FalconModel::Linear FalconModel::bind_linear(const Checkpoint& ck, const std::string& name,
                                             bool bias) {
  Linear l;
  l.w = bind_weight(ck, name + ".weight");
  if (bias) {
    const TensorInfo& b = ck.get(name + ".bias");
    weight_bytes_ += b.data.size();
    l.bias = backend_.upload(tensor_to_f32(b));
  }
  return l;
}

FalconModel::Norm FalconModel::bind_norm(const Checkpoint& ck, const std::string& name) {
  const TensorInfo& g = ck.get(name + ".weight");
  const TensorInfo& b = ck.get(name + ".bias");
  weight_bytes_ += g.data.size() + b.data.size();
  return Norm{backend_.upload(tensor_to_f32(g)), backend_.upload(tensor_to_f32(b))};
}

FalconModel::FalconModel(const FalconConfig& config, const Checkpoint& checkpoint, Backend& backend,
                         ModelOptions options)
    : config_(config), options_(options), backend_(backend), ws_(std::make_unique<Workspace>()) {
  const FalconConfig& c = config_;
  if (options_.max_context <= 0) options_.max_context = c.max_positions;
  if (options_.max_tokens <= 0 || options_.max_logit_rows <= 0)
    throw std::invalid_argument("max_tokens and max_logit_rows must be positive");

  // A tied checkpoint may still store lm_head.weight (RW-era files do): use it when present.
  const bool has_lm_head = checkpoint.find("lm_head.weight") != nullptr;
  checkpoint.validate(expected_tensors(c, has_lm_head));

  shape_ = AttentionShape{c.heads, c.kv_heads, c.head_dim, nullptr};
  embeddings_ = bind_weight(checkpoint, "transformer.word_embeddings.weight");
  lm_head_ = has_lm_head ? bind_weight(checkpoint, "lm_head.weight") : embeddings_;
  if (has_lm_head)
    embedding_only_bytes_ = checkpoint.get("transformer.word_embeddings.weight").data.size();
  ln_f_ = bind_norm(checkpoint, "transformer.ln_f");
  for (std::int64_t l = 0; l < c.layers; ++l) {
    const std::string p = layer_prefix(l);
    Layer layer;
    switch (c.block) {
      case BlockKind::kParallelOneNorm:
        layer.ln_attn = bind_norm(checkpoint, p + "input_layernorm");
        break;
      case BlockKind::kParallelTwoNorm:
        layer.ln_attn = bind_norm(checkpoint, p + "ln_attn");
        layer.ln_mlp = bind_norm(checkpoint, p + "ln_mlp");
        break;
      case BlockKind::kSequential:
        layer.ln_attn = bind_norm(checkpoint, p + "input_layernorm");
        layer.ln_mlp = bind_norm(checkpoint, p + "post_attention_layernorm");
        break;
    }
    layer.qkv = bind_linear(checkpoint, p + "self_attention.query_key_value", c.bias);
    layer.dense = bind_linear(checkpoint, p + "self_attention.dense", c.bias);
    layer.fc_in = bind_linear(checkpoint, p + "mlp.dense_h_to_4h", c.bias);
    layer.fc_out = bind_linear(checkpoint, p + "mlp.dense_4h_to_h", c.bias);
    layers_.push_back(std::move(layer));
  }

  if (c.alibi) {
    std::vector<float> slopes(static_cast<std::size_t>(c.heads));
    cpu::alibi_slopes(c.heads, slopes.data());
    alibi_ = backend_.upload(slopes);
    shape_.alibi_slopes = alibi_->data();
  } else {
    std::vector<float> table(static_cast<std::size_t>(options_.max_context * c.head_dim));
    cpu::rotary_table(c.rope_theta, c.head_dim, options_.max_context, table.data());
    rotary_ = backend_.upload(table);
  }

  const auto T = static_cast<std::size_t>(options_.max_tokens);
  const auto R = static_cast<std::size_t>(options_.max_logit_rows);
  const auto H = static_cast<std::size_t>(c.hidden);
  Workspace& w = *ws_;
  w.x = backend_.allocate(T * H);
  w.h = backend_.allocate(T * H);
  w.h2 = backend_.allocate(c.block == BlockKind::kParallelOneNorm ? 0 : T * H);
  w.qkv = backend_.allocate(T * static_cast<std::size_t>(c.qkv_rows()));
  w.attn = backend_.allocate(T * H);
  w.a = backend_.allocate(T * H);
  w.m = backend_.allocate(T * static_cast<std::size_t>(c.ffn));
  w.b = backend_.allocate(T * H);
  w.sel = backend_.allocate(R * H);
  w.sel_norm = backend_.allocate(R * H);
  w.logits = backend_.allocate(R * static_cast<std::size_t>(c.vocab_size));
  w.ids.resize(T);
  w.places.resize(T);
  w.logit_rows.resize(R);
}

FalconModel::~FalconModel() = default;

void FalconModel::run_layer(const Layer& L, std::int64_t n, const KvLayer& kv) {
  const FalconConfig& c = config_;
  Workspace& w = *ws_;
  const std::int64_t H = c.hidden;
  float* x = w.x->data();
  auto bias = [](const Linear& l) { return l.bias ? l.bias->data() : nullptr; };
  auto norm = [&](const Norm& nm, const float* in, float* out) {
    backend_.layer_norm(in, n, H, nm.gamma->data(), nm.beta->data(), c.layer_norm_eps, out);
  };
  const std::span<const TokenPlace> places(w.places.data(), static_cast<std::size_t>(n));

  // Attention on ln_attn(x) → a
  norm(L.ln_attn, x, w.h->data());
  backend_.linear(w.h->data(), n, L.qkv.w, bias(L.qkv), w.qkv->data());
  if (!c.alibi) backend_.rotary(w.qkv->data(), places, shape_, rotary_->data());
  backend_.kv_write(w.qkv->data(), places, shape_, kv);
  backend_.attention(w.qkv->data(), places, shape_, kv, w.attn->data());
  backend_.linear(w.attn->data(), n, L.dense.w, bias(L.dense), w.a->data());

  // MLP input: the same normalised x (one norm), ln_mlp(x), or post_attention_layernorm(x + a).
  const float* mlp_in = w.h->data();
  if (c.block == BlockKind::kParallelTwoNorm) {
    norm(L.ln_mlp, x, w.h2->data());
    mlp_in = w.h2->data();
  } else if (c.block == BlockKind::kSequential) {
    backend_.add(w.a->data(), n * H, x);
    norm(L.ln_mlp, x, w.h->data());
  }
  backend_.linear(mlp_in, n, L.fc_in.w, bias(L.fc_in), w.m->data());
  backend_.gelu(w.m->data(), n * c.ffn);
  backend_.linear(w.m->data(), n, L.fc_out.w, bias(L.fc_out), w.b->data());

  if (c.block == BlockKind::kSequential) {
    backend_.add(w.b->data(), n * H, x);
  } else {
    // transformers adds mlp + attn first, then the residual.
    backend_.add(w.a->data(), n * H, w.b->data());
    backend_.add(w.b->data(), n * H, x);
  }
}

std::span<const float> FalconModel::forward(std::span<const SequenceStep> batch, KvCache& cache) {
  const FalconConfig& c = config_;
  Workspace& w = *ws_;
  std::int64_t n = 0, rows = 0;
  for (const SequenceStep& s : batch) {
    const auto len = static_cast<std::int64_t>(s.tokens.size());
    if (len == 0) throw std::invalid_argument("a sequence step has no tokens");
    if (n + len > options_.max_tokens)
      throw std::length_error(
          "step has more than max_tokens = " + std::to_string(options_.max_tokens) + " tokens");
    const std::int64_t end_pos = s.start_pos + len;
    if (s.start_pos < 0 || end_pos > options_.max_context)
      throw std::length_error("positions " + std::to_string(s.start_pos) + ".." +
                              std::to_string(end_pos - 1) + " exceed the context length " +
                              std::to_string(options_.max_context));
    if (cache.blocks_for(end_pos) > static_cast<std::int64_t>(s.block_table.size()))
      throw std::length_error("block table of " + std::to_string(s.block_table.size()) +
                              " blocks does not cover position " + std::to_string(end_pos - 1));
    for (std::int64_t b = 0; b < cache.blocks_for(end_pos); ++b)
      if (s.block_table[b] < 0 || s.block_table[b] >= cache.num_blocks())
        throw std::out_of_range("block table entry " + std::to_string(s.block_table[b]) +
                                " is outside the KV pool of " + std::to_string(cache.num_blocks()) +
                                " blocks");
    for (std::int64_t i = 0; i < len; ++i) {
      w.ids[n + i] = s.tokens[i];
      w.places[n + i] =
          TokenPlace{static_cast<std::int32_t>(s.start_pos + i), s.block_table.data()};
    }
    const std::int64_t first = s.all_logits ? 0 : len - 1;
    if (rows + (len - first) > options_.max_logit_rows)
      throw std::length_error("step needs more than max_logit_rows = " +
                              std::to_string(options_.max_logit_rows) + " logit rows");
    for (std::int64_t i = first; i < len; ++i) w.logit_rows[rows++] = n + i;
    n += len;
  }
  if (n == 0) return {};

  backend_.embedding({w.ids.data(), static_cast<std::size_t>(n)}, embeddings_, w.x->data());
  for (std::int64_t l = 0; l < c.layers; ++l) run_layer(layers_[l], n, cache.layer(l));

  // Final norm and lm_head only on the rows whose logits are wanted.
  const std::int64_t H = c.hidden;
  backend_.gather_rows(w.x->data(), {w.logit_rows.data(), static_cast<std::size_t>(rows)}, H,
                       w.sel->data());
  backend_.layer_norm(w.sel->data(), rows, H, ln_f_.gamma->data(), ln_f_.beta->data(),
                      c.layer_norm_eps, w.sel_norm->data());
  backend_.linear(w.sel_norm->data(), rows, lm_head_, nullptr, w.logits->data());
  return {w.logits->data(), static_cast<std::size_t>(rows * c.vocab_size)};
}

}  // namespace saker
