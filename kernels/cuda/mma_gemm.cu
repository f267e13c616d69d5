// Skinny products on tensor cores, for steps of 1 to kMmaMaxTokens tokens on bf16/fp16 weights:
// y[t, r] = dot(w[r, :], x[t, :]) (+ bias, GELU, + add; residual += y), one kernel per call.
//
// The GEMV (gemv.cu) does one FMA per weight element and token, so from about 8 tokens it is bound
// by arithmetic and L1 reads rather than by the weight stream, and cuBLASLt's tiles are made for
// larger products. Here a block owns 16 rows (MT tiles of them) and streams them once for all
// tokens with mma.sync.m16n8k16 (fp32 accumulation): its 4 warps take every 4th chunk of 64
// elements, interleaved, so together they read each row front to back. The k order inside a
// chunk is permuted so that each lane loads 16 contiguous elements of a row
// (kernels/cuda/mma_layout.h, tested on the host). The fp32 activations are split in registers
// into hi + lo half-precision parts (x = hi + lo to about 16 bits), two mma per step, which
// keeps the product close to fp32 accuracy, as the cuBLASLt path's split does. Always: the
// kernel is bound by the weight stream, and it replaces the fp32 GEMV at 1 to 8 tokens.
//
// Batch invariance: a warp adds its chunks in increasing k, hi then lo in each step, and the four
// warps' sums meet in warp order, whatever the number of tokens or rows per block. So every row
// comes out bit for bit the same in a step of 1 token or of 64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma_layout.h"

namespace saker::cuda {
namespace {

using mma::kChunk;
using mma::kMmaWarps;

template <DType D>
__device__ __forceinline__ void mma_step(float (&c)[4], const std::uint32_t (&a)[4],
                                         std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (D == DType::BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

__device__ __forceinline__ std::uint32_t word(const uint4 (&v)[2], int i) {
  const uint4& q = v[i / 4];
  switch (i % 4) {
    case 0:
      return q.x;
    case 1:
      return q.y;
    case 2:
      return q.z;
    default:
      return q.w;
  }
}

// Two fp32 values → their hi and lo parts in the weights' type, packed low element first.
template <DType D>
__device__ __forceinline__ void split_pair(float a, float b, std::uint32_t& hi, std::uint32_t& lo) {
  if constexpr (D == DType::BF16) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    const float2 hf = __bfloat1622float2(h);
    const __nv_bfloat162 l = __floats2bfloat162_rn(__fsub_rn(a, hf.x), __fsub_rn(b, hf.y));
    hi = *reinterpret_cast<const std::uint32_t*>(&h);
    lo = *reinterpret_cast<const std::uint32_t*>(&l);
  } else {
    const __half2 h = __floats2half2_rn(a, b);
    const float2 hf = __half22float2(h);
    const __half2 l = __floats2half2_rn(__fsub_rn(a, hf.x), __fsub_rn(b, hf.y));
    hi = *reinterpret_cast<const std::uint32_t*>(&h);
    lo = *reinterpret_cast<const std::uint32_t*>(&l);
  }
}

// NT: 8-token tiles (n <= 8 NT); MT: 16-row tiles per block. One block of kMmaWarps warps per
// 16 MT rows.
// w: [N, K] (K % 8 == 0, 16-byte aligned); x: [n, K] fp32, 16-byte aligned.
template <DType D, int NT, int MT>
__global__ void __launch_bounds__(kMmaWarps * 32)
    skinny_mma_kernel(const float* __restrict__ x, int n, const void* __restrict__ w,
                      std::int64_t N, std::int64_t K, const float* __restrict__ bias, bool gelu,
                      const float* __restrict__ add, float* residual, float* __restrict__ y) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = mma::group(lane), t = mma::thread_in_group(lane);
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * (mma::kTileRows * MT);
  const auto* wb = static_cast<const std::uint16_t*>(w);
  const std::int64_t chunks = (K + kChunk - 1) / kChunk;
  const std::int64_t lane_k = mma::kLaneElems * t;  // this lane's first element of a chunk

  // This lane's rows: tile mt, half rh (group g or g + 8). A row past N re-reads row N - 1 (its
  // result is not written), so every load is in bounds.
  const std::uint16_t* rows[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const std::int64_t r = row0 + mt * mma::kTileRows + g + 8 * rh;
      rows[mt][rh] = wb + (r < N ? r : N - 1) * K;
    }

  // 16 bytes at element k of each row, zeros past K (a multiple of 8: no load straddles it).
  auto load_weights = [&](std::int64_t c, uint4(&dst)[MT][2][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int rh = 0; rh < 2; ++rh)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const std::int64_t k = c + lane_k + 8 * q;
          dst[mt][rh][q] = k < K ? __ldcs(reinterpret_cast<const uint4*>(rows[mt][rh] + k))
                                 : make_uint4(0, 0, 0, 0);
        }
  };

  uint4 wcur[MT][2][2], wnext[MT][2][2];
  if (warp < chunks) load_weights(warp * kChunk, wcur);  // weights never change: before waiting
  pdl_enter();

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][j][i] = 0.0f;

