// The KV cache's element types on the device (KvLayer::dtype): what kv_write stores and what
// attention reads back, bit for bit the CPU backend's (kernels/cpu/ops.cpp store_head,
// kernels/cpu/attention.cpp widen). Narrowing calls kernels/dtype.h's own conversions; widening
// is exact for every type, and an 8-bit code is multiplied by its vector's scale in one rounding.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace saker::cuda {

template <DType D>
struct KvElem;
template <>
struct KvElem<DType::F32> {
  using T = float;
};
template <>
struct KvElem<DType::BF16> {
  using T = std::uint16_t;
};
template <>
struct KvElem<DType::F16> {
  using T = std::uint16_t;
};
template <>
struct KvElem<DType::I8> {
  using T = std::int8_t;
};
template <>
struct KvElem<DType::F8E4M3> {
  using T = std::uint8_t;
};
template <DType D>
using KvT = typename KvElem<D>::T;

// Four consecutive elements: one 16-, 8- or 4-byte load when the row is aligned to it.
template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T e[4];
};

template <DType D>
__device__ __forceinline__ float kv_widen(KvT<D> c, float scale) {
  if constexpr (D == DType::F32) {
    return c;
  } else if constexpr (D == DType::BF16) {
    return __uint_as_float(static_cast<std::uint32_t>(c) << 16);
  } else if constexpr (D == DType::F16) {
    return __half2float(__ushort_as_half(c));
  } else if constexpr (D == DType::I8) {
    return __fmul_rn(static_cast<float>(c), scale);
  } else {
    return __fmul_rn(__half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3))), scale);
  }
}

// An element-wise type (F32, BF16, F16) from fp32, nearest even.
template <DType D>
__device__ __forceinline__ KvT<D> kv_narrow(float x) {
  if constexpr (D == DType::F32)
    return x;
  else if constexpr (D == DType::BF16)
    return f32_to_bf16(x);
  else
    return f32_to_f16(x);
}

// An 8-bit code of x / scale (scale > 0; 0 when scale is 0, an all-zero vector). int8 rounds to
// nearest even and clamps a rounding overshoot to +-127; NaN stores 0. e4m3 saturates at 448.
template <DType D>
__device__ __forceinline__ KvT<D> kv_code(float x, float scale) {
  const float y = scale > 0.0f ? __fdiv_rn(x, scale) : 0.0f;
  if constexpr (D == DType::I8) {
    const float r = isnan(y) ? 0.0f : fminf(fmaxf(rintf(y), -127.0f), 127.0f);
    return static_cast<std::int8_t>(r);
  } else {
    return f32_to_e4m3(y);
  }
}

}  // namespace saker::cuda
