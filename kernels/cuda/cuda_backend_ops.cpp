// The backend calls that launch kernels: linear layers (GEMV or cuBLASLt), the elementwise and
// normalization kernels, and rotary, KV-cache writes and attention on staged places.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace saker::cuda {

void CudaBackend::linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                         float* y) {
  linear_impl(x, n, w, bias, false, nullptr, nullptr, y);
}

void CudaBackend::linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                              float* y) {
  linear_impl(x, n, w, bias, true, nullptr, nullptr, y);
}

void CudaBackend::linear_add(const float* x, std::int64_t n, const Weight& w, const float* bias,
                             const float* add, float* y, float* residual) {
  if (!impl_->fused(n)) return Backend::linear_add(x, n, w, bias, add, y, residual);
  linear_impl(x, n, w, bias, false, add, residual, y);
}

void CudaBackend::linear_impl(const float* x, std::int64_t n, const Weight& w, const float* bias,
                              bool gelu, const float* add, float* residual, float* y) {
  if (n <= 0 || w.rows == 0) return;
  Impl& m = *impl_;
  cudaStream_t s = m.stream.get();
  m.record(1, x, n, static_cast<int>(w.dtype), w.data, w.rows, w.cols, bias, gelu, add, residual,
           y);
  // GEMV for a few tokens; also, a chunk of tokens at a time, for shapes cuBLASLt cannot take.
  auto gemv_chunks = [&] {
    for (std::int64_t t = 0; t < n; t += kGemvMaxTokens) {
      const std::int64_t o = t * w.rows;
      launch_gemv(x + t * w.cols, std::min(kGemvMaxTokens, n - t), w, bias, gelu,
                  add ? add + o : nullptr, residual ? residual + o : nullptr, y + o,
                  m.options.gemv_threads, m.next_kernel(n));
    }
  };
  if (n <= kGemvMaxTokens) {
    if (m.launching()) gemv_chunks();
    return;
  }

  // cuBLASLt: fp32 weights take the fp32 activations; half-precision weights take them rounded
  // to the weights' type, as hi (+ lo) stacked into one [parts * n, K] operand.
  const std::int64_t K = w.cols, N = w.rows;
  const int parts = w.dtype != DType::F32 && m.options.split_activations ? 2 : 1;
  const std::size_t half_bytes = static_cast<std::size_t>(n * K) * 2;
  if (w.dtype != DType::F32) m.ensure_scratch(m.act_parts, parts * half_bytes);
  if (parts > 1)
    m.ensure_scratch(m.gemm_out, static_cast<std::size_t>(parts * n * N) * sizeof(float));
  m.record(m.act_parts.get(), m.gemm_out.get(), parts);
  if (!m.launching()) return;
  const void* b = x;
  if (w.dtype != DType::F32) {
    auto* hi = static_cast<std::byte*>(m.act_parts.get());
    launch_split_activations(x, n * K, w.dtype, hi, parts == 2 ? hi + half_bytes : nullptr, s);
    b = hi;
  }
  float* d = parts > 1 ? m.gemm_out.as<float>() : y;
  m.after_kernel = false;  // a library's kernels (or the activations' split) come next
  if (!m.gemm.run(w.dtype, w.data, b, d, N, parts * n, K, s)) return gemv_chunks();
  if (parts > 1 || bias || gelu) launch_bias_act(d, parts, n, N, bias, gelu, y, s);
  if (add) launch_add(add, n * N, y, s);
  if (residual) launch_add(y, n * N, residual, s);
}

void CudaBackend::embedding(std::span<const std::int32_t> ids, const Weight& table,
                            std::int64_t first_id, float* y) {
  if (ids.empty()) return;
  Impl& m = *impl_;
  const auto* d = reinterpret_cast<const std::int32_t*>(m.stage(ids.data(), ids.size_bytes()));
  const auto n = static_cast<std::int64_t>(ids.size());
  m.record(2, n, static_cast<int>(table.dtype), table.data, table.rows, table.cols, first_id, y);
  if (m.launching()) launch_embedding(d, n, table, first_id, y, m.next_kernel(n));
}

void CudaBackend::layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                             const float* beta, float eps, float* y) {
  Impl& m = *impl_;
  m.record(3, x, n, dim, gamma, beta, eps, y);
  if (m.launching())
    launch_layer_norm(x, nullptr, nullptr, n, dim, gamma, beta, eps, y, m.next_kernel(n));
}

