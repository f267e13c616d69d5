// The operations the model is written against. The CPU backend (kernels/cpu) implements them and
// is the reference; the CUDA backend implements the same interface. Pointers to activations
// belong to the backend's memory (host memory for the CPU backend).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/logit_summary.h"

namespace saker {

// How a weight's elements are laid out in memory.
enum class WeightLayout : std::uint8_t {
  kRowMajor,  // [rows, cols], as a checkpoint stores it
  kPanels16,  // the CPU backend's packed form: panels of 16 rows, each [cols][16] (cpu/linear.h)
  kPanels16Pairs,  // the same for bf16 dot products: each [cols / 2][16][2] (cpu/linear.h)
  kPanels16Quads,  // the same for int8 dot products (w8a8): each [cols / 4][16][4] (cpu/linear.h)
};

// What a backend should make of a checkpoint weight.
enum class WeightQuant : std::uint8_t {
  kNone,  // keep the stored precision
  kInt8,  // weight-only int8, one scale per output row (`--dtype int8`)
  kFp8,   // weight-only fp8 e4m3, one scale per output row (`--dtype fp8`)
  // int8 weights as kInt8, and activations quantized to int8 per token at every linear layer:
  // integer dot products (`--dtype w8a8`, CPU backend)
  kW8A8,
};

// A [rows, cols] matrix (e.g. a Linear weight [out, in]) in its stored precision, or in a form a
// backend's upload_weight made of it (only that backend reads such a form).
struct Weight {
  DType dtype = DType::F32;
  const void* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRowMajor;
  const float* scales = nullptr;  // [rows] for I8 and F8E4M3: row r's value is scales[r] * q[r, k]
};

// Bytes a step reads to stream the whole weight once.
inline std::size_t weight_bytes(const Weight& w) {
  return static_cast<std::size_t>(w.rows * w.cols) * dtype_size(w.dtype) +
         (w.scales ? static_cast<std::size_t>(w.rows) * sizeof(float) : 0);
}

// One layer's KV storage: [slots][kv_heads][head_dim] elements of `dtype` for K and for V, where
// slot = block_table[pos / block_size] * block_size + pos % block_size. dtype is F32, BF16 or F16:
// kv_write rounds fp32 keys and values to it (nearest even), attention widens them back exactly.
// dtype I8 or F8E4M3 (kv_dtype_has_scales): each head vector of each slot also has an fp32 scale
// in k_scale / v_scale [slots][kv_heads]; kv_write quantizes with scale = max|x| / kv_code_max,
// attention reads element i as widen(code_i) * scale (docs/numerics.md, "KV cache dtype").
struct KvLayer {
  void* k = nullptr;
  void* v = nullptr;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t block_size = 0;
  DType dtype = DType::F32;
  float* k_scale = nullptr;
  float* v_scale = nullptr;
};

// Where each token of a step sits: its absolute position and its sequence's block table.
struct TokenPlace {
  std::int32_t pos = 0;
  const std::int32_t* block_table = nullptr;
};

// Fused query_key_value rows hold kv groups, each [group_size query heads, 1 key, 1 value]
// (docs/falcon.md section 3); this covers multi-query, grouped and per-head (rw) layouts alike.
struct AttentionShape {
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  const float* alibi_slopes = nullptr;  // [heads], bf16-rounded; null for rotary models
};

// Wall-clock time a backend spent in one kind of operation (`saker bench`'s per-stage profile).
struct OpTime {
  std::string name;  // e.g. "attention", "linear 65024x2048" (rows x cols)
  double seconds = 0;
  std::uint64_t calls = 0;
};

class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual float* data() = 0;
  virtual std::size_t size() const = 0;  // in floats
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::unique_ptr<Buffer> allocate(std::size_t floats) = 0;
  // Whether kv_write and attention take a KvLayer of this element type (every backend: F32).
  virtual bool supports_kv_dtype(DType dtype) const { return dtype == DType::F32; }
  // A copy of host data in backend memory (small fp32 tensors: norms, biases, tables).
  virtual std::unique_ptr<Buffer> upload(std::span<const float> host) = 0;
  // Makes a row-major, stored-precision weight usable by linear and embedding, quantized as
  // asked: the CPU backend packs it into its own memory, a device backend copies it once. The
  // host copy may be released afterwards. Throws if the backend cannot quantize as asked.
  virtual Weight upload_weight(const Weight& host, WeightQuant quant) = 0;

