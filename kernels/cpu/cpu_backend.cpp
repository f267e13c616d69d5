#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/ops.h"

namespace saker {
namespace {

// Host memory (cpu/host_memory.h), zero-initialised. The KV cache layers are on 2 MiB pages:
// attention reads a few hundred bytes of a head's keys and values from each of many 4 KiB pages,
// a TLB miss each (decode attention ran 6% faster on Zen 4).
class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(std::size_t floats)
      : data_(cpu::allocate_host_memory(floats * sizeof(float))), size_(floats) {
    std::fill_n(data(), floats, 0.0f);
  }
  float* data() override { return reinterpret_cast<float*>(data_.get()); }
  std::size_t size() const override { return size_; }

 private:
  cpu::HostMemory data_;
  std::size_t size_;
};

constexpr std::int64_t kElementGrain = 4096;  // below this, threads cost more than they save

}  // namespace

CpuBackend::CpuBackend(unsigned threads, std::int64_t max_context, std::int64_t min_work)
    : pool_(threads),
      isa_(cpu::detect_isa()),
      prefetch_(!cpu::huge_pages_available()),
      max_context_(max_context),
      min_work_(std::max<std::int64_t>(1, min_work)) {
  scores_.assign(
      pool_.size(),
      std::vector<float>(static_cast<std::size_t>(cpu::attention_scratch_floats(max_context))));
}

std::unique_ptr<Buffer> CpuBackend::allocate(std::size_t floats) {
  return std::make_unique<HostBuffer>(floats);
}

std::unique_ptr<Buffer> CpuBackend::upload(std::span<const float> host) {
  auto buf = std::make_unique<HostBuffer>(host.size());
  std::copy(host.begin(), host.end(), buf->data());
  return buf;
}

Weight CpuBackend::upload_weight(const Weight& host, WeightQuant quant) {
  if (host.layout != WeightLayout::kRowMajor)
    throw std::logic_error("upload_weight takes a row-major weight");
  const DType dtype = quant == WeightQuant::kInt8  ? DType::I8
                      : quant == WeightQuant::kFp8 ? DType::F8E4M3
                                                   : host.dtype;
  const bool scaled = dtype == DType::I8 || dtype == DType::F8E4M3;
  const std::int64_t panels = cpu::panel_count(host.rows);
  const std::size_t data_bytes = (cpu::packed_bytes(dtype, host.rows, host.cols) + 63) / 64 * 64;
  const std::size_t bytes =
      data_bytes + (scaled ? static_cast<std::size_t>(panels * cpu::kPanelRows) * 4 : 0);
  // Weights are streamed whole every step: on 2 MiB pages where the system allows.
  cpu::HostMemory mem = cpu::allocate_host_memory(bytes);
  std::byte* raw = mem.get();
  float* scales = scaled ? reinterpret_cast<float*>(raw + data_bytes) : nullptr;
  // The threads share the packing (one memory node here; first touch decides nothing).
  const Weight shape{dtype, raw, host.rows, host.cols, WeightLayout::kPanels16, scales};
  for_weight_slices(1, shape, [&](std::int64_t b, std::int64_t e) {
    cpu::pack_panels(host, dtype, raw, scales, b, e);
  });
  weights_.push_back({std::move(mem), bytes});
  return shape;
}

std::size_t CpuBackend::read_weights() {
  std::vector<std::span<const float>> buffers;
  std::size_t total = 0;
  for (const PackedWeight& w : weights_) {
    buffers.emplace_back(reinterpret_cast<const float*>(w.memory.get()), w.bytes / sizeof(float));
    total += buffers.back().size_bytes();
  }
  volatile float keep = cpu::read_pass(pool_, buffers);
  (void)keep;
  return total;
}

