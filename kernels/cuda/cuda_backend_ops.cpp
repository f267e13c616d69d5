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
  const int splits = attention_splits(p, s, m.sms, m.options.batch_invariant);
  m.ensure_scratch(m.attn_scratch, attention_scratch_floats(p.n, s, splits) * sizeof(float));
  m.record(10, qkv, out, splits, attention_key_bound(p), m.attn_scratch.get());
  record_kv(m, kv);
  record_places(m, p, s);
  if (m.launching())
    launch_attention(qkv, p, s, kv, splits, m.attn_scratch.as<float>(), out, m.next_kernel(p.n));
}

}  // namespace saker::cuda
