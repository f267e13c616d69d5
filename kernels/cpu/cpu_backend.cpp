#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/linear_amx.h"
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

CpuBackend::CpuBackend(unsigned threads, std::int64_t max_context, std::int64_t min_work,
                       bool bf16_dot)
    : pool_(threads),
      isa_(cpu::detect_isa()),
      prefetch_(!cpu::huge_pages_available()),
      max_context_(max_context),
      min_work_(std::max<std::int64_t>(1, min_work)),
      bf16_dot_(bf16_dot),
      amx_(cpu::amx_available()) {
  scores_.assign(
      pool_.size(),
      std::vector<float>(static_cast<std::size_t>(cpu::attention_scratch_floats(max_context))));
}

// Adds the wall-clock time of its scope to one entry of timed_.
class CpuBackend::OpTimer {
 public:
  explicit OpTimer(Timed& t) : t_(t), start_(std::chrono::steady_clock::now()) {}
  ~OpTimer() {
    t_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ++t_.calls;
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  Timed& t_;
  std::chrono::steady_clock::time_point start_;
};

CpuBackend::Timed& CpuBackend::timed(const char* name, std::int64_t rows, std::int64_t cols) {
  for (Timed& t : timed_)
    if (t.rows == rows && t.cols == cols && t.name == name) return t;
  timed_.push_back({name, rows, cols});
  return timed_.back();
}

std::vector<OpTime> CpuBackend::op_times() const {
  std::vector<OpTime> out;
  for (const Timed& t : timed_)
    out.push_back(
        {t.rows < 0 ? t.name : t.name + " " + std::to_string(t.rows) + "x" + std::to_string(t.cols),
         t.seconds, t.calls});
  return out;
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
  const bool quads = quant == WeightQuant::kW8A8;
  const DType dtype = quant == WeightQuant::kInt8 || quads ? DType::I8
                      : quant == WeightQuant::kFp8         ? DType::F8E4M3
                                                           : host.dtype;
  const bool scaled = dtype == DType::I8 || dtype == DType::F8E4M3;
  const bool pairs = bf16_dot_ && dtype == DType::BF16;
  const std::int64_t panels = cpu::panel_count(host.rows);
  const std::int64_t cols = pairs   ? 2 * cpu::pair_count(host.cols)
                            : quads ? 4 * cpu::quad_count(host.cols)
                                    : host.cols;
  const std::size_t data_bytes = (cpu::packed_bytes(dtype, host.rows, cols) + 63) / 64 * 64;
  // Scales, and for w8a8 each row's sum of codes after them.
  const std::size_t bytes =
      data_bytes +
      (scaled ? static_cast<std::size_t>(panels * cpu::kPanelRows) * 4 : 0) * (quads ? 2 : 1);
  // Weights are streamed whole every step: on 2 MiB pages where the system allows.
  cpu::HostMemory mem = cpu::allocate_host_memory(bytes);
  std::byte* raw = mem.get();
  float* scales = scaled ? reinterpret_cast<float*>(raw + data_bytes) : nullptr;
  // The threads share the packing (one memory node here; first touch decides nothing).
  const WeightLayout layout = pairs   ? WeightLayout::kPanels16Pairs
                              : quads ? WeightLayout::kPanels16Quads
                                      : WeightLayout::kPanels16;
  const Weight shape{dtype, raw, host.rows, host.cols, layout, scales};
  if (pairs || quads) dot_ = pairs ? "bf16" : "int8";
  auto* row_sums =
      quads ? reinterpret_cast<std::int32_t*>(scales + panels * cpu::kPanelRows) : nullptr;
  for_weight_slices(1, shape, [&](std::int64_t b, std::int64_t e) {
    if (pairs)
      cpu::pack_bf16_pairs(host, raw, b, e);
    else if (quads)
      cpu::pack_int8_quads(host, raw, scales, row_sums, b, e);
    else
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
  const bool packed = w.layout != WeightLayout::kRowMajor;
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

const float* CpuBackend::kernel_input(const float* x, std::int64_t n, const Weight& w) {
  const bool pairs = w.layout == WeightLayout::kPanels16Pairs;
  if (!pairs && w.layout != WeightLayout::kPanels16Quads) return x;
  // Rounded or quantized once per call, by this thread, for every thread's slice.
  const auto floats =
      static_cast<std::size_t>(n * (pairs ? cpu::pair_count(w.cols) : cpu::quad_count(w.cols)));
  if (x_units_.size() < floats) x_units_.resize(floats);
  if (pairs) {
    cpu::to_bf16_pairs(x, n, w.cols, x_units_.data());
  } else {
    if (x_scales_.size() < static_cast<std::size_t>(n))
      x_scales_.resize(static_cast<std::size_t>(n));
    cpu::to_int8_quads(x, n, w.cols, x_units_.data(), x_scales_.data());
  }
  return x_units_.data();
}

const float* CpuBackend::packed_input(const float* in, std::int64_t n, const Weight& w) {
  const std::int64_t blocks =
      w.layout == WeightLayout::kRowMajor || use_amx(n, w) ? 0 : cpu::input_blocks(isa_, w, n);
  if (blocks == 0) return nullptr;
  const std::int64_t units = w.layout == WeightLayout::kPanels16Pairs   ? cpu::pair_count(w.cols)
                             : w.layout == WeightLayout::kPanels16Quads ? cpu::quad_count(w.cols)
                                                                        : w.cols;
  const auto floats = static_cast<std::size_t>(n * units);
  if (x_packed_.size() < floats) x_packed_.resize(floats);
  // Copied once for every thread's slice; the threads share the copying by k blocks.
  pool_.parallel_for_grain(
      blocks,
      std::max<std::int64_t>(1, kElementGrain / std::max<std::int64_t>(1, n * units / blocks)),
      [&](std::int64_t b, std::int64_t e, unsigned) {
        cpu::pack_inputs(isa_, w, in, n, x_packed_.data(), b, e);
      });
  return x_packed_.data();
}

void CpuBackend::linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y) {
  if (n <= 0) return;
  const OpTimer timer(timed("linear", w.rows, w.cols));
  const float* in = kernel_input(x, n, w);
  const float* packed = packed_input(in, n, w);
  for_weight_slices(n, w, [&](std::int64_t b, std::int64_t e) {
    if (use_amx(n, w))
      cpu::linear_pairs_amx(in, n, w, bias, y, b, e);
    else if (w.layout != WeightLayout::kRowMajor)
      cpu::linear_panels(isa_, in, n, w, bias, y, b, e, prefetch_,
                         w.layout == WeightLayout::kPanels16Quads ? x_scales_.data() : nullptr,
                         packed);
    else
      cpu::linear_rows_scalar(x, n, w, bias, y, b, e);
  });
}

void CpuBackend::linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                             float* y) {
  if (n <= 0) return;
  const OpTimer timer(timed("linear+gelu", w.rows, w.cols));
  // GELU runs on each slice while it is still in cache, in the same parallel loop.
  const float* in = kernel_input(x, n, w);
  const float* packed = packed_input(in, n, w);
  for_weight_slices(n, w, [&](std::int64_t b, std::int64_t e) {
    std::int64_t r0 = b, r1 = e;
    if (w.layout != WeightLayout::kRowMajor) {
      if (use_amx(n, w))
        cpu::linear_pairs_amx(in, n, w, bias, y, b, e);
      else
        cpu::linear_panels(isa_, in, n, w, bias, y, b, e, prefetch_,
                           w.layout == WeightLayout::kPanels16Quads ? x_scales_.data() : nullptr,
                           packed);
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
  const OpTimer timer(timed("embedding"));
  cpu::embedding_rows(ids, table, first_id, y, 0, static_cast<std::int64_t>(ids.size()));
}

void CpuBackend::layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                            const float* beta, float eps, float* y) {
  const OpTimer timer(timed("layer norm"));
  pool_.parallel_for_grain(n, std::max<std::int64_t>(1, kElementGrain / dim),
                           [&](std::int64_t b, std::int64_t e, unsigned) {
                             cpu::layer_norm_rows(x, dim, gamma, beta, eps, y, b, e);
                           });
}

void CpuBackend::gelu(float* x, std::int64_t count) {
  const OpTimer timer(timed("gelu"));
  pool_.parallel_for_grain(count, kElementGrain, [&](std::int64_t b, std::int64_t e, unsigned) {
    cpu::gelu_range(x, b, e, isa_);
  });
}

void CpuBackend::add(const float* x, std::int64_t count, float* y) {
  const OpTimer timer(timed("add"));
  for (std::int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void CpuBackend::gather_rows(const float* src, std::span<const std::int64_t> rows, std::int64_t dim,
                             float* dst) {
  const OpTimer timer(timed("gather rows"));
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy_n(src + rows[i] * dim, dim, dst + static_cast<std::int64_t>(i) * dim);
}

void CpuBackend::rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                        const float* cos_sin) {
  const OpTimer timer(timed("rotary"));
  cpu::rotary_rows(qkv, places, s, cos_sin, 0, static_cast<std::int64_t>(places.size()));
}

void CpuBackend::kv_write(const float* qkv, std::span<const TokenPlace> places,
                          const AttentionShape& s, const KvLayer& kv) {
  const OpTimer timer(timed("kv write"));
  cpu::kv_write_rows(qkv, places, s, kv, 0, static_cast<std::int64_t>(places.size()));
}

void CpuBackend::attention(const float* qkv, std::span<const TokenPlace> places,
                           const AttentionShape& s, const KvLayer& kv, float* out) {
  const OpTimer timer(timed("attention"));
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

void CpuBackend::logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                               LogitSummary* out) {
  const OpTimer timer(timed("logit summary"));
  Backend::logit_summary(logits, rows, vocab, out);
}

}  // namespace saker
