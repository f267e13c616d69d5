// Host-side launchers of the CUDA kernels (kernels/cuda/*.cu). Every pointer is device memory
// unless said otherwise; every launch is enqueued on `stream` and checked for launch errors.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace saker::cuda {

constexpr int kThreads = 256;  // threads per block of the row and element-wise kernels

// y[t] = table row ids[t] - first_id as fp32, or zeros outside the table (vocabulary shards).
void launch_embedding(const std::int32_t* ids, std::int64_t n, const Weight& table,
                      std::int64_t first_id, float* y, cudaStream_t stream);
// One block per row. With `residual`: x_sum = x + residual is written and normalised instead.
void launch_layer_norm(const float* x, const float* residual, float* x_sum, std::int64_t n,
                       std::int64_t dim, const float* gamma, const float* beta, float eps, float* y,
                       cudaStream_t stream);
void launch_gelu(float* x, std::int64_t count, cudaStream_t stream);
void launch_add(const float* x, std::int64_t count, float* y, cudaStream_t stream);
void launch_gather_rows(const float* src, const std::int64_t* rows, std::int64_t n,
                        std::int64_t dim, float* dst, cudaStream_t stream);
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
                   cudaStream_t stream);
void launch_kv_write(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                     const KvLayer& kv, cudaStream_t stream);

// Query heads of one KV group over `tokens_per_tile` tokens of one sequence form a tile.
std::int64_t attention_tokens_per_tile(const AttentionShape& s);
// Scratch floats attention needs for `splits` key ranges.
std::size_t attention_scratch_floats(std::int64_t n, const AttentionShape& s, int splits);
// max_keys rounded up to a bucket: the key ranges are cut from it.
std::int64_t attention_key_bound(const DevicePlaces& p);
// Key ranges per tile so the grid fills `sms` multiprocessors (1 when one range is enough).
int attention_splits(const DevicePlaces& p, const AttentionShape& s, int sms);
// out [n, heads * head_dim]. `scratch` holds attention_scratch_floats(n, s, splits).
void launch_attention(const float* qkv, const DevicePlaces& p, const AttentionShape& s,
                      const KvLayer& kv, int splits, float* scratch, float* out,
                      cudaStream_t stream);

// Weight-streaming matrix-vector products for at most kGemvMaxTokens tokens: y = x W^T (+ bias),
// gelu'd.
void launch_gemv(const float* x, std::int64_t n, const Weight& w, const float* bias, bool gelu,
                 float* y, cudaStream_t stream);

// Tuning only (saker_gpu_bench): variants of the GEMV kernel for bf16 weights (K % 8 == 0),
// each for gemv_variant_tokens(v) tokens, without bias or GELU.
int gemv_variant_count();
const char* gemv_variant_name(int v);
int gemv_variant_tokens(int v);
void launch_gemv_variant(int v, const float* x, const Weight& w, float* y, cudaStream_t stream);

// One LogitSummary per row of logits [rows, vocab] (kernels/logit_summary.h), one block per row.
void launch_logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                          LogitSummary* out, cudaStream_t stream);

// Bandwidth probes: a read-only pass over `bytes` (returns nothing useful; keeps loads alive).
void launch_read_probe(const void* data, std::size_t bytes, float* sink, cudaStream_t stream);

}  // namespace saker::cuda
