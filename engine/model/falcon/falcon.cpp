#include "engine/model/falcon/falcon.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/model/positions.h"

namespace saker {

struct FalconModel::Workspace {
  std::unique_ptr<Buffer> x, h, h2, qkv, attn, a, m, b, sel, sel_norm, logits, gathered;
  std::unique_ptr<Buffer> host_logits;  // only when the host cannot read backend memory
  std::unique_ptr<Buffer> summaries, host_summaries;  // LogitSummary rows (kSummary steps)
  std::vector<LogitSummary> gathered_summaries;       // tensor parallel: made on the host
  std::vector<std::int32_t> summary_order;
  std::vector<std::int32_t> ids;
  std::vector<TokenPlace> places;
  std::vector<std::int64_t> logit_rows;  // token row of each logit row
  std::vector<std::size_t> gather_counts;
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
      case DType::I8:
        out[i] = static_cast<float>(static_cast<std::int8_t>(p[i]));
        break;
      case DType::F8E4M3:  // a KV cache's form only; no checkpoint stores it
        out[i] = e4m3_to_f32(static_cast<std::uint8_t>(p[i]));
        break;
    }
  }
  return out;
}

std::vector<Range> FalconModel::row_ranges(Split split, std::int64_t rows) const {
  const RankShard& s = *shard_;
  switch (split) {
    case Split::kQkvRows:
      return s.qkv_rows;
    case Split::kFfnRows:
      return {s.ffn};
    case Split::kVocabRows:
      return {s.vocab};
    default:
      return {{0, rows}};
  }
}

Weight FalconModel::bind_weight(const Checkpoint& ck, const std::string& name, Split split,
                                WeightQuant quant) {
  const TensorInfo& t = ck.get(name);
  const std::int64_t rows = t.shape[0], cols = t.shape[1];
  const auto upload = [&](const void* data) {
    try {
      const Weight w = backend_.upload_weight(Weight{t.dtype, data, rows, cols}, quant);
      weight_bytes_ += saker::weight_bytes(w);
      reads_mapping_ = reads_mapping_ || w.data == t.data.data();
      return w;
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error("tensor " + name + ": " + e.what());
    }
  };
  if (!shard_ || split == Split::kWhole) return upload(t.data.data());
  // A shard is read out of the mapping into this rank's own memory: only its bytes are touched,
  // and its rows end up contiguous for the kernels.
  const std::size_t es = dtype_size(t.dtype);
  std::vector<std::byte> buf;
  std::int64_t out_rows = 0, out_cols = cols;
  if (split == Split::kHeadCols || split == Split::kFfnCols) {
    const RankShard& s = *shard_;
    const Range c = split == Split::kFfnCols
                        ? s.ffn
                        : Range{s.heads.begin * config_.head_dim, s.heads.end * config_.head_dim};
    out_rows = rows;
    out_cols = c.size();
    buf.resize(static_cast<std::size_t>(rows * c.size()) * es);
    for (std::int64_t r = 0; r < rows; ++r)
      std::memcpy(buf.data() + static_cast<std::size_t>(r * c.size()) * es,
                  t.data.data() + static_cast<std::size_t>(r * cols + c.begin) * es,
                  static_cast<std::size_t>(c.size()) * es);
  } else {
    for (const Range& r : row_ranges(split, rows)) {
      const std::size_t at = buf.size();
      buf.resize(at + static_cast<std::size_t>(r.size() * cols) * es);
      std::memcpy(buf.data() + at, t.data.data() + static_cast<std::size_t>(r.begin * cols) * es,
                  static_cast<std::size_t>(r.size() * cols) * es);
      out_rows += r.size();
    }
  }
  const Weight w = backend_.upload_weight(Weight{t.dtype, buf.data(), out_rows, out_cols}, quant);
  weight_bytes_ += saker::weight_bytes(w);
  // A backend that copied the slice (every one but a CPU backend reading the mapping) frees it.
  if (w.data == buf.data()) owned_.push_back(std::move(buf));
  return w;
}

FalconModel::Linear FalconModel::bind_linear(const Checkpoint& ck, const std::string& name,
                                             Split split) {
  Linear l;
  l.w = bind_weight(ck, name + ".weight", split, options_.quant);
  if (!config_.bias) return l;
  const TensorInfo& b = ck.get(name + ".bias");
  std::vector<float> full = tensor_to_f32(b);
  if (shard_ && (split == Split::kHeadCols || split == Split::kFfnCols)) {
    // Row-parallel outputs are partial sums: one rank adds the bias before the all-reduce.
    if (!shard_->adds_row_parallel_bias) return l;
  } else if (shard_ && split != Split::kWhole) {
    std::vector<float> part;
    for (const Range& r : row_ranges(split, b.shape[0]))
      part.insert(part.end(), full.begin() + r.begin, full.begin() + r.end);
    full = std::move(part);
  }
  weight_bytes_ += full.size() * dtype_size(b.dtype);
  l.bias = backend_.upload(full);
  return l;
}

