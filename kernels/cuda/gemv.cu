// Weight-streaming products for decode steps (a few tokens): y[t, r] = dot(w[r, :], x[t, :]).
//
// gemv_kernel (below) runs decode on fp32 and 8-bit weights (codes times the row's scale), and on
// half-precision ones where batch invariance is off and it was timed fastest (the tensor-core
// kernel, mma_gemm.cu, takes them by default): a block per 4 rows striding over K with 16-byte
// evict-first loads, 128 threads on rows of at most kGemvSmallK (CudaOptions::gemv_threads), 256 on
// longer ones; each output is summed in the same fixed order for any number of tokens (batch
// invariance within the GEMV path). The epilogue adds the bias, GELU, and the parallel block's
// residual adds. gemv_warp_kernel (one warp per R rows, U loads per row in flight per lane) is kept
// for the benchmark's variant table only: on the H200 it was slower on every Falcon-7B shape (e.g.
// 4672x4544 at batch 1: 20 us against 14 us).
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace saker::cuda {
namespace {

constexpr int kGemvThreads = 256;  // rows longer than kGemvSmallK, and the variant table
constexpr int kGemvWarps = kGemvThreads / 32;

template <DType D>
constexpr int kVecElems = static_cast<int>(16 / dtype_size(D));  // elements in 16 bytes

// 16 bytes of weights → kVecElems<D> floats.
template <DType D>
__device__ __forceinline__ void unpack16(const uint4 raw, float* out) {
  const std::uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (D == DType::F32) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = __uint_as_float(words[i]);
  } else if constexpr (D == DType::BF16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // little endian: the low half is the earlier element
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  } else if constexpr (D == DType::I8 || D == DType::F8E4M3) {  // 8-bit weight codes
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const auto c = static_cast<std::uint8_t>(words[i / 4] >> (8 * (i % 4)));
      if constexpr (D == DType::I8)
        out[i] = static_cast<float>(static_cast<std::int8_t>(c));
      else
        out[i] = e4m3_code_to_float(c);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] & 0xffffu)));
      out[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] >> 16)));
    }
  }
}

// NT: tokens the kernel is compiled for (n <= NT); R: rows per warp; U: chunks per row a lane
// loads before using them. VEC: 16-byte chunks (rows and activations 16-byte aligned, K a
// multiple of the vector width), else one element a chunk.
template <DType D, int NT, int R, int U, bool VEC, int W = kGemvWarps>
__global__ void __launch_bounds__(W * 32)
    gemv_warp_kernel(const float* __restrict__ x, int n, const void* __restrict__ w, std::int64_t N,
                     std::int64_t K, const float* __restrict__ bias, bool gelu,
                     float* __restrict__ y) {
  constexpr int V = VEC ? kVecElems<D> : 1;
  const int lane = threadIdx.x % 32;
  const std::int64_t row0 = (static_cast<std::int64_t>(blockIdx.x) * W + threadIdx.x / 32) * R;
  if (row0 >= N) return;              // a whole warp; the kernel has no block-wide barrier
  const std::int64_t chunks = K / V;  // K % V == 0 when VEC

  // Row r's chunk c; a ragged group re-reads the last row (its result is not written).
  const unsigned char* rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const std::int64_t row = row0 + r < N ? row0 + r : N - 1;
    rows[r] =
        static_cast<const unsigned char*>(w) + row * K * static_cast<std::int64_t>(dtype_size(D));
  }

  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;

  for (std::int64_t c0 = lane; c0 < chunks; c0 += 32 * U) {
    // All of this round's loads first: U * R independent 16-byte (or element) loads in flight,
    // kept raw until used.
    using Raw = std::conditional_t<VEC, uint4, float>;
    Raw raw[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if constexpr (VEC) {
          raw[u][r] = c < chunks ? __ldcs(reinterpret_cast<const uint4*>(rows[r]) + c)
                                 : make_uint4(0, 0, 0, 0);
        } else {
          raw[u][r] = c < chunks ? load_element<D>(rows[r], c) : 0.0f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t c = c0 + 32 * u;
      if (c >= chunks) break;  // the same for every later u
      float wv[R][V];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if constexpr (VEC) {
          unpack16<D>(raw[u][r], wv[r]);
        } else {
          wv[r][0] = raw[u][r];
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t >= n) break;
        float xv[V];
        const float* xp = x + t * K + c * V;
        if constexpr (VEC) {
#pragma unroll
          for (int i = 0; i < V; i += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4*>(xp + i));
            xv[i] = f.x;
            xv[i + 1] = f.y;
            xv[i + 2] = f.z;
            xv[i + 3] = f.w;
          }
        } else {
          xv[0] = __ldg(xp);
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int i = 0; i < V; ++i) acc[r][t] = fmaf(wv[r][i], xv[i], acc[r][t]);
      }
    }
  }

  // Fixed butterfly: every lane ends with the same sum; lane (r * NT + t) % 32 writes it.
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float s = warp_sum(acc[r][t]);
      const std::int64_t row = row0 + r;
      if (lane == (r * NT + t) % 32 && row < N && t < n) {
        if (bias) s = __fadd_rn(s, bias[row]);
        if (gelu) s = gelu_erf(s);
        y[t * N + row] = s;
      }
    }
}

