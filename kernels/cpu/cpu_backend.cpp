#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"

namespace saker {
namespace {

// 64-byte aligned host memory, zero-initialised.
class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(std::size_t floats) : size_(floats) {
    const std::size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
    if (!data_) throw std::bad_alloc();
    std::fill_n(data_.get(), floats, 0.0f);
  }
  float* data() override { return data_.get(); }
  std::size_t size() const override { return size_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  std::size_t size_;
};

constexpr std::int64_t kElementGrain = 4096;  // below this, threads cost more than they save
constexpr std::int64_t min_work_ = 1 << 16;   // multiply-adds worth a thread's wake-up

}  // namespace

CpuBackend::CpuBackend(unsigned threads, std::int64_t max_context, std::int64_t min_work)
    : pool_(threads),
      isa_(cpu::detect_isa()),
      max_context_(max_context),
      min_work_(std::max<std::int64_t>(1, min_work)) {
  scores_.assign(pool_.size(), std::vector<float>(static_cast<std::size_t>(max_context)));
}

std::unique_ptr<Buffer> CpuBackend::allocate(std::size_t floats) {
  return std::make_unique<HostBuffer>(floats);
}

std::unique_ptr<Buffer> CpuBackend::upload(std::span<const float> host) {
  auto buf = std::make_unique<HostBuffer>(host.size());
  std::copy(host.begin(), host.end(), buf->data());
  return buf;
}

void CpuBackend::linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y) {
  // Split output rows: each thread streams its own slice of the weights once. Slices of fewer
  // than ~64K multiply-adds cost more to hand out than to compute.
  const std::int64_t grain = std::max<std::int64_t>(
      16, (min_work_ / std::max<std::int64_t>(1, w.cols * n) + 15) / 16 * 16);
  pool_.parallel_for_grain(w.rows, grain, [&](std::int64_t b, std::int64_t e, unsigned) {
    cpu::linear_rows(isa_, x, n, w, bias, y, b, e);
  });
}

void CpuBackend::embedding(std::span<const std::int32_t> ids, const Weight& table,
                           std::int64_t first_id, float* y) {
  cpu::embedding_rows(ids, table, first_id, y, 0, static_cast<std::int64_t>(ids.size()));
}

void CpuBackend::layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                            const float* beta, float eps, float* y) {
  pool_.parallel_for_grain(n, std::max<std::int64_t>(1, kElementGrain / dim),
                           [&](std::int64_t b, std::int64_t e, unsigned) {
                             cpu::layer_norm_rows(x, dim, gamma, beta, eps, y, b, e);
                           });
}

void CpuBackend::gelu(float* x, std::int64_t count) {
  pool_.parallel_for_grain(count, kElementGrain, [&](std::int64_t b, std::int64_t e, unsigned) {
    cpu::gelu_range(x, b, e);
  });
}

void CpuBackend::add(const float* x, std::int64_t count, float* y) {
  for (std::int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void CpuBackend::gather_rows(const float* src, std::span<const std::int64_t> rows, std::int64_t dim,
                             float* dst) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy_n(src + rows[i] * dim, dim, dst + static_cast<std::int64_t>(i) * dim);
}

void CpuBackend::rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                        const float* cos_sin) {
  cpu::rotary_rows(qkv, places, s, cos_sin, 0, static_cast<std::int64_t>(places.size()));
}

void CpuBackend::kv_write(const float* qkv, std::span<const TokenPlace> places,
                          const AttentionShape& s, const KvLayer& kv) {
  cpu::kv_write_rows(qkv, places, s, kv, 0, static_cast<std::int64_t>(places.size()));
}

void CpuBackend::attention(const float* qkv, std::span<const TokenPlace> places,
                           const AttentionShape& s, const KvLayer& kv, float* out) {
  for (const auto& p : places)
    if (p.pos >= max_context_)
      throw std::out_of_range("position " + std::to_string(p.pos) + " is past the context limit " +
                              std::to_string(max_context_));
  if (places.empty()) return;
  const std::int64_t items = static_cast<std::int64_t>(places.size()) * s.heads;
  // Work per item grows with the context; hand out whole items only when there is enough.
  const std::int64_t per_item = (static_cast<std::int64_t>(places.back().pos) + 1) * s.head_dim * 2;
  const std::int64_t grain = std::max<std::int64_t>(1, min_work_ / per_item);
  pool_.parallel_for_grain(items, grain, [&](std::int64_t b, std::int64_t e, unsigned worker) {
    float* scores = scores_[worker].data();
    for (std::int64_t i = b; i < e; ++i)
      cpu::attention_one(qkv, places, s, kv, i / s.heads, i % s.heads, scores, out);
  });
}

}  // namespace saker