FalconModel::Norm FalconModel::bind_norm(const Checkpoint& ck, const std::string& name) {
  const TensorInfo& g = ck.get(name + ".weight");
  const TensorInfo& b = ck.get(name + ".bias");
  weight_bytes_ += g.data.size() + b.data.size();
  return Norm{backend_.upload(tensor_to_f32(g)), backend_.upload(tensor_to_f32(b))};
}

FalconModel::FalconModel(const FalconConfig& config, const Checkpoint& checkpoint, Backend& backend,
                         ModelOptions options, TensorParallel tp)
    : config_(config),
      model_shape_(model_shape(config)),
      options_(options),
      backend_(backend),
      comm_(tp.comm),
      ws_(std::make_unique<Workspace>()) {
  if (tp.shard) shard_ = *tp.shard;
  const FalconConfig& c = config_;
  if (options_.max_context <= 0) options_.max_context = c.max_positions;
  if (options_.max_tokens <= 0 || options_.max_logit_rows <= 0)
    throw std::invalid_argument("max_tokens and max_logit_rows must be positive");
  if (shard_ && !comm_) throw std::invalid_argument("a sharded model needs a communicator");

  // A tied checkpoint may still store lm_head.weight (RW-era files do): use it when present.
  const bool has_lm_head = checkpoint.find("lm_head.weight") != nullptr;
  checkpoint.validate(expected_tensors(c, has_lm_head));

  const RankShard* s = shard_ ? &*shard_ : nullptr;
  attn_ = AttentionShape{s ? s->local_heads() : c.heads, s ? s->local_kv_heads() : c.kv_heads,
                         c.head_dim, nullptr};
  vocab_begin_ = s ? s->vocab.begin : 0;
  bind_weights(checkpoint, has_lm_head);
  // The backend holds its own copies now: the mapping's pages need not stay in this process.
  if (!reads_mapping_) checkpoint.release_resident();
  upload_position_tables();
  allocate_workspace();
}

void FalconModel::bind_weights(const Checkpoint& checkpoint, bool has_lm_head) {
  // A tied table is also the lm_head, streamed every step: it is quantized with the matrices.
  // An untied one is only looked up, a row per token, and keeps its precision.
  const std::size_t before = weight_bytes_;
  embeddings_ = bind_weight(checkpoint, "transformer.word_embeddings.weight", Split::kVocabRows,
                            has_lm_head ? WeightQuant::kNone : options_.quant);
  if (has_lm_head) embedding_only_bytes_ = weight_bytes_ - before;
  lm_head_ = has_lm_head
                 ? bind_weight(checkpoint, "lm_head.weight", Split::kVocabRows, options_.quant)
                 : embeddings_;
  ln_f_ = bind_norm(checkpoint, "transformer.ln_f");
  for (std::int64_t l = 0; l < config_.layers; ++l) layers_.push_back(bind_layer(checkpoint, l));
}