// The kernel decode uses: a block of T threads takes R rows and strides over K, 16 bytes of
// weights per thread per row per step (evict-first), activations from L1; partial sums meet in a
// fixed-order warp and block reduction, so each output is computed the same way whatever the
// number of tokens (batch invariance within the GEMV path). On the H200 it beat the warp-per-row
// kernel above on every Falcon-7B shape (saker_gpu_bench's variant table). On rows of 4544,
// 128 threads (about 4.4 rounds each) beat 256 (2.2): 3.84 against 3.92 ms a decode step at
// batch 1, 9.16 against 10.00 at batch 8 (docs/gpu-runs.md).
// NT: tokens the kernel is compiled for (n <= NT); R: rows per block; U: rounds of 16-byte loads
// a thread has in flight (each round: one chunk of each of its R rows), all issued before the
// rounds are used; VEC: 16-byte loads (rows and activations 16-byte aligned, K a multiple of the
// vector width), else element by element. A thread adds its chunks in increasing k whatever U
// is, so U changes no result.
// T: threads per block (the summation order depends on it, so it is chosen by the shape alone).
template <DType D, int NT, int R, int U, bool VEC, int T = kGemvThreads>
__global__ void __launch_bounds__(T)
    gemv_kernel(const float* __restrict__ x, int n, const void* __restrict__ w,
                const float* __restrict__ scales, std::int64_t N, std::int64_t K,
                const float* __restrict__ bias, bool gelu, const float* __restrict__ add,
                float* residual, float* __restrict__ y) {
  constexpr int V = VEC ? kVecElems<D> : 1;
  constexpr std::int64_t kSize = dtype_size(D);
  constexpr std::int64_t kStep = static_cast<std::int64_t>(T) * V;  // one round
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * R;
  const auto* wb = static_cast<const unsigned char*>(w);
  auto weight_at = [&](int r, std::int64_t k) {
    const std::int64_t row = row0 + r < N ? row0 + r : N - 1;  // a ragged block re-reads a row
    return static_cast<const void*>(wb + (row * K + k) * kSize);
  };
  const std::int64_t k0 = static_cast<std::int64_t>(threadIdx.x) * V;
  [[maybe_unused]] uint4 raw[U][R];
  auto load_rounds = [&](std::int64_t kb) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const std::int64_t k = kb + u * kStep;
        raw[u][r] =
            k < K ? __ldcs(static_cast<const uint4*>(weight_at(r, k))) : make_uint4(0, 0, 0, 0);
      }
  };
  // The weights never change after loading: the first rounds are requested before waiting for
  // the kernel that writes x (programmatic dependent launch), so the stream starts during its end.
  if constexpr (VEC) load_rounds(k0);
  pdl_enter();

  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;

  for (std::int64_t kb = k0; kb < K; kb += U * kStep) {
    if constexpr (VEC) {
      if (kb != k0) load_rounds(kb);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t k = kb + u * kStep;
      if (k >= K) break;
      float wv[R][V];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if constexpr (VEC) {
          unpack16<D>(raw[u][r], wv[r]);
        } else {
          wv[r][0] = load_element<D>(weight_at(r, k), 0);
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t >= n) break;
        float xv[V];
        if constexpr (VEC) {
#pragma unroll
          for (int i = 0; i < V; i += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4*>(x + t * K + k + i));
            xv[i] = f.x;
            xv[i + 1] = f.y;
            xv[i + 2] = f.z;
            xv[i + 3] = f.w;
          }
        } else {
          xv[0] = __ldg(x + t * K + k);
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int i = 0; i < V; ++i) acc[r][t] = fmaf(wv[r][i], xv[i], acc[r][t]);
      }
    }
  }

  __shared__ float partial[T / 32][R * NT];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0) partial[warp][r * NT + t] = v;
    }
  __syncthreads();
  if (threadIdx.x < R * NT) {
    const int r = threadIdx.x / NT, t = threadIdx.x % NT;
    const std::int64_t row = row0 + r;
    if (row < N && t < n) {
      float s = 0.0f;
      for (int i = 0; i < T / 32; ++i) s += partial[i][threadIdx.x];
      const std::int64_t o = t * N + row;
      if (scales) s = __fmul_rn(s, scales[row]);  // 8-bit weights: the row's scale, once
      if (bias) s = __fadd_rn(s, bias[row]);
      if (gelu) s = gelu_erf(s);
      if (add) s = __fadd_rn(s, add[o]);
      y[o] = s;
      if (residual) residual[o] = __fadd_rn(residual[o], s);
    }
  }
}