void CudaBackend::add_layer_norm(const float* a, std::int64_t n, std::int64_t dim, float* x,
                                 const float* gamma, const float* beta, float eps, float* y) {
  Impl& m = *impl_;
  m.record(4, a, n, dim, x, gamma, beta, eps, y);
  if (m.launching()) launch_layer_norm(x, a, x, n, dim, gamma, beta, eps, y, m.next_kernel(n));
}

void CudaBackend::gelu(float* x, std::int64_t count) {
  Impl& m = *impl_;
  m.record(5, x, count);
  if (m.launching()) launch_gelu(x, count, m.stream.get());
}

void CudaBackend::add(const float* x, std::int64_t count, float* y) {
  Impl& m = *impl_;
  m.record(6, x, count, y);
  if (m.launching()) launch_add(x, count, y, m.next_kernel(0));
}

void CudaBackend::gather_rows(const float* src, std::span<const std::int64_t> rows,
                              std::int64_t dim, float* dst) {
  if (rows.empty()) return;
  Impl& m = *impl_;
  const auto* d = reinterpret_cast<const std::int64_t*>(m.stage(rows.data(), rows.size_bytes()));
  const auto n = static_cast<std::int64_t>(rows.size());
  m.record(7, src, n, dim, dst);
  if (m.launching()) launch_gather_rows(src, d, n, dim, dst, m.next_kernel(n));
}

void CudaBackend::logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                                LogitSummary* out) {
  Impl& m = *impl_;
  m.record(11, logits, rows, vocab, out);
  if (m.launching()) launch_logit_summary(logits, rows, vocab, out, m.next_kernel(rows));
}

namespace {
// The parts of staged places a kernel's launch depends on (not max_keys: see attention).
template <typename Impl>
void record_places(Impl& m, const DevicePlaces& p, const AttentionShape& s) {
  m.record(p.pos, p.table_off, p.tables, p.tiles, p.n, p.num_tiles, s.heads, s.kv_heads, s.head_dim,
           s.alibi_slopes);
}
}  // namespace

void CudaBackend::rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                         const float* cos_sin) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, 0, attention_tokens_per_tile(s));
  m.record(8, qkv, cos_sin);
  record_places(m, p, s);
  if (m.launching()) launch_rotary(qkv, p, s, cos_sin, m.next_kernel(p.n));
}

namespace {
// What of a KvLayer a step's graph depends on besides its places.
template <typename Impl>
void record_kv(Impl& m, const KvLayer& kv) {
  m.record(kv.k, kv.v, kv.k_scale, kv.v_scale, static_cast<int>(kv.dtype), kv.kv_heads, kv.head_dim,
           kv.block_size);
}
}  // namespace

void CudaBackend::rotary_kv_write(float* qkv, std::span<const TokenPlace> places,
                                  const AttentionShape& s, const float* cos_sin,
                                  const KvLayer& kv) {
  Impl& m = *impl_;
  // An 8-bit vector's scale needs the whole rotated key first: rotary, then kv_write.
  if (!m.fused(static_cast<std::int64_t>(places.size())) || !cos_sin ||
      kv_dtype_has_scales(kv.dtype))
    return Backend::rotary_kv_write(qkv, places, s, cos_sin, kv);
  if (places.empty()) return;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  m.record(12, qkv, cos_sin);
  record_kv(m, kv);
  record_places(m, p, s);
  if (m.launching()) launch_rotary_kv_write(qkv, p, s, cos_sin, kv, m.next_kernel(p.n));
}

void CudaBackend::kv_write(const float* qkv, std::span<const TokenPlace> places,
                           const AttentionShape& s, const KvLayer& kv) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  m.record(9, qkv);
  record_kv(m, kv);
  record_places(m, p, s);
  if (m.launching()) launch_kv_write(qkv, p, s, kv, m.next_kernel(p.n));
}

void CudaBackend::attention(const float* qkv, std::span<const TokenPlace> places,
                            const AttentionShape& s, const KvLayer& kv, float* out) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  const int splits = attention_splits(p, s, m.sms);
  m.ensure_scratch(m.attn_scratch, attention_scratch_floats(p.n, s, splits) * sizeof(float));
  m.record(10, qkv, out, splits, attention_key_bound(p), m.attn_scratch.get());
  record_kv(m, kv);
  record_places(m, p, s);
  if (m.launching())
    launch_attention(qkv, p, s, kv, splits, m.attn_scratch.as<float>(), out, m.next_kernel(p.n));
}

}  // namespace saker::cuda