FalconModel::Layer FalconModel::bind_layer(const Checkpoint& checkpoint, std::int64_t l) {
  const std::string p = layer_prefix(l);
  Layer layer;
  switch (config_.block) {
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
  layer.qkv = bind_linear(checkpoint, p + "self_attention.query_key_value", Split::kQkvRows);
  layer.dense = bind_linear(checkpoint, p + "self_attention.dense", Split::kHeadCols);
  layer.fc_in = bind_linear(checkpoint, p + "mlp.dense_h_to_4h", Split::kFfnRows);
  layer.fc_out = bind_linear(checkpoint, p + "mlp.dense_4h_to_h", Split::kFfnCols);
  return layer;
}

// ALiBi slopes of this rank's heads, or the rotary table up to max_context.
void FalconModel::upload_position_tables() {
  const FalconConfig& c = config_;
  if (c.alibi) {
    const std::vector<float> slopes = alibi_slopes(c.heads);
    const std::int64_t h0 = shard_ ? shard_->heads.begin : 0;
    alibi_ = backend_.upload(std::span(slopes).subspan(h0, attn_.heads));
    attn_.alibi_slopes = alibi_->data();
  } else {
    rotary_ = backend_.upload(rotary_table(c.rope_theta, c.head_dim, options_.max_context));
  }
}

// Activations for max_tokens tokens and logits for max_logit_rows rows, sized once.
void FalconModel::allocate_workspace() {
  const FalconConfig& c = config_;
  const RankShard* s = shard_ ? &*shard_ : nullptr;
  const auto T = static_cast<std::size_t>(options_.max_tokens);
  const auto R = static_cast<std::size_t>(options_.max_logit_rows);
  const auto H = static_cast<std::size_t>(c.hidden);
  const auto local_ffn = static_cast<std::size_t>(layers_.front().fc_in.w.rows);
  const auto local_qkv = static_cast<std::size_t>(layers_.front().qkv.w.rows);
  Workspace& w = *ws_;
  w.x = backend_.allocate(T * H);
  w.h = backend_.allocate(T * H);
  w.h2 = backend_.allocate(c.block == BlockKind::kParallelOneNorm ? 0 : T * H);
  w.qkv = backend_.allocate(T * local_qkv);
  w.attn = backend_.allocate(T * static_cast<std::size_t>(attn_.heads * c.head_dim));
  w.a = backend_.allocate(T * H);
  w.m = backend_.allocate(T * local_ffn);
  w.b = backend_.allocate(T * H);
  w.sel = backend_.allocate(R * H);
  w.sel_norm = backend_.allocate(R * H);
  w.logits = backend_.allocate(R * static_cast<std::size_t>(lm_head_.rows));
  const bool root = !s || comm_->rank() == 0;
  w.gathered = backend_.allocate(s && root ? 2 * R * c.vocab_size : 0);
  if (!backend_.host_accessible())
    w.host_logits = backend_.allocate_host(root ? (s ? 2 : 1) * R * c.vocab_size : 0);
  if (!s) {
    w.summaries = backend_.allocate(root ? logit_summary_floats(options_.max_logit_rows) : 0);
    if (!backend_.host_accessible())
      w.host_summaries = backend_.allocate_host(logit_summary_floats(options_.max_logit_rows));
  } else if (root) {
    w.gathered_summaries.resize(R);
  }
  w.ids.resize(T);
  w.places.resize(T);
  w.logit_rows.resize(R);
  w.gather_counts.resize(s ? static_cast<std::size_t>(comm_->size()) : 0);
}

FalconModel::~FalconModel() = default;

void FalconModel::all_reduce(float* data, std::int64_t count) {
  if (shard_) comm_->all_reduce_sum(data, static_cast<std::size_t>(count));
}

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

  // Attention on ln_attn(x) → a (a partial sum over this rank's heads when sharded).
  norm(L.ln_attn, x, w.h->data());
  backend_.linear(w.h->data(), n, L.qkv.w, bias(L.qkv), w.qkv->data());
  backend_.rotary_kv_write(w.qkv->data(), places, attn_, c.alibi ? nullptr : rotary_->data(), kv);
  backend_.attention(w.qkv->data(), places, attn_, kv, w.attn->data());
  backend_.linear(w.attn->data(), n, L.dense.w, bias(L.dense), w.a->data());

  // MLP input: the same normalised x (one norm), ln_mlp(x), or post_attention_layernorm(x + a).
  const float* mlp_in = w.h->data();
  if (c.block == BlockKind::kParallelTwoNorm) {
    norm(L.ln_mlp, x, w.h2->data());
    mlp_in = w.h2->data();
  } else if (c.block == BlockKind::kSequential) {
    all_reduce(w.a->data(), n * H);
    backend_.add_layer_norm(w.a->data(), n, H, x, L.ln_mlp.gamma->data(), L.ln_mlp.beta->data(),
                            c.layer_norm_eps, w.h->data());
  }
  backend_.linear_gelu(mlp_in, n, L.fc_in.w, bias(L.fc_in), w.m->data());
  // transformers adds mlp + attn first (parallel blocks), then the residual; sharded, the one
  // all-reduce of the layer sums both partial outputs at once, before the residual add.
  const float* attn_out = c.block != BlockKind::kSequential ? w.a->data() : nullptr;
  backend_.linear_add(w.m->data(), n, L.fc_out.w, bias(L.fc_out), attn_out, w.b->data(),
                      shard_ ? nullptr : x);
  if (shard_) {
    all_reduce(w.b->data(), n * H);
    backend_.add(w.b->data(), n * H, x);
  }
}

