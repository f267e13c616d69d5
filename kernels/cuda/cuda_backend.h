// The CUDA backend: the Backend interface on one GPU. Activations and the KV cache are fp32 in
// device memory; weights are copied once to the device in their stored precision. The interface
// stays host-facing: token ids, positions and block tables arrive as host spans and are staged to
// the device through pinned memory (one asynchronous copy each, reused across a step's layers).
// Every call is enqueued on the backend's stream; download() and synchronize() wait for it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/backend.h"

namespace saker::cuda {

// The weight-streaming GEMV kernel takes at most this many tokens a launch (more run in chunks);
// which linear layers it runs: cuda_backend_linear.cpp (fp32 and 8-bit weights, or as timed).
constexpr std::int64_t kGemvMaxTokens = 8;
constexpr std::int64_t kGemvSmallK = 8192;
// The skinny tensor-core kernel (mma_gemm.cu) takes linear layers of at most this many tokens.
constexpr std::int64_t kMmaMaxTokens = 64;
// Decode graphs kept at once (one per key of run_step, i.e. per decode batch size): every
// batch size up to 256.
constexpr std::size_t kMaxGraphs = 256;

// What run_step did so far.
struct GraphStats {
  std::int64_t direct = 0;      // steps run call by call (a key's first step, failed captures)
  std::int64_t captures = 0;    // graphs captured (each also ran its step)
  std::int64_t replays = 0;     // steps replayed from a graph
  std::int64_t mismatches = 0;  // steps whose signature differed from their key's graph
  std::int64_t aborts = 0;      // captures dropped (a buffer had to grow, or CUDA refused)
};

// How a linear layer is computed: the weight-streaming GEMV (at most kGemvMaxTokens tokens a
// launch), the skinny tensor-core kernel (bf16/fp16 weights, at most 64 tokens: mma_gemm.cu) or
// cuBLASLt. kAuto: as CudaOptions::batch_invariant says.
enum class LinearPath { kAuto, kGemv, kMma, kLt };
const char* linear_path_name(LinearPath p);

// What the tuner (batch_invariant off) chose for one weight shape and token count, and the median
// times it measured, in microseconds (negative: that path cannot take the call).
struct LinearChoice {
  DType dtype = DType::BF16;
  std::int64_t rows = 0, cols = 0, tokens = 0;
  LinearPath path = LinearPath::kAuto;
  double us_gemv = -1, us_mma = -1, us_lt = -1;
};

struct CudaOptions {
  int device = 0;
  // cuBLASLt GEMMs on bf16/fp16 weights take the activations as two half-precision parts,
  // hi + lo, in one call of twice the columns: close to fp32 accuracy for the same weight
  // traffic. Off: one part (activations rounded to bf16/fp16). The tensor-core kernel always
  // splits them (in registers).
  bool split_activations = true;
  // Benchmarks: upload_weight fills the device copy with random values instead of copying the
  // host bytes (which are then never read), so a model-sized checkpoint can be a sparse file.
  bool synthetic_weights = false;
  std::size_t gemm_workspace_bytes = std::size_t{32} << 20;
  // run_step (FalconModel's decode-only steps) captures a step as a CUDA graph per key (batch
  // size) and replays it while the step's signature (every call's arguments and launch
  // parameters) stays the same; host data is staged to the same pinned addresses first.
  bool graphs = true;
  // Programmatic dependent launch (sm_90 and later) for calls on at most pdl_max_tokens tokens:
  // each kernel after one of ours may start while that one ends (a GEMV streams its first weights
  // meanwhile). Off, on more tokens, or on an older GPU: every kernel starts after the previous
  // one has finished. On the H200 (Falcon-7B, PDL alone) it sped up decode steps of 1 and 2
  // tokens (4.10 -> 3.91 and 4.69 -> 4.58 ms), was even at 4 and slowed down those of 8 and 64
  // (9.29 -> 9.66 and 8.64 -> 9.05 ms; docs/gpu-runs.md).
  bool pdl = true;
  std::int64_t pdl_max_tokens = 2;
  // Fused kernels for calls on at most fuse_max_tokens tokens: rotary with the KV-cache write;
  // the parallel block's final adds in the fc_out GEMV's epilogue. Off: the separate kernels.
  // The results are the same bit for bit. On the H200 they sped up decode steps of 1 to 8
  // tokens and, unexplained, slowed down those of 32 by 4 % (each fused call alone was faster:
  // docs/gpu-runs.md).
  bool fuse = true;
  std::int64_t fuse_max_tokens = kGemvMaxTokens;
  // Threads per block of the GEMV kernels on rows of at most kGemvSmallK elements (Falcon-7B's
  // qkv, dense and fc_in): 96, 128, 160 or 192 (any other value, and longer rows: 256).
  int gemv_threads = 128;
  // Linear layers (`saker ... --batch-invariant`, default on). On: every call of at most 64
  // tokens on bf16/fp16 weights runs the skinny tensor-core kernel, whose sums do not depend on
  // the tokens, so a row's output is bit for bit the same in any decode step of up to 64 tokens;
  // larger calls (prefill chunks, and a step's decodes batched with one) go to cuBLASLt, whose
  // algorithm depends on the shape. fp32 weights: GEMV up to 8 tokens, cuBLASLt above. Off: each
  // (weight shape, tokens) up to 64 takes the fastest of GEMV, tensor-core kernel and cuBLASLt,
  // timed on its first call outside a graph capture (linear_choices()).
  bool batch_invariant = true;
  // Tests and benchmarks: this path for every call it can take (kAuto: the rule above).
  LinearPath linear_path = LinearPath::kAuto;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(CudaOptions options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  cudaStream_t stream() const;
  int device() const;
  int multiprocessors() const;

  std::unique_ptr<Buffer> allocate(std::size_t floats) override;
  // Every KV cache type: fp32, bf16, fp16, int8 and fp8 e4m3 (kernels/cuda/kv_elements.cuh).
  bool supports_kv_dtype(DType dtype) const override { return is_kv_dtype(dtype); }
  std::unique_ptr<Buffer> upload(std::span<const float> host) override;
  Weight upload_weight(const Weight& host, WeightQuant quant) override;
  void linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
              float* y) override;
  void linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y) override;
  void linear_add(const float* x, std::int64_t n, const Weight& w, const float* bias,
                  const float* add, float* y, float* residual) override;
  void embedding(std::span<const std::int32_t> ids, const Weight& table, std::int64_t first_id,
                 float* y) override;
  void layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                  const float* beta, float eps, float* y) override;
  void add_layer_norm(const float* a, std::int64_t n, std::int64_t dim, float* x,
                      const float* gamma, const float* beta, float eps, float* y) override;
  void gelu(float* x, std::int64_t count) override;
  void add(const float* x, std::int64_t count, float* y) override;
  void gather_rows(const float* src, std::span<const std::int64_t> rows, std::int64_t dim,
                   float* dst) override;
  void rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
              const float* cos_sin) override;
  void kv_write(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                const KvLayer& kv) override;
  void rotary_kv_write(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                       const float* cos_sin, const KvLayer& kv) override;
  void attention(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                 const KvLayer& kv, float* out) override;

  void logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                     LogitSummary* out) override;

  bool host_accessible() const override { return false; }
  std::unique_ptr<Buffer> allocate_host(std::size_t floats) override;
  void download(const float* src, std::size_t n, float* host) override;
  void synchronize() override;
  std::optional<std::size_t> free_memory() const override;
  void begin_step() override;
  // Graphs (CudaOptions::graphs): a key's first step runs directly, the second is captured,
  // later ones run `body` only to stage host data and compute the signature, then replay.
  // A signature that differs (a block table doubled, the attention split changed, a buffer
  // grew) drops the key's graph and captures again; anything a capture cannot take (a buffer
  // growing, a refused call) makes that step run directly.
  void run_step(std::uint64_t key, const std::function<void()>& body) override;
  void set_graphs(bool on);
  // Benchmarks and tests: CudaOptions::pdl and ::fuse for the calls from now on (a graph captured
  // with other settings is not replayed).
  void set_pdl(bool on);
  void set_pdl_max_tokens(std::int64_t tokens);
  void set_fuse(bool on, std::int64_t max_tokens = kGemvMaxTokens);
  void set_gemv_threads(int threads);
  void set_batch_invariant(bool on);
  void set_linear_path(LinearPath path);
  // The tuner's choices so far (batch_invariant off), in the order they were made.
  std::vector<LinearChoice> linear_choices() const;
  bool pdl_supported() const;  // the device runs programmatic dependent launches (sm_90+)
  GraphStats graph_stats() const;

  // Fills `count` device elements of `dtype` with uniform values in [-scale, scale).
  void fill_random(void* data, std::int64_t count, DType dtype, std::uint64_t seed, float scale);

 private:
  struct Impl;
  void linear_impl(const float* x, std::int64_t n, const Weight& w, const float* bias, bool gelu,
                   const float* add, float* residual, float* y);
  Weight upload_quantized(const Weight& host, WeightQuant quant);
  // linear_impl on a resolved path (kGemv, kMma or kLt; one the call can take).
  void linear_on(LinearPath path, const float* x, std::int64_t n, const Weight& w,
                 const float* bias, bool gelu, const float* add, float* residual, float* y);
  LinearPath choose_linear(const float* x, std::int64_t n, const Weight& w);
  LinearPath tune_linear(const float* x, std::int64_t n, const Weight& w);
  std::unique_ptr<Impl> impl_;
};

}  // namespace saker::cuda