  // y[t, r] = sum_k x[t, k] * w[r, k] (+ bias[r]); x [n, w.cols], y [n, w.rows].
  // Each output is computed the same way whatever n is (batch invariance).
  virtual void linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                      float* y) = 0;
  // y[t] = row ids[t] - first_id of `table` as fp32, or zeros when the id is outside
  // [first_id, first_id + table.rows) (a vocabulary-parallel shard holds only some rows).
  virtual void embedding(std::span<const std::int32_t> ids, const Weight& table,
                         std::int64_t first_id, float* y) = 0;
  // y = (x - mean) / sqrt(var + eps) * gamma + beta over rows of `dim`.
  virtual void layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                          const float* beta, float eps, float* y) = 0;
  // x = gelu(x) (exact erf form), in place.
  virtual void gelu(float* x, std::int64_t count) = 0;
  // dst[i] = src[rows[i]] for rows of `dim` floats.
  virtual void gather_rows(const float* src, std::span<const std::int64_t> rows, std::int64_t dim,
                           float* dst) = 0;
  // y += x.
  virtual void add(const float* x, std::int64_t count, float* y) = 0;
  // Rotates the query and key heads of the fused qkv rows [n, qkv_stride] in place.
  // cos_sin: [positions][head_dim / 2] pairs (cos, sin).
  virtual void rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                      const float* cos_sin) = 0;
  // Copies each token's keys and values from qkv into its KV slot.
  virtual void kv_write(const float* qkv, std::span<const TokenPlace> places,
                        const AttentionShape& s, const KvLayer& kv) = 0;
  // Causal attention: token t attends to positions 0..places[t].pos of its own sequence, read
  // from the KV cache (written first). out [n, heads * head_dim].
  virtual void attention(const float* qkv, std::span<const TokenPlace> places,
                         const AttentionShape& s, const KvLayer& kv, float* out) = 0;

  // --- fused forms: a backend may do these in one pass; the defaults compose the ops above ---

  // linear, then gelu over y.
  virtual void linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                           float* y) {
    linear(x, n, w, bias, y);
    gelu(y, n * w.rows);
  }
  // linear, then y += add (when given: [n, w.rows]), then residual += y (when given): the end of
  // a parallel block, whose last two adds run inside the linear's epilogue on a device.
  virtual void linear_add(const float* x, std::int64_t n, const Weight& w, const float* bias,
                          const float* add, float* y, float* residual) {
    linear(x, n, w, bias, y);
    if (add) this->add(add, n * w.rows, y);
    if (residual) this->add(y, n * w.rows, residual);
  }
  // rotary (unless cos_sin is null: ALiBi), then kv_write.
  virtual void rotary_kv_write(float* qkv, std::span<const TokenPlace> places,
                               const AttentionShape& s, const float* cos_sin, const KvLayer& kv) {
    if (cos_sin) rotary(qkv, places, s, cos_sin);
    kv_write(qkv, places, s, kv);
  }
  // x += a (the residual), then y = layer_norm(x).
  virtual void add_layer_norm(const float* a, std::int64_t n, std::int64_t dim, float* x,
                              const float* gamma, const float* beta, float eps, float* y) {
    add(a, n * dim, x);
    layer_norm(x, n, dim, gamma, beta, eps, y);
  }

  // out[r] = the summary of logits row r of [rows, vocab] (kernels/logit_summary.h); `out` is
  // backend memory of logit_summary_floats(rows) floats. The default runs on the host, so it
  // needs host_accessible memory; a device backend computes it where the logits are.
  virtual void logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                             LogitSummary* out) {
    std::vector<std::int32_t> order;
    for (std::int64_t r = 0; r < rows; ++r)
      summarize_logits({logits + r * vocab, static_cast<std::size_t>(vocab)}, out[r], order);
  }

  // --- memory the host cannot read directly (a device backend) ---

  // True when the host can read backend memory in place (the CPU backend): then download and
  // synchronize are never needed.
  virtual bool host_accessible() const { return true; }
  // Host memory for results read back from the backend (pinned for a device backend, so that
  // downloads run at full speed).
  virtual std::unique_ptr<Buffer> allocate_host(std::size_t floats) { return allocate(floats); }
  // host[0, n) = src[0, n) once every operation issued before has finished.
  virtual void download(const float* src, std::size_t n, float* host) { std::copy_n(src, n, host); }
  // Waits until every operation issued so far has finished.
  virtual void synchronize() {}
  // Bytes of the backend's own memory still free for new allocations (a device's), or nullopt
  // when it allocates from host memory (then the host's available memory is what counts).
  virtual std::optional<std::size_t> free_memory() const { return std::nullopt; }
  // Called at the start of every step: the host spans the kernels are given (ids, places and
  // the block tables they point to) may have changed since the previous step, so a backend that
  // keeps device copies of them must copy them again.
  virtual void begin_step() {}
  // Runs `body`, a step's calls, which are the same calls with the same arguments whenever the
  // step's shapes are (decode-only steps of `key` tokens). A device backend may capture them once
  // and replay them (CUDA graphs); the default just runs them.
  virtual void run_step(std::uint64_t key, const std::function<void()>& body) {
    (void)key;
    body();
  }
  // Time spent in each kind of operation since the backend was made, in the order first used;
  // empty where the backend does not keep it (a device backend's calls only enqueue work).
  virtual std::vector<OpTime> op_times() const { return {}; }
};

}  // namespace saker
