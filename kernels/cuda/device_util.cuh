// Device helpers shared by the kernels: stored-precision loads, reductions, launch sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/dtype.h"

namespace saker::cuda {

// Stored-precision element → fp32.
__device__ __forceinline__ float bf16_bits_to_float(std::uint32_t bits16) {
  return __uint_as_float(bits16 << 16);
}

template <DType D>
__device__ __forceinline__ float load_element(const void* base, std::int64_t i) {
  if constexpr (D == DType::F32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (D == DType::BF16) {
    return bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]);
  } else {
    return __half2float(__ushort_as_half(static_cast<const std::uint16_t*>(base)[i]));
  }
}

// Runtime dtype form, for kernels that are not worth a template per dtype.
__device__ __forceinline__ float load_element(DType d, const void* base, std::int64_t i) {
  switch (d) {
    case DType::F32:
      return load_element<DType::F32>(base, i);
    case DType::BF16:
      return load_element<DType::BF16>(base, i);
    default:
      return load_element<DType::F16>(base, i);
  }
}

// Round to bf16 (nearest even) and back, as torch's .bfloat16() does.
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

__device__ __forceinline__ float gelu_erf(float v) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  // Written without contraction, as the CPU kernel computes it.
  return __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, erff(__fmul_rn(v, kInvSqrt2))));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total,
// summed in the same order on every thread.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with `partial`
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  const int warps = static_cast<int>(blockDim.x / 32);
  for (int w = 0; w < warps; ++w) total += partial[w];
  return total;
}

// Blocks for a grid-stride loop over `count` elements.
inline unsigned grid_for(std::int64_t count, int threads) {
  const std::int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, 65535LL * 16));
}

}  // namespace saker::cuda
