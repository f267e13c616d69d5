// Host-side launchers of the CUDA kernels (kernels/cuda/*.cu). Every pointer is device memory
// unless said otherwise; every launch is enqueued on `stream` and checked for launch errors.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace saker::cuda {

constexpr int kThreads = 256;  // threads per block of the row and element-wise kernels

// Where and how a kernel is enqueued: on `stream`; with `pdl` (programmatic dependent launch,
// sm_90 and later only) it may start before the previous kernel on the stream has finished and
// waits inside (pdl_wait) before touching memory that kernel uses. Only after a kernel of ours:
// the previous operation being a copy or a library call gains nothing.
struct Enqueue {
  Enqueue(cudaStream_t s, bool p = false) : stream(s), pdl(p) {}  // NOLINT: from a stream
  cudaStream_t stream;
  bool pdl;
};

// y[t] = table row ids[t] - first_id as fp32, or zeros outside the table (vocabulary shards).
void launch_embedding(const std::int32_t* ids, std::int64_t n, const Weight& table,
                      std::int64_t first_id, float* y, const Enqueue& q);
// One block per row. With `residual`: x_sum = x + residual is written and normalised instead.
void launch_layer_norm(const float* x, const float* residual, float* x_sum, std::int64_t n,
                       std::int64_t dim, const float* gamma, const float* beta, float eps, float* y,
                       const Enqueue& q);
void launch_gelu(float* x, std::int64_t count, cudaStream_t stream);
void launch_add(const float* x, std::int64_t count, float* y, const Enqueue& q);
void launch_gather_rows(const float* src, const std::int64_t* rows, std::int64_t n,
                        std::int64_t dim, float* dst, const Enqueue& q);
// parts: nparts stacked [n][cols] partial products; y = sum of parts (+ bias[col]), gelu'd.
// In place (parts == y) is allowed with one part.
void launch_bias_act(const float* parts, int nparts, std::int64_t n, std::int64_t cols,
                     const float* bias, bool gelu, float* y, cudaStream_t stream);
// hi = x rounded to `dtype` (BF16 or F16); lo (optional) = x - hi rounded the same way, so that
// hi + lo carries about twice the mantissa bits of one half-precision number.
void launch_split_activations(const float* x, std::int64_t count, DType dtype, void* hi, void* lo,
                              cudaStream_t stream);
// count elements of `dtype`, uniform in [-scale, scale), a function of (seed, index) only.
void launch_fill_random(void* data, std::int64_t count, DType dtype, std::uint64_t seed,
                        float scale, cudaStream_t stream);

// The token positions and block tables of a step, as staged on the device (see CudaBackend).
struct DevicePlaces {
  const std::int32_t* pos = nullptr;        // [n]
  const std::int32_t* table_off = nullptr;  // [n]: where each token's block table starts
  const std::int32_t* tables = nullptr;     // packed block tables
  const std::int32_t* tiles = nullptr;      // [tiles][3]: first token, tokens, keys to read
  std::int64_t n = 0;
  std::int64_t num_tiles = 0;
  std::int64_t max_keys = 0;  // max over tokens of pos + 1
};

void launch_rotary(float* qkv, const DevicePlaces& p, const AttentionShape& s, const float* cos_sin,
                   const Enqueue& q);
void launch_kv_write(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                     const KvLayer& kv, const Enqueue& q);
// launch_rotary then launch_kv_write as one kernel: the rotated K row goes to the cache from the
// registers that rotated it.
void launch_rotary_kv_write(float* qkv, const DevicePlaces& p, const AttentionShape& s,
                            const float* cos_sin, const KvLayer& kv, const Enqueue& q);

// Query heads of one KV group over `tokens_per_tile` tokens of one sequence form a tile.
std::int64_t attention_tokens_per_tile(const AttentionShape& s);
// Scratch floats attention needs for `splits` key ranges.
std::size_t attention_scratch_floats(std::int64_t n, const AttentionShape& s, int splits);
// max_keys rounded up to a bucket: the key ranges are cut from it.
std::int64_t attention_key_bound(const DevicePlaces& p);
// Key ranges per tile so the grid fills `sms` multiprocessors (1 when one range is enough); with
// `invariant` (CudaOptions::batch_invariant), ranges of 128 keys from position 0 instead, so that
// no token's result depends on the others in the step (up to 8192 keys).
int attention_splits(const DevicePlaces& p, const AttentionShape& s, int sms, bool invariant);
// out [n, heads * head_dim]. `scratch` holds attention_scratch_floats(n, s, splits).
void launch_attention(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                      const KvLayer& kv, int splits, float* scratch, float* out, const Enqueue& q);

// Weight-streaming matrix-vector products for at most kGemvMaxTokens tokens: y = x W^T (+ bias),
// gelu'd, (+ add: [n, w.rows]); then residual += y when `residual` is given. Rounded as the
// separate adds: y = fl(fl(fl(dot) + bias) + add), residual = fl(residual + y). With PDL, each
// block requests its first weights before waiting for the previous kernel. `threads`:
// CudaOptions::gemv_threads.
void launch_gemv(const float* x, std::int64_t n, const Weight& w, const float* bias, bool gelu,
                 const float* add, float* residual, float* y, int threads, const Enqueue& q);

// Skinny products on tensor cores (mma_gemm.cu) for 1 to kMmaMaxTokens tokens on bf16 or fp16
// weights, with the GEMV's epilogue and rounding: y = x W^T (+ bias), gelu'd, (+ add); then
// residual += y. The activations are split into hi + lo parts of the weights' type in registers.
// Every row is summed in the same order whatever the number of tokens (batch invariance). At most
// kMmaMaxTokens tokens (cuda_backend.h).
struct MmaEpilogue {
  const float* bias = nullptr;
  bool gelu = false;
  const float* add = nullptr;
  float* residual = nullptr;
};
// bf16/fp16 weights with K % 8 == 0, weights and activations 16-byte aligned.
bool mma_supported(const Weight& w, const float* x);
void launch_skinny_mma(const float* x, std::int64_t n, const Weight& w, const MmaEpilogue& e,
                       float* y, const Enqueue& q);

// Tuning only (saker_gpu_bench): variants of the GEMV kernel for bf16 weights (K % 8 == 0),
// each for gemv_variant_tokens(v) tokens, without bias or GELU.
int gemv_variant_count();
const char* gemv_variant_name(int v);
int gemv_variant_tokens(int v);
void launch_gemv_variant(int v, const float* x, const Weight& w, float* y, cudaStream_t stream);

// One LogitSummary per row of logits [rows, vocab] (kernels/logit_summary.h), one block per row.
void launch_logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                          LogitSummary* out, const Enqueue& q);

// Bandwidth probes: a read-only pass over `bytes` (returns nothing useful; keeps loads alive).
void launch_read_probe(const void* data, std::size_t bytes, float* sink, cudaStream_t stream);

}  // namespace saker::cuda