std::span<const float> FalconModel::gather_logits(std::int64_t rows) {
  Workspace& w = *ws_;
  const std::int64_t V = config_.vocab_size;
  const auto count = static_cast<std::size_t>(rows * V);
  if (!shard_) {
    if (backend_.host_accessible()) return {w.logits->data(), count};
    backend_.download(w.logits->data(), count, w.host_logits->data());
    return {w.host_logits->data(), count};
  }
  Communicator& comm = *comm_;
  const int tp = comm.size();
  for (int r = 0; r < tp; ++r)
    w.gather_counts[r] = static_cast<std::size_t>(rows * even_split(V, tp, r).size());
  const std::span<const float> mine(w.logits->data(),
                                    static_cast<std::size_t>(rows * lm_head_.rows));
  if (comm.rank() != 0) {
    comm.gather(mine, {}, w.gather_counts, 0);
    return {};
  }
  // Rank r's block is [rows][its vocabulary slice]; interleave the slices into [rows][V], on the
  // host (after a download when the backend's memory is a device's).
  float* staged = w.gathered->data();
  comm.gather(mine, {staged, count}, w.gather_counts, 0);
  if (!backend_.host_accessible()) {
    backend_.download(staged, count, w.host_logits->data());
    staged = w.host_logits->data();
  }
  float* out = staged + rows * V;
  const float* block = staged;
  for (int r = 0; r < tp; ++r) {
    const Range vr = even_split(V, tp, r);
    for (std::int64_t i = 0; i < rows; ++i)
      std::copy_n(block + i * vr.size(), vr.size(), out + i * V + vr.begin);
    block += rows * vr.size();
  }
  return {out, count};
}

std::span<const LogitSummary> FalconModel::summarize(std::int64_t rows) {
  Workspace& w = *ws_;
  const std::int64_t V = config_.vocab_size;
  if (shard_) {
    // The full rows are on rank 0's host after the gather: summarise them there.
    const std::span<const float> logits = gather_logits(rows);
    if (logits.empty()) return {};
    for (std::int64_t r = 0; r < rows; ++r)
      summarize_logits(logits.subspan(static_cast<std::size_t>(r * V), static_cast<std::size_t>(V)),
                       w.gathered_summaries[static_cast<std::size_t>(r)], w.summary_order);
    return {w.gathered_summaries.data(), static_cast<std::size_t>(rows)};
  }
  // Buffers are sized in floats; a summary is plain data, so its bytes travel as floats.
  auto* dev = reinterpret_cast<LogitSummary*>(w.summaries->data());
  backend_.logit_summary(w.logits->data(), rows, V, dev);
  if (backend_.host_accessible()) return {dev, static_cast<std::size_t>(rows)};
  backend_.download(w.summaries->data(), logit_summary_floats(rows), w.host_summaries->data());
  return {reinterpret_cast<const LogitSummary*>(w.host_summaries->data()),
          static_cast<std::size_t>(rows)};
}

std::span<const float> FalconModel::forward(std::span<const SequenceStep> batch, KvCache& cache,
                                            LogitsMode mode) {
  summaries_ = {};
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
      if (s.tokens[i] < 0 || s.tokens[i] >= c.vocab_size)
        throw std::out_of_range("token id " + std::to_string(s.tokens[i]) +
                                " is outside the vocabulary [0, " + std::to_string(c.vocab_size) +
                                ")");
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
  backend_.begin_step();

  auto body = [&] {
    // Vocabulary-parallel lookup: each rank fills the rows it holds, the sum completes them.
    backend_.embedding({w.ids.data(), static_cast<std::size_t>(n)}, embeddings_, vocab_begin_,
                       w.x->data());
    all_reduce(w.x->data(), n * c.hidden);
    for (std::int64_t l = 0; l < c.layers; ++l) run_layer(layers_[l], n, cache.layer(l));

    // Final norm and lm_head only on the rows whose logits are wanted.
    const std::int64_t H = c.hidden;
    // Every row, in order (decode): no gather.
    bool all_rows = rows == n;
    for (std::int64_t r = 0; r < rows && all_rows; ++r) all_rows = w.logit_rows[r] == r;
    const float* sel = w.x->data();
    if (!all_rows) {
      backend_.gather_rows(w.x->data(), {w.logit_rows.data(), static_cast<std::size_t>(rows)}, H,
                           w.sel->data());
      sel = w.sel->data();
    }
    backend_.layer_norm(sel, rows, H, ln_f_.gamma->data(), ln_f_.beta->data(), c.layer_norm_eps,
                        w.sel_norm->data());
    backend_.linear(w.sel_norm->data(), rows, lm_head_, nullptr, w.logits->data());
  };
  // A decode-only step (one token per sequence) issues the same calls for the same batch size:
  // a device backend may replay it as a graph. Not with a shard (collectives in the step).
  if (!shard_ && n == static_cast<std::int64_t>(batch.size()))
    backend_.run_step(static_cast<std::uint64_t>(n), body);
  else
    body();
  // The summary kernel runs after the step's graph, so one graph serves both modes.
  if (mode == LogitsMode::kSummary) {
    summaries_ = summarize(rows);
    return {};
  }
  return gather_logits(rows);
}

}  // namespace saker