// The epilogue of a GEMV: what is done with each output after its dot product.
struct Epilogue {
  const float* bias;
  bool gelu;
  const float* add;
  float* residual;
};

template <DType D, int NT, int U, int T = kGemvThreads>
void gemv_launch(const float* x, std::int64_t n, const Weight& w, const Epilogue& e, float* y,
                 const Enqueue& q) {
  // 4 rows per block for any number of tokens (rows do not change any row's summation order):
  // on the H200 it beat 2 rows at 1 token on every Falcon-7B shape (69 -> 73 % of the read
  // bandwidth for 4672x4544, 90 -> 96 % for 4544x18176) and 2 or 8 rows at 8 tokens.
  constexpr int R = 4;
  const auto blocks = static_cast<unsigned>((w.rows + R - 1) / R);
  const bool vec = w.cols % kVecElems<D> == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<std::uintptr_t>(w.data) % 16 == 0;
  auto kernel = vec ? gemv_kernel<D, NT, R, U, true, T> : gemv_kernel<D, NT, R, 1, false, T>;
  enqueue(q, blocks, T, 0, kernel, "gemv_kernel", x, static_cast<int>(n), w.data, w.scales, w.rows,
          w.cols, e.bias, e.gelu, e.add, e.residual, y);
}

template <DType D, int NT>
void gemv_threads(const float* x, std::int64_t n, const Weight& w, const Epilogue& e, float* y,
                  int threads, const Enqueue& q) {
  // Short rows (CudaOptions::gemv_threads): a block size of their own.
  if (w.cols <= kGemvSmallK) {
    if (threads == 96) return gemv_launch<D, NT, 1, 96>(x, n, w, e, y, q);
    if (threads == 128) return gemv_launch<D, NT, 1, 128>(x, n, w, e, y, q);
    if (threads == 160) return gemv_launch<D, NT, 1, 160>(x, n, w, e, y, q);
    if (threads == 192) return gemv_launch<D, NT, 1, 192>(x, n, w, e, y, q);
  }
  gemv_launch<D, NT, 1>(x, n, w, e, y, q);
}

template <DType D>
void gemv_tokens(const float* x, std::int64_t n, const Weight& w, const Epilogue& e, float* y,
                 int threads, const Enqueue& q) {
  // One round of loads in flight: on the H200, two or three (saker_gpu_bench's variant table)
  // sped up no whole decode step.
  if (n <= 1) return gemv_threads<D, 1>(x, n, w, e, y, threads, q);
  if (n <= 2) return gemv_threads<D, 2>(x, n, w, e, y, threads, q);
  if (n <= 4) return gemv_threads<D, 4>(x, n, w, e, y, threads, q);
  return gemv_threads<D, 8>(x, n, w, e, y, threads, q);
}

// --- tuning (saker_gpu_bench's GEMV sweep), bf16 weights, vectorised: the block kernel with
// other rows per block, and the warp-per-row kernel above ---

template <int NT, int R, int U, int W>
void variant(const float* x, std::int64_t n, const Weight& w, float* y, cudaStream_t stream) {
  const std::int64_t warps = (w.rows + R - 1) / R;
  gemv_warp_kernel<DType::BF16, NT, R, U, true, W>
      <<<static_cast<unsigned>((warps + W - 1) / W), W * 32, 0, stream>>>(
          x, static_cast<int>(n), w.data, w.rows, w.cols, nullptr, false, y);
}

