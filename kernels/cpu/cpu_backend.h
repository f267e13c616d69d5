// The CPU backend: the kernels of kernels/cpu spread over a thread pool.
#pragma once

#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/host_memory.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace saker {

class CpuBackend final : public Backend {
 public:
  // threads == 0: one per available processor. max_context bounds attention scratch. A loop is
  // shared among threads only in slices of at least min_work multiply-adds: waking a thread for
  // less costs more than it saves (tests pass 1 to exercise the threads on tiny models).
  // bf16_dot: set_bf16_dot from the start.
  CpuBackend(unsigned threads, std::int64_t max_context, std::int64_t min_work = 1 << 16,
             bool bf16_dot = false);

  ThreadPool& pool() { return pool_; }
  cpu::Isa isa() const { return isa_; }
  void force_isa(cpu::Isa isa) { isa_ = isa; }  // tests compare kernels on one machine
  // bf16 weights uploaded from now on take bf16 dot products (kPanels16Pairs, cpu/linear.h):
  // inputs rounded to bf16, twice the fp32 FMA rate where the CPU has AVX512_BF16.
  void set_bf16_dot(bool on) { bf16_dot_ = on; }
  bool bf16_dot() const { return bf16_dot_; }
  // Off (`--no-batch-invariant`): bf16 dot products of 16 tokens or more take AMX tiles where
  // the CPU has them (cpu/linear_amx.h), whose sums' order is not vdpbf16ps'.
  void set_batch_invariant(bool on) { batch_invariant_ = on; }
  // The dot product the uploaded weights take, if any: "bf16" (kPanels16Pairs), "int8"
  // (kPanels16Quads, w8a8), or "" (fp32 FMAs); the last upload of either kind decides.
  const char* dot_product() const { return dot_; }
  // Reads every uploaded weight once with a plain vector read (cpu/membw.h read_pass), on the
  // same pages and threads a decode step streams them with; returns the bytes read.
  std::size_t read_weights();

  std::unique_ptr<Buffer> allocate(std::size_t floats) override;
  // fp32, and bf16 / fp16 rounded by kv_write and widened exactly by attention.
  bool supports_kv_dtype(DType dtype) const override { return is_kv_dtype(dtype); }
  std::unique_ptr<Buffer> upload(std::span<const float> host) override;
  // Packs the weight into panels (cpu/linear.h) in memory of its own, on huge pages where the
  // system allows, quantizing to int8 if asked.
  Weight upload_weight(const Weight& host, WeightQuant quant) override;
  void linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
              float* y) override;
  void linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y) override;
  void embedding(std::span<const std::int32_t> ids, const Weight& table, std::int64_t first_id,
                 float* y) override;
  void layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                  const float* beta, float eps, float* y) override;
  void gelu(float* x, std::int64_t count) override;
  void add(const float* x, std::int64_t count, float* y) override;
  void gather_rows(const float* src, std::span<const std::int64_t> rows, std::int64_t dim,
                   float* dst) override;
  void rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
              const float* cos_sin) override;
  void kv_write(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                const KvLayer& kv) override;
  void attention(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                 const KvLayer& kv, float* out) override;
  void logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                     LogitSummary* out) override;
  std::vector<OpTime> op_times() const override;

 private:
  ThreadPool pool_;
  cpu::Isa isa_;
  bool prefetch_;  // weights on 4 KiB pages get software prefetches (cpu/linear.h)
  // A kPanels16Pairs / Quads call's inputs as bf16 pairs or int8 quads, and the quads' per-token
  // scales (both grow only).
  std::vector<float> x_units_, x_scales_;
  std::vector<float> x_packed_;  // a call's inputs k-major for its threads (cpu::pack_inputs)
  const float* packed_input(const float* in, std::int64_t n, const Weight& w);
  // The input a packed weight's kernels read: x itself, its bf16 pairs or its int8 quads.
  const float* kernel_input(const float* x, std::int64_t n, const Weight& w);
  std::int64_t max_context_;
  std::int64_t min_work_;
  bool bf16_dot_;
  bool batch_invariant_ = true;
  bool amx_;  // cpu::amx_available()
  // Whether a call of n tokens on w takes the AMX tiles.
  bool use_amx(std::int64_t n, const Weight& w) const {
    return amx_ && !batch_invariant_ && n >= 16 && w.layout == WeightLayout::kPanels16Pairs;
  }
  const char* dot_ = "";
  // Calls fn(begin, end) over the weight's row groups (cpu::kGroupRows rows; single rows for a
  // row-major weight), for n tokens, in chunks the threads take in turn, each worth waking a
  // thread for.
  void for_weight_slices(std::int64_t n, const Weight& w,
                         FunctionRef<void(std::int64_t, std::int64_t)> fn);

  // Per-operation wall-clock totals (op_times): linear layers by shape, the rest by name. A
  // clock read costs ~20 ns; a step makes a few hundred calls.
  struct Timed {
    std::string name;
    std::int64_t rows = -1, cols = -1;  // linear layers
    double seconds = 0;
    std::uint64_t calls = 0;
  };
  std::vector<Timed> timed_;
  class OpTimer;
  Timed& timed(const char* name, std::int64_t rows = -1, std::int64_t cols = -1);

  struct PackedWeight {
    cpu::HostMemory memory;
    std::size_t bytes;
  };
  std::vector<PackedWeight> weights_;
  std::vector<std::vector<float>> scores_;  // per worker, attention scratch (cpu/attention.h)
};

}  // namespace saker