void CpuBackend::for_weight_slices(std::int64_t n, const Weight& w,
                                   FunctionRef<void(std::int64_t, std::int64_t)> fn) {
  // Split output rows, so each weight is streamed once in all. Chunks of fewer than min_work_
  // multiply-adds cost more to hand out than to compute.
  const bool packed = w.layout == WeightLayout::kPanels16;
  const std::int64_t units = packed ? cpu::group_count(w.rows) : w.rows;
  const std::int64_t per_unit =
      std::max<std::int64_t>(1, w.cols * n * (packed ? cpu::kGroupRows : 1));
  const std::int64_t grain = std::max<std::int64_t>(1, min_work_ / per_unit);
  const std::int64_t threads = pool_.size();
  if (threads == 1 || units <= grain) {
    fn(0, units);
    return;
  }
  // Threads take chunks from a shared counter rather than one fixed share: a thread that starts
  // late or is slowed by its neighbours on the memory bus then takes less. Each chunk is half of
  // an even share of what is left (guided scheduling), so the first are large and the last are
  // single groups, and no thread waits long for another at the end. More than 4 tokens copy
  // their inputs once per call (cpu/linear.h), so their chunks stay at a quarter of a share or
  // more. Which thread computes a row changes none of its bits.
  const std::int64_t smallest =
      n > 4 ? std::max(grain, (units + 4 * threads - 1) / (4 * threads)) : grain;
  std::atomic<std::int64_t> next{0};
  pool_.parallel_for(std::min(threads, (units + grain - 1) / grain),
                     [&](std::int64_t, std::int64_t, unsigned) {
                       std::int64_t b = next.load(std::memory_order_relaxed);
                       while (b < units) {
                         const std::int64_t size = std::max(smallest, (units - b) / (2 * threads));
                         const std::int64_t e = std::min(units, b + size);
                         if (!next.compare_exchange_weak(b, e, std::memory_order_relaxed)) continue;
                         fn(b, e);
                         b = next.load(std::memory_order_relaxed);
                       }
                     });
}

void CpuBackend::linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y) {
  if (n <= 0) return;
  for_weight_slices(n, w, [&](std::int64_t b, std::int64_t e) {
    if (w.layout == WeightLayout::kPanels16)
      cpu::linear_panels(isa_, x, n, w, bias, y, b, e, prefetch_);
    else
      cpu::linear_rows_scalar(x, n, w, bias, y, b, e);
  });
}

void CpuBackend::linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                             float* y) {
  if (n <= 0) return;
  // GELU runs on each slice while it is still in cache, in the same parallel loop.
  for_weight_slices(n, w, [&](std::int64_t b, std::int64_t e) {
    std::int64_t r0 = b, r1 = e;
    if (w.layout == WeightLayout::kPanels16) {
      cpu::linear_panels(isa_, x, n, w, bias, y, b, e, prefetch_);
      r0 = b * cpu::kGroupRows;
      r1 = std::min(w.rows, e * cpu::kGroupRows);
    } else {
      cpu::linear_rows_scalar(x, n, w, bias, y, b, e);
    }
    for (std::int64_t t = 0; t < n; ++t) cpu::gelu_range(y + t * w.rows, r0, r1, isa_);
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
    cpu::gelu_range(x, b, e, isa_);
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
  // An item is some query heads of one KV group for one token, which read the group's keys and
  // values once. Few tokens: smaller items keep every thread busy (a head's result is the same
  // whichever item computes it).
  const cpu::QkvLayout L(s);
  const auto tokens = static_cast<std::int64_t>(places.size());
  const auto splits_for = [&](std::int64_t heads) { return (L.group_size + heads - 1) / heads; };
  std::int64_t heads = std::min(L.group_size, cpu::kAttentionMaxHeads);
  while (heads > 1 && tokens * s.kv_heads * splits_for(heads) < pool_.size())
    heads = (heads + 1) / 2;
  const std::int64_t splits = splits_for(heads);
  const std::int64_t items = tokens * s.kv_heads * splits;
  // Work per item grows with the context; hand out whole items only when there is enough.
  const std::int64_t per_item =
      (static_cast<std::int64_t>(places.back().pos) + 1) * s.head_dim * 2 * heads;
  const std::int64_t grain = std::max<std::int64_t>(1, min_work_ / per_item);
  pool_.parallel_for_grain(items, grain, [&](std::int64_t b, std::int64_t e, unsigned worker) {
    float* scratch = scores_[worker].data();
    for (std::int64_t i = b; i < e; ++i) {
      const std::int64_t t = i / (s.kv_heads * splits), g = i / splits % s.kv_heads;
      const std::int64_t h0 = g * L.group_size + i % splits * heads;
      const std::int64_t h1 = std::min(h0 + heads, (g + 1) * L.group_size);
      cpu::attention_heads(isa_, qkv, places, s, kv, t, h0, h1, scratch, out);
    }
  });
}

}  // namespace saker