template <int NT, int R, int U = 1>
void block_variant(const float* x, std::int64_t n, const Weight& w, float* y, cudaStream_t stream) {
  gemv_kernel<DType::BF16, NT, R, U, true>
      <<<static_cast<unsigned>((w.rows + R - 1) / R), kGemvThreads, 0, stream>>>(
          x, static_cast<int>(n), w.data, nullptr, w.rows, w.cols, nullptr, false, nullptr, nullptr,
          y);
}

struct Variant {
  const char* name;
  int tokens;
  void (*launch)(const float*, std::int64_t, const Weight&, float*, cudaStream_t);
};
constexpr Variant kVariants[] = {
    {"n1 block of 256 per 4 rows (default)", 1, block_variant<1, 4>},
    {"n1 block of 256 per 2 rows", 1, block_variant<1, 2>},
    {"n1 block of 256 per 4 rows, 2 rounds in flight", 1, block_variant<1, 4, 2>},
    {"n1 block of 256 per 4 rows, 3 rounds in flight", 1, block_variant<1, 4, 3>},
    {"n1 block of 256 per 2 rows, 3 rounds in flight", 1, block_variant<1, 2, 3>},
    {"n1 block of 256 per 8 rows", 1, block_variant<1, 8>},
    {"n1 block of 256 per 8 rows, 2 rounds in flight", 1, block_variant<1, 8, 2>},
    {"n1 warp/row R1 U8 W8", 1, variant<1, 1, 8, 8>},
    {"n1 warp R2 U4 W8", 1, variant<1, 2, 4, 8>},
    {"n1 warp R1 U16 W8", 1, variant<1, 1, 16, 8>},
    {"n1 warp R2 U8 W8", 1, variant<1, 2, 8, 8>},
    {"n1 warp R4 U4 W8", 1, variant<1, 4, 4, 8>},
    {"n1 warp R1 U8 W4", 1, variant<1, 1, 8, 4>},
    {"n1 warp R1 U4 W4", 1, variant<1, 1, 4, 4>},
    {"n8 block of 256 per 4 rows (default)", 8, block_variant<8, 4>},
    {"n8 block of 256 per 8 rows", 8, block_variant<8, 8>},
    {"n8 block of 256 per 2 rows", 8, block_variant<8, 2>},
    {"n8 warp R4 U2 W8", 8, variant<8, 4, 2, 8>},
    {"n8 warp R8 U1 W8", 8, variant<8, 8, 1, 8>},
    {"n8 warp R2 U4 W8", 8, variant<8, 2, 4, 8>},
    {"n8 warp R4 U2 W4", 8, variant<8, 4, 2, 4>},
};

}  // namespace

int gemv_variant_count() {
  return static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0]));
}
const char* gemv_variant_name(int v) {
  return kVariants[v].name;
}
int gemv_variant_tokens(int v) {
  return kVariants[v].tokens;
}
void launch_gemv_variant(int v, const float* x, const Weight& w, float* y, cudaStream_t stream) {
  if (v < 0 || v >= gemv_variant_count())
    throw std::invalid_argument("launch_gemv_variant: no variant " + std::to_string(v));
  if (w.dtype != DType::BF16 || w.cols % 8 != 0)
    throw std::invalid_argument("launch_gemv_variant: bf16 weights with K % 8 == 0 only");
  kVariants[v].launch(x, kVariants[v].tokens, w, y, stream);
  SAKER_CUDA_LAUNCH_CHECK("gemv variant");
}

void launch_gemv(const float* x, std::int64_t n, const Weight& w, const float* bias, bool gelu,
                 const float* add, float* residual, float* y, int threads, const Enqueue& q) {
  if (n <= 0 || w.rows == 0) return;
  if (n > kGemvMaxTokens)
    throw std::invalid_argument("launch_gemv: " + std::to_string(n) + " tokens, at most " +
                                std::to_string(kGemvMaxTokens));
  const Epilogue e{bias, gelu, add, residual};
  switch (w.dtype) {
    case DType::F32:
      return gemv_tokens<DType::F32>(x, n, w, e, y, threads, q);
    case DType::BF16:
      return gemv_tokens<DType::BF16>(x, n, w, e, y, threads, q);
    case DType::F16:
      return gemv_tokens<DType::F16>(x, n, w, e, y, threads, q);
    case DType::I8:
      return gemv_tokens<DType::I8>(x, n, w, e, y, threads, q);
    case DType::F8E4M3:
      return gemv_tokens<DType::F8E4M3>(x, n, w, e, y, threads, q);
  }
  throw std::invalid_argument("launch_gemv: unknown weight dtype");
}

}  // namespace saker::cuda
