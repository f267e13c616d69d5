// Where a batch-1 decode step's time goes: each of a step's calls on Falcon-7B shapes, timed as
// `kReps` calls back to back between two events (so launch gaps count, as in a step without
// graphs). Weights are separate copies made for this, several of each shape in rotation, so that
// no call finds its weights in L2. Then the same GEMVs at 8 tokens (batch 8), the fused forms
// against the separate kernels at 32 tokens, every GEMV kernel variant on every shape, and every
// linear path (GEMV, tensor cores, cuBLASLt) on every shape at 1 to 256 tokens. The batch-1
// stages run the backend's default path (the tensor-core kernel, batch-invariant): "GEMV" in
// their names is the role, a weight-streaming product.
#include <string>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "scripts/bench/gpu_bench.h"

namespace saker::gpu_bench {
namespace {

constexpr int kCopies = 4, kReps = 40;

// A CUDA event, destroyed with its owner.
class Event {
 public:
  Event() { SAKER_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() { cudaEventDestroy(event_); }  // errors cannot be reported from here
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// The bytes a call streams of a bf16 weight.
double bf16_bytes(const Weight& w) {
  return static_cast<double>(w.rows * w.cols * 2);
}

// The weights and buffers the calls run on, and the timer; each group of stages is a method.
// Members are declared in the order they were always allocated, so the memory layout is as before.
class StageBench {
 public:
  StageBench(cuda::CudaBackend& backend, const KvLayer& kv, const std::vector<std::int32_t>& table,
             std::int64_t context, const StageShapes& c)
      : backend_(backend),
        c_(c),
        context_(context),
        table_(table),
        H_(c.hidden),
        F_(4 * c.hidden),
        hd_(c.head_dim),
        qkv_rows_((c.heads + 2 * c.kv_heads) * c.head_dim),
        wqkv_(weights(qkv_rows_, H_, kCopies)),
        wdense_(weights(H_, H_, kCopies)),
        wfc_in_(weights(F_, H_, kCopies)),
        wfc_out_(weights(H_, F_, kCopies)),
        wlm_(weights(c.vocab_size, H_, 2)),
        x_(alloc(kTokens * F_)),
        y_(alloc(kTokens * c.vocab_size)),
        qkv_(alloc(kTokens * qkv_rows_)),
        attn_(alloc(kTokens * c.heads * hd_)),
        gamma_(alloc(H_)),
        beta_(alloc(H_)),
        cos_sin_(alloc(c.max_positions * hd_)),
        host_(backend.allocate_host(static_cast<std::size_t>(c.vocab_size))),
        shape_{c.heads, c.kv_heads, hd_, nullptr},
        places_{TokenPlace{static_cast<std::int32_t>(context), table.data()}},
        kv_(kv) {
    backend_.fill_random(x_->data(), kTokens * F_, DType::F32, 7, 1.0f);
    backend_.fill_random(gamma_->data(), H_, DType::F32, 8, 1.0f);
    backend_.synchronize();
  }

  void batch1_stages();
  void whole_layers();
  void batched_gemvs();
  void fused_at_32_tokens();
  void gemv_variants();
  void linear_paths();
  StageReport take(double read_gbs, double tflops) && {
    return StageReport{context_,        read_gbs,          tflops,
                       std::move(out_), std::move(sweep_), std::move(linear_)};
  }

 private:
  static constexpr std::int64_t kTokens = 256;  // tokens at most

  std::vector<Weight> weights(std::int64_t rows, std::int64_t cols, int copies) {
    std::vector<Weight> w;
    for (int i = 0; i < copies; ++i)
      w.push_back(
          backend_.upload_weight(Weight{DType::BF16, nullptr, rows, cols}, WeightQuant::kNone));
    return w;
  }
  std::unique_ptr<Buffer> alloc(std::int64_t floats) {
    return backend_.allocate(static_cast<std::size_t>(floats));
  }

  // The mean time of one call of `op(i)`, i = 1..kReps, after one untimed call.
  template <typename Op>
  double time_us(const Op& op) {
    cudaStream_t st = backend_.stream();
    backend_.begin_step();
    op(0);  // warm: stages the places, grows scratch
    backend_.synchronize();
    SAKER_CUDA_CHECK(cudaEventRecord(e0_.get(), st));
    for (int i = 1; i <= kReps; ++i) op(i);
    SAKER_CUDA_CHECK(cudaEventRecord(e1_.get(), st));
    SAKER_CUDA_CHECK(cudaEventSynchronize(e1_.get()));
    float ms = 0;
    SAKER_CUDA_CHECK(cudaEventElapsedTime(&ms, e0_.get(), e1_.get()));
    return 1e3 * static_cast<double>(ms) / kReps;
  }

  // A GEMV (with GELU: linear_gelu) on n tokens, the weights in rotation.
  void gemv(const std::string& name, const std::vector<Weight>& w, std::int64_t n, bool gelu,
            double per_step) {
    const double us = time_us([&](int i) {
      const Weight& wi = w[static_cast<std::size_t>(i) % w.size()];
      if (gelu)
        backend_.linear_gelu(x_->data(), n, wi, nullptr, y_->data());
      else
        backend_.linear(x_->data(), n, wi, nullptr, y_->data());
    });
    out_.push_back({name, us, bf16_bytes(w[0]), per_step});
  }
  // The layer's weight shapes by name.
  std::vector<std::pair<std::string, const std::vector<Weight>*>> shapes() const {
    return {{"qkv", &wqkv_},
            {"dense", &wdense_},
            {"fc_in", &wfc_in_},
            {"fc_out", &wfc_out_},
            {"lm_head", &wlm_}};
  }
  static std::string dims(std::int64_t rows, std::int64_t cols) {
    return std::to_string(rows) + "x" + std::to_string(cols);
  }
  void logits_download();

  cuda::CudaBackend& backend_;
  const StageShapes& c_;
  const std::int64_t context_;
  const std::vector<std::int32_t>& table_;
  const std::int64_t H_, F_, hd_, qkv_rows_;
  const std::vector<Weight> wqkv_, wdense_, wfc_in_, wfc_out_, wlm_;
  const std::unique_ptr<Buffer> x_, y_, qkv_, attn_, gamma_, beta_, cos_sin_, host_;
  const AttentionShape shape_;
  const std::vector<TokenPlace> places_;
  const KvLayer kv_;
  const std::vector<std::int32_t> ids_ = {11};
  const std::vector<std::int64_t> rows_ = {0};
  Event e0_, e1_;
  std::vector<Stage> out_, sweep_;
  std::vector<LinearRow> linear_;
};

// Each call of one decode step, once, with its calls per step (the fused forms: 0, not summed).
void StageBench::batch1_stages() {
  const double L = static_cast<double>(c_.layers);
  out_.push_back(
      {"embedding", time_us([&](int) { backend_.embedding(ids_, wlm_[0], 0, x_->data()); }), 0, 1});
  out_.push_back({"layer_norm", time_us([&](int) {
                    backend_.layer_norm(x_->data(), 1, H_, gamma_->data(), beta_->data(), 1e-5f,
                                        y_->data());
                  }),
                  0, L});
  gemv("qkv GEMV " + dims(qkv_rows_, H_), wqkv_, 1, false, L);
  out_.push_back({"rotary", time_us([&](int) {
                    backend_.rotary(qkv_->data(), places_, shape_, cos_sin_->data());
                  }),
                  0, L});
  out_.push_back({"kv_write",
                  time_us([&](int) { backend_.kv_write(qkv_->data(), places_, shape_, kv_); }), 0,
                  L});
  out_.push_back(
      {"attention (+ combine), " + std::to_string(context_ + 1) + " keys",
       time_us([&](int) { backend_.attention(qkv_->data(), places_, shape_, kv_, attn_->data()); }),
       0, L});
  gemv("dense GEMV " + dims(H_, H_), wdense_, 1, false, L);
  gemv("fc_in GEMV + GELU " + dims(F_, H_), wfc_in_, 1, true, L);
  gemv("fc_out GEMV " + dims(H_, F_), wfc_out_, 1, false, L);
  out_.push_back(
      {"add", time_us([&](int) { backend_.add(x_->data(), H_, y_->data()); }), 0, 2 * L});
  // The fused forms (CudaOptions::fuse), not part of the sum: each replaces rows above.
  out_.push_back({"fused: rotary + kv_write", time_us([&](int) {
                    backend_.rotary_kv_write(qkv_->data(), places_, shape_, cos_sin_->data(), kv_);
                  }),
                  0, 0});
  const double fused_us = time_us([&](int i) {
    backend_.linear_add(attn_->data(), 1, wfc_out_[static_cast<std::size_t>(i) % kCopies], nullptr,
                        y_->data(), x_->data() + H_, x_->data());
  });
  out_.push_back({"fused: fc_out GEMV + both adds", fused_us, bf16_bytes(wfc_out_[0]), 0});
  out_.push_back({"gather_rows",
                  time_us([&](int) { backend_.gather_rows(x_->data(), rows_, H_, y_->data()); }), 0,
                  1});
  out_.push_back({"final layer_norm", out_[1].us, 0, 1});
  gemv("lm_head GEMV " + dims(c_.vocab_size, H_), wlm_, 1, false, 1);
  logits_download();
}

// The logits' download: 65024 floats into pinned memory, then the host waits.
void StageBench::logits_download() {
  backend_.synchronize();
  std::vector<double> t;
  for (int i = 0; i < kReps; ++i) {
    const auto t0 = Clock::now();
    backend_.download(y_->data(), static_cast<std::size_t>(c_.vocab_size), host_->data());
    t.push_back(seconds_since(t0) * 1e6);
  }
  out_.push_back({"logits download + sync (host clock)", median(t), 0, 1});
}

// One whole layer's calls back to back, for the launch gaps between different kernels.
void StageBench::whole_layers() {
  out_.push_back({"one layer, all its calls back to back", time_us([&](int i) {
                    const auto k = static_cast<std::size_t>(i) % kCopies;
                    backend_.layer_norm(x_->data(), 1, H_, gamma_->data(), beta_->data(), 1e-5f,
                                        y_->data());
                    backend_.linear(x_->data(), 1, wqkv_[k], nullptr, qkv_->data());
                    backend_.rotary(qkv_->data(), places_, shape_, cos_sin_->data());
                    backend_.kv_write(qkv_->data(), places_, shape_, kv_);
                    backend_.attention(qkv_->data(), places_, shape_, kv_, attn_->data());
                    backend_.linear(attn_->data(), 1, wdense_[k], nullptr, y_->data());
                    backend_.linear_gelu(x_->data(), 1, wfc_in_[k], nullptr, y_->data());
                    backend_.linear(x_->data(), 1, wfc_out_[k], nullptr, y_->data());
                    backend_.add(x_->data(), H_, y_->data());
                    backend_.add(x_->data(), H_, y_->data());
                  }),
                  0, 0});
  out_.push_back({"one layer, fused calls back to back", time_us([&](int i) {
                    const auto k = static_cast<std::size_t>(i) % kCopies;
                    backend_.layer_norm(x_->data(), 1, H_, gamma_->data(), beta_->data(), 1e-5f,
                                        y_->data());
                    backend_.linear(x_->data(), 1, wqkv_[k], nullptr, qkv_->data());
                    backend_.rotary_kv_write(qkv_->data(), places_, shape_, cos_sin_->data(), kv_);
                    backend_.attention(qkv_->data(), places_, shape_, kv_, attn_->data());
                    backend_.linear(attn_->data(), 1, wdense_[k], nullptr, y_->data());
                    backend_.linear_gelu(x_->data(), 1, wfc_in_[k], nullptr, y_->data());
                    backend_.linear_add(x_->data(), 1, wfc_out_[k], nullptr, y_->data(),
                                        y_->data() + H_, y_->data() + 2 * H_);
                  }),
                  0, 0});
}

// The same GEMVs on 8 tokens, and fc_out on 4 and 2 (not part of the batch-1 sum).
void StageBench::batched_gemvs() {
  gemv("batch 8: qkv GEMV", wqkv_, 8, false, 0);
  gemv("batch 8: dense GEMV", wdense_, 8, false, 0);
  gemv("batch 8: fc_in GEMV + GELU", wfc_in_, 8, true, 0);
  gemv("batch 8: fc_out GEMV", wfc_out_, 8, false, 0);
  gemv("batch 8: lm_head GEMV", wlm_, 8, false, 0);
  gemv("batch 4: fc_out GEMV", wfc_out_, 4, false, 0);
  gemv("batch 2: fc_out GEMV", wfc_out_, 2, false, 0);
}

// 32 tokens (positions context - 31 .. context of the one sequence): the fused forms against the
// separate kernels, where GEMMs go to cuBLASLt.
void StageBench::fused_at_32_tokens() {
  backend_.set_fuse(true, std::int64_t{1} << 40);  // the fused forms at any number of tokens
  std::vector<TokenPlace> many;
  for (std::int64_t t = 0; t < 32; ++t)
    many.push_back(TokenPlace{static_cast<std::int32_t>(context_ - 31 + t), table_.data()});
  out_.push_back({"32 tokens: rotary, kv_write (separate)", time_us([&](int) {
                    backend_.rotary(qkv_->data(), many, shape_, cos_sin_->data());
                    backend_.kv_write(qkv_->data(), many, shape_, kv_);
                  }),
                  0, 0});
  out_.push_back({"32 tokens: rotary + kv_write (fused)", time_us([&](int) {
                    backend_.rotary_kv_write(qkv_->data(), many, shape_, cos_sin_->data(), kv_);
                  }),
                  0, 0});
  out_.push_back({"32 tokens: fc_out GEMM, then both adds (separate)", time_us([&](int i) {
                    const auto k = static_cast<std::size_t>(i) % kCopies;
                    backend_.linear(x_->data(), 32, wfc_out_[k], nullptr, y_->data());
                    backend_.add(y_->data() + 32 * H_, 32 * H_, y_->data());
                    backend_.add(y_->data(), 32 * H_, y_->data() + 64 * H_);
                  }),
                  bf16_bytes(wfc_out_[0]), 0});
  out_.push_back({"32 tokens: fc_out GEMM with both adds (linear_add)", time_us([&](int i) {
                    const auto k = static_cast<std::size_t>(i) % kCopies;
                    backend_.linear_add(x_->data(), 32, wfc_out_[k], nullptr, y_->data() + 32 * H_,
                                        y_->data(), y_->data() + 64 * H_);
                  }),
                  bf16_bytes(wfc_out_[0]), 0});
  const cuda::CudaOptions defaults;
  backend_.set_fuse(defaults.fuse, defaults.fuse_max_tokens);
}

// GEMV kernel variants (tuning): every shape, every variant, rotating weights.
void StageBench::gemv_variants() {
  cudaStream_t st = backend_.stream();
  for (const auto& [shape_name, w] : shapes())
    for (int v = 0; v < cuda::gemv_variant_count(); ++v) {
      const double us = time_us([&, w = w](int i) {
        cuda::launch_gemv_variant(v, x_->data(), (*w)[static_cast<std::size_t>(i) % w->size()],
                                  y_->data(), st);
      });
      sweep_.push_back(
          {shape_name + ": " + cuda::gemv_variant_name(v), us, bf16_bytes((*w)[0]), 0});
    }
}

// Every linear path (GEMV up to 8 tokens, the tensor-core kernel up to 64, cuBLASLt) on every
// Falcon-7B shape at 1 to 256 tokens, the weights in rotation; the default path is restored.
void StageBench::linear_paths() {
  auto time_path = [&](cuda::LinearPath path, const std::vector<Weight>& w, std::int64_t n) {
    backend_.set_linear_path(path);
    return time_us([&](int i) {
      backend_.linear(x_->data(), n, w[static_cast<std::size_t>(i) % w.size()], nullptr,
                      y_->data());
    });
  };
  for (const auto& [name, w] : shapes())
    for (const std::int64_t n : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
      LinearRow r{name, (*w)[0].rows, (*w)[0].cols, n};
      if (n <= cuda::kGemvMaxTokens) r.us_gemv = time_path(cuda::LinearPath::kGemv, *w, n);
      if (n <= cuda::kMmaMaxTokens) r.us_mma = time_path(cuda::LinearPath::kMma, *w, n);
      r.us_lt = time_path(cuda::LinearPath::kLt, *w, n);
      linear_.push_back(r);
    }
  backend_.set_linear_path(cuda::LinearPath::kAuto);
}

}  // namespace

StageReport stage_breakdown(cuda::CudaBackend& backend, const KvLayer& kv,
                            const std::vector<std::int32_t>& table, std::int64_t context,
                            const StageShapes& c, double read_gbs, double tflops) {
  StageBench bench(backend, kv, table, context, c);
  bench.batch1_stages();
  bench.whole_layers();
  bench.batched_gemvs();
  bench.fused_at_32_tokens();
  bench.gemv_variants();
  bench.linear_paths();
  return std::move(bench).take(read_gbs, tflops);
}

}  // namespace saker::gpu_bench
