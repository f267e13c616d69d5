// Element types of stored weights and KV caches. Activations are always fp32 on the CPU backend.
// I8 and F8E4M3 exist only as a backend's quantized form of a weight (`--dtype int8|fp8`) or a KV
// cache's
// (`--kv-cache-dtype int8`), F8E4M3 only as a KV cache's; neither is ever a checkpoint's dtype.
// The conversions are constexpr so that the CUDA kernels call this very code (nvcc
// --expt-relaxed-constexpr) and store the CPU backend's bits.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace saker {

enum class DType : std::uint8_t { F32, F16, BF16, I8, F8E4M3 };

constexpr std::size_t dtype_size(DType t) {
  return t == DType::F32 ? 4 : t == DType::I8 || t == DType::F8E4M3 ? 1 : 2;
}

// Names as safetensors spells them ("F32", "F16", "BF16").
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I8:
      return "I8";
    case DType::F8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

constexpr std::optional<DType> dtype_from_name(std::string_view s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  return std::nullopt;
}

constexpr float bf16_to_f32(std::uint16_t v) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(v) << 16);
}

// Round-to-nearest-even, as torch's .bfloat16() does (NaN kept quiet).
constexpr std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

constexpr float round_to_bf16(float f) {
  return bf16_to_f32(f32_to_bf16(f));
}

// IEEE binary16 → binary32, exact for every value including subnormals.
constexpr float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalise the mantissa.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    exp = static_cast<std::uint32_t>(127 - 15 - e);
    return std::bit_cast<float>(sign | (exp << 23) | (mant << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

// binary32 → binary16, round to nearest even (what F16C's vcvtps2ph and CUDA's __float2half_rn
// give): overflow to infinity, subnormals rounded, NaN kept quiet with its top payload bits.
constexpr std::uint16_t f32_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  // 65520 is halfway between the largest half (65504, odd mantissa) and 65536: it rounds up.
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (a >= 0x38800000u) {  // a normal half: rebias the exponent, round off 13 mantissa bits
    std::uint32_t r = a - (112u << 23);
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  // Below 2^-14: adding 0.5 (whose ulp is 2^-24, the half subnormal step) lets the FPU round
  // to nearest even; the bits above 0.5's are the half's (0x400 is the smallest normal).
  const float shifted = std::bit_cast<float>(a) + 0.5f;
  return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(shifted) - 0x3f000000u));
}

constexpr float round_to_f16(float f) {
  return f16_to_f32(f32_to_f16(f));
}

// --- fp8 e4m3, the finite-only variant (OCP's E4M3, NVIDIA's __nv_fp8_e4m3) -------------------
// 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN, so the largest
// finite value is 448 (S.1111.110). Subnormals (exponent 0) step by 2^-9.

inline constexpr float kE4m3Max = 448.0f;

// Exact: every e4m3 value is an fp32 value.
constexpr float e4m3_to_f32(std::uint8_t c) {
  const std::uint32_t sign = static_cast<std::uint32_t>(c & 0x80u) << 24;
  const std::uint32_t exp = (c >> 3) & 0xfu, mant = c & 0x7u;
  if (exp == 0xf && mant == 0x7) return std::bit_cast<float>(sign | 0x7fc00000u);
  // A subnormal is mant * 2^-9: an integer times a power of two, exact in fp32.
  if (exp == 0)
    return std::bit_cast<float>(sign |
                                std::bit_cast<std::uint32_t>(static_cast<float>(mant) * 0x1p-9f));
  return std::bit_cast<float>(sign | ((exp + 120u) << 23) | (mant << 20));
}

// Round to nearest even. Magnitudes from 448 up saturate to 448 rather than become NaN: a KV
// cache scales its vectors so that only a rounding overshoot of the largest element gets there.
// NaN stays NaN (S.1111.111).
constexpr std::uint8_t f32_to_e4m3(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);
  if (a >= 0x43e00000u) return static_cast<std::uint8_t>(sign | 0x7eu);  // >= 448
  if (a >= 0x3c800000u) {  // >= 2^-6, a normal e4m3: rebias, round off 20 mantissa bits
    std::uint32_t r = a - (120u << 23);
    r += 0x7ffffu + ((r >> 20) & 1u);
    return static_cast<std::uint8_t>(sign | (r >> 20));
  }
  // Below 2^-6: adding 2^14 (whose fp32 ulp is 2^-9, the e4m3 subnormal step) lets the FPU round
  // to nearest even; the bits above 2^14's count the steps (8 steps is the smallest normal).
  const float shifted = std::bit_cast<float>(a) + 0x1p14f;
  return static_cast<std::uint8_t>(sign | (std::bit_cast<std::uint32_t>(shifted) - 0x46800000u));
}

// The element types a KV cache may hold (EngineOptions::kv_cache_dtype).
constexpr bool is_kv_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::I8 ||
         t == DType::F8E4M3;
}

// A KV cache dtype as the option spells it (--kv-cache-dtype, option.kv_cache_dtype), except
// `auto`, which needs the checkpoint: fp32 (float32), bf16 (bfloat16), fp16 (float16),
// fp8_e4m3 (fp8), int8.
constexpr std::optional<DType> kv_dtype_from_option(std::string_view s) {
  if (s == "fp32" || s == "float32") return DType::F32;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "fp16" || s == "float16") return DType::F16;
  if (s == "fp8_e4m3" || s == "fp8") return DType::F8E4M3;
  if (s == "int8") return DType::I8;
  return std::nullopt;
}

// Whether a KV cache of this type keeps an fp32 scale per token per KV head (the 8-bit forms:
// element i of a head vector stands for widen(code_i) * scale).
constexpr bool kv_dtype_has_scales(DType t) {
  return t == DType::I8 || t == DType::F8E4M3;
}

// The largest code magnitude a KV vector's largest element maps to: scale = max|x| / this.
constexpr float kv_code_max(DType t) {
  return t == DType::I8 ? 127.0f : kE4m3Max;
}

}  // namespace saker