  for (std::int64_t ci = warp; ci < chunks; ci += kMmaWarps) {
    const std::int64_t c = ci * kChunk;
    const bool more = ci + kMmaWarps < chunks;
    if (more) load_weights(c + kMmaWarps * kChunk, wnext);  // the next chunk while this one runs
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int token = j * mma::kTileTokens + g;
      // The token's 16 elements: hi and lo parts as 8 words each (word i = elements 2i, 2i + 1).
      uint4 xh[2], xl[2];
      std::uint32_t hw[8], lw[8];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const std::int64_t k = c + lane_k + 4 * q;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (token < n && k < K)
          v = __ldg(reinterpret_cast<const float4*>(x + static_cast<std::int64_t>(token) * K + k));
        split_pair<D>(v.x, v.y, hw[2 * q], lw[2 * q]);
        split_pair<D>(v.z, v.w, hw[2 * q + 1], lw[2 * q + 1]);
      }
      xh[0] = make_uint4(hw[0], hw[1], hw[2], hw[3]);
      xh[1] = make_uint4(hw[4], hw[5], hw[6], hw[7]);
      xl[0] = make_uint4(lw[0], lw[1], lw[2], lw[3]);
      xl[1] = make_uint4(lw[4], lw[5], lw[6], lw[7]);
#pragma unroll
      for (int s = 0; s < mma::kSteps; ++s) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          std::uint32_t a[4];
#pragma unroll
          for (int reg = 0; reg < 4; ++reg)
            a[reg] = word(wcur[mt][mma::a_reg_row(reg)], mma::lane_word(s, mma::a_reg_khalf(reg)));
          mma_step<D>(acc[mt][j], a, word(xh, mma::lane_word(s, 0)),
                      word(xh, mma::lane_word(s, 1)));
          mma_step<D>(acc[mt][j], a, word(xl, mma::lane_word(s, 0)),
                      word(xl, mma::lane_word(s, 1)));
        }
      }
    }
    if (more) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int rh = 0; rh < 2; ++rh)
#pragma unroll
          for (int q = 0; q < 2; ++q) wcur[mt][rh][q] = wnext[mt][rh][q];
    }
  }

  // The warps' sums meet tile by tile in warp order; warp 0 finishes each output (the GEMV's
  // epilogue and rounding: y = fl(fl(fl(dot) + bias) + add), residual = fl(residual + y)).
  __shared__ float partial[kMmaWarps][4][32];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      __syncthreads();  // the previous tile's reads are done
#pragma unroll
      for (int i = 0; i < 4; ++i) partial[warp][i][lane] = acc[mt][j][i];
      __syncthreads();
      if (warp == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const std::int64_t row = row0 + mt * mma::kTileRows + mma::c_row(lane, i);
          const int token = j * mma::kTileTokens + mma::c_token(lane, i);
          if (row >= N || token >= n) continue;
          float s = partial[0][i][lane];
#pragma unroll
          for (int v = 1; v < kMmaWarps; ++v) s = __fadd_rn(s, partial[v][i][lane]);
          const std::int64_t o = static_cast<std::int64_t>(token) * N + row;
          if (bias) s = __fadd_rn(s, bias[row]);
          if (gelu) s = gelu_erf(s);
          if (add) s = __fadd_rn(s, add[o]);
          y[o] = s;
          if (residual) residual[o] = __fadd_rn(residual[o], s);
        }
      }
    }
}

template <DType D, int NT, int MT>
void launch_tiles(const float* x, int n, const Weight& w, const MmaEpilogue& e, float* y,
                  const Enqueue& q) {
  constexpr std::int64_t kRows = mma::kTileRows * MT;
  const auto blocks = static_cast<unsigned>((w.rows + kRows - 1) / kRows);
  enqueue(q, blocks, kMmaWarps * 32, 0, skinny_mma_kernel<D, NT, MT>, "skinny_mma_kernel", x, n,
          w.data, w.rows, w.cols, e.bias, e.gelu, e.add, e.residual, y);
}

template <DType D>
void launch_typed(const float* x, int n, const Weight& w, const MmaEpilogue& e, float* y,
                  const Enqueue& q) {
  // One tile of rows per block up to 16 tokens; two from 17, where the activations' reads per
  // weight byte (n per 8 rows) would otherwise outgrow the weights'. Rows per block change no sum.
  if (n <= 8) return launch_tiles<D, 1, 1>(x, n, w, e, y, q);
  if (n <= 16) return launch_tiles<D, 2, 1>(x, n, w, e, y, q);
  if (n <= 32) return launch_tiles<D, 4, 2>(x, n, w, e, y, q);
  return launch_tiles<D, 8, 2>(x, n, w, e, y, q);
}

}  // namespace

bool mma_supported(const Weight& w, const float* x) {
  return (w.dtype == DType::BF16 || w.dtype == DType::F16) && w.cols % 8 == 0 && w.cols > 0 &&
         reinterpret_cast<std::uintptr_t>(w.data) % 16 == 0 &&
         reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
}

void launch_skinny_mma(const float* x, std::int64_t n, const Weight& w, const MmaEpilogue& e,
                       float* y, const Enqueue& q) {
  if (n <= 0 || w.rows == 0) return;
  if (!mma_supported(w, x))
    throw std::invalid_argument(
        "launch_skinny_mma: bf16 or fp16 weights with K % 8 == 0 and 16-byte aligned operands");
  if (n > kMmaMaxTokens)
    throw std::invalid_argument("launch_skinny_mma: " + std::to_string(n) + " tokens, at most " +
                                std::to_string(kMmaMaxTokens));
  const int tokens = static_cast<int>(n);
  if (w.dtype == DType::BF16)
    launch_typed<DType::BF16>(x, tokens, w, e, y, q);
  else
    launch_typed<DType::F16>(x, tokens, w, e, y, q);
}

}  // namespace saker::cuda
