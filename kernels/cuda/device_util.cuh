// Device helpers shared by the kernels: stored-precision loads, reductions, launch sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "kernels/dtype.h"

namespace saker::cuda {

// Stored-precision element → fp32.
__device__ __forceinline__ float bf16_bits_to_float(std::uint32_t bits16) {
  return __uint_as_float(bits16 << 16);
}

// An fp8 e4m3 code → fp32, exactly (through the hardware's fp8 → half conversion).
__device__ __forceinline__ float e4m3_code_to_float(std::uint8_t c) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3)));
}

// Element i as fp32; for the 8-bit weight codes (I8, F8E4M3) the code's value, before the row's
// scale.
template <DType D>
__device__ __forceinline__ float load_element(const void* base, std::int64_t i) {
  if constexpr (D == DType::F32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (D == DType::BF16) {
    return bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]);
  } else if constexpr (D == DType::I8) {
    return static_cast<float>(static_cast<const std::int8_t*>(base)[i]);
  } else if constexpr (D == DType::F8E4M3) {
    return e4m3_code_to_float(static_cast<const std::uint8_t*>(base)[i]);
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
    case DType::I8:
      return load_element<DType::I8>(base, i);
    case DType::F8E4M3:
      return load_element<DType::F8E4M3>(base, i);
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

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
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

// Programmatic dependent launch (Hopper). A kernel enqueued with Enqueue::pdl may start while the
// kernel before it on the stream is still running: before its first access to memory that an
// earlier kernel writes (or reads: a write must not overtake it), it waits here until the earlier
// kernels have finished and their writes are visible. Without PDL, or before sm_90, a no-op.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel (if enqueued with PDL) launch once every block of this one got here: its
// blocks take free multiprocessors and run up to their pdl_wait() while this kernel ends.
__device__ __forceinline__ void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Both, at the start of a kernel that reads nothing before it may depend on the previous one.
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_release();
}

// Launches `kernel` as `q` says, and checks the launch.
template <typename... Params, typename... Args>
void enqueue(const Enqueue& q, dim3 grid, dim3 block, std::size_t smem, void (*kernel)(Params...),
             const char* what, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = q.stream;
  cudaLaunchAttribute attr{};
  if (q.pdl) {
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
  }
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what, __FILE__, __LINE__);
}

// Blocks for a grid-stride loop over `count` elements.
inline unsigned grid_for(std::int64_t count, int threads) {
  const std::int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, 65535LL * 16));
}

}  // namespace saker::cuda
