// Float math for the CPU kernels in three forms that round identically: portable scalar, AVX2
// (8 lanes) and AVX-512 (16 lanes). Each form is the same sequence of IEEE operations per element
// (explicit FMAs, correctly rounded division, no approximate reciprocals), so a kernel gives the
// same bits whichever path runs it.
#pragma once

// GCC 12's AVX-512 intrinsics start from a self-initialised "undefined" vector and warn about it
// wherever they are inlined (GCC bug 105593); nothing reads an uninitialised value. The warnings
// point into the intrinsics header, so ignoring them around its inclusion is enough.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <bit>
#include <cmath>
#include <cstdint>

#define SAKER_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SAKER_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace saker::cpu::vm {

// exp: x = k ln2 + r with |r| <= ln2 / 2 (FMA Cody-Waite), e^r by a degree-6 polynomial fitted
// for relative error (3e-9 before float rounding), times 2^k built in the exponent bits.
inline constexpr float kLog2e = 1.442695022e+00f;
inline constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
inline constexpr float kLn2Hi = 6.931471825e-01f;
inline constexpr float kLn2Lo = -1.904654300e-09f;
inline constexpr float kExp2 = 4.999999404e-01f;
inline constexpr float kExp3 = 1.666652113e-01f;
inline constexpr float kExp4 = 4.166838899e-02f;
inline constexpr float kExp5 = 8.368710056e-03f;
inline constexpr float kExp6 = 1.381461276e-03f;
// Below this e^x is flushed to 0: 2^k stays a normal number, and weights under 1e-38 next to
// the softmax maximum's 1 do not matter.
inline constexpr float kExpMin = -87.0f;

// GELU(x) = x/2 * (1 + erf(x / sqrt 2)) as c(x) = 1 + erf(x / sqrt 2) in two regions of |x|:
// - below kGeluSplit, erf(x / sqrt 2) = x * S(x^2), S fitted for relative error in c (1e-9);
// - above, erfc(|x| / sqrt 2) = exp(-x^2 / 2) * N(|x|) / D(|x|) (Mills ratio, fitted to 6e-10
//   relative), with x^2 split exactly into h + l so that the exponent carries no rounding error;
//   c = erfc for x < 0 (no cancellation, unlike 1 + erf) and 2 - erfc for x > 0.
inline constexpr float kGeluSplit = 0.75f;
inline constexpr float kGeluClamp = 16.0f;  // past this, c is exactly 0 or 2 (e^-128 flushes)
inline constexpr float kErfS0 = 7.978845239e-01f;
inline constexpr float kErfS1 = -1.329803169e-01f;
inline constexpr float kErfS2 = 1.994301565e-02f;
inline constexpr float kErfS3 = -2.358646132e-03f;
inline constexpr float kErfS4 = 2.028163581e-04f;
inline constexpr float kErfcN0 = 1.000010610e+00f;
inline constexpr float kErfcN1 = 9.271431565e-01f;
inline constexpr float kErfcN2 = 4.075378180e-01f;
inline constexpr float kErfcN3 = 9.616561234e-02f;
inline constexpr float kErfcN4 = 1.084523462e-02f;
inline constexpr float kErfcD1 = 1.725099683e+00f;
inline constexpr float kErfcD2 = 1.283745646e+00f;
inline constexpr float kErfcD3 = 5.242831111e-01f;
inline constexpr float kErfcD4 = 1.205289662e-01f;
inline constexpr float kErfcD5 = 1.359242946e-02f;

// max as MAXPS computes it (the first operand when it is larger, else the second; so a NaN in
// `b` wins), which every form uses so that even NaNs and signed zeros agree.
inline float max_ps(float a, float b) {
  return a > b ? a : b;
}

// --- portable ------------------------------------------------------------------------------------

// e^x for x <= 0 (0 below kExpMin; NaN stays NaN).
inline float exp_nonpos(float x) {
  const float kf = std::fma(x, kLog2e, kRound);
  const float k = kf - kRound;
  float r = std::fma(k, -kLn2Hi, x);
  r = std::fma(k, -kLn2Lo, r);
  float p = std::fma(kExp6, r, kExp5);
  p = std::fma(p, r, kExp4);
  p = std::fma(p, r, kExp3);
  p = std::fma(p, r, kExp2);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const std::uint32_t bits =
      (std::bit_cast<std::uint32_t>(kf) - std::bit_cast<std::uint32_t>(kRound) + 127u) << 23;
  const float y = p * std::bit_cast<float>(bits);
  return x < kExpMin ? 0.0f : y;
}

inline float gelu(float x) {
  const float a = std::bit_cast<float>(std::bit_cast<std::uint32_t>(x) & 0x7fffffffu);
  const float u = x * x;
  float s = std::fma(kErfS4, u, kErfS3);
  s = std::fma(s, u, kErfS2);
  s = std::fma(s, u, kErfS1);
  s = std::fma(s, u, kErfS0);
  const float c_small = std::fma(x, s, 1.0f);

  const float ac = a < kGeluClamp ? a : kGeluClamp;
  const float h = ac * ac;
  const float l = std::fma(ac, ac, -h);
  float e = exp_nonpos(-0.5f * h);
  e = std::fma(-0.5f * l, e, e);  // e^(-l/2) = 1 - l/2 to float precision
  float n = std::fma(kErfcN4, ac, kErfcN3);
  n = std::fma(n, ac, kErfcN2);
  n = std::fma(n, ac, kErfcN1);
  n = std::fma(n, ac, kErfcN0);
  float d = std::fma(kErfcD5, ac, kErfcD4);
  d = std::fma(d, ac, kErfcD3);
  d = std::fma(d, ac, kErfcD2);
  d = std::fma(d, ac, kErfcD1);
  d = std::fma(d, ac, 1.0f);
  const float erfc = e * (n / d);
  const float c_big = x < 0.0f ? erfc : 2.0f - erfc;

  const float c = a < kGeluSplit ? c_small : c_big;
  const float xm = x < -kGeluClamp ? -kGeluClamp : x;  // gelu(-inf) = -0, not -inf * 0
  return (0.5f * xm) * c;
}

// --- AVX2 ----------------------------------------------------------------------------------------

SAKER_TARGET_AVX2 inline __m256 exp_nonpos(__m256 x) {
  const __m256 round = _mm256_set1_ps(kRound);
  const __m256 kf = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), round);
  const __m256 k = _mm256_sub_ps(kf, round);
  __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kExp6), r, _mm256_set1_ps(kExp5));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExp4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExp3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExp2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(kf), _mm256_castps_si256(round)),
                       _mm256_set1_epi32(127)),
      23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_LT_OQ);
  return _mm256_andnot_ps(under, y);
}

SAKER_TARGET_AVX2 inline __m256 gelu(__m256 x) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 u = _mm256_mul_ps(x, x);
  __m256 s = _mm256_fmadd_ps(_mm256_set1_ps(kErfS4), u, _mm256_set1_ps(kErfS3));
  s = _mm256_fmadd_ps(s, u, _mm256_set1_ps(kErfS2));
  s = _mm256_fmadd_ps(s, u, _mm256_set1_ps(kErfS1));
  s = _mm256_fmadd_ps(s, u, _mm256_set1_ps(kErfS0));
  const __m256 c_small = _mm256_fmadd_ps(x, s, _mm256_set1_ps(1.0f));

  const __m256 clamp = _mm256_set1_ps(kGeluClamp);
  const __m256 ac = _mm256_blendv_ps(clamp, a, _mm256_cmp_ps(a, clamp, _CMP_LT_OQ));
  const __m256 h = _mm256_mul_ps(ac, ac);
  const __m256 l = _mm256_fmsub_ps(ac, ac, h);
  const __m256 minus_half = _mm256_set1_ps(-0.5f);
  __m256 e = exp_nonpos(_mm256_mul_ps(minus_half, h));
  e = _mm256_fmadd_ps(_mm256_mul_ps(minus_half, l), e, e);
  __m256 n = _mm256_fmadd_ps(_mm256_set1_ps(kErfcN4), ac, _mm256_set1_ps(kErfcN3));
  n = _mm256_fmadd_ps(n, ac, _mm256_set1_ps(kErfcN2));
  n = _mm256_fmadd_ps(n, ac, _mm256_set1_ps(kErfcN1));
  n = _mm256_fmadd_ps(n, ac, _mm256_set1_ps(kErfcN0));
  __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(kErfcD5), ac, _mm256_set1_ps(kErfcD4));
  d = _mm256_fmadd_ps(d, ac, _mm256_set1_ps(kErfcD3));
  d = _mm256_fmadd_ps(d, ac, _mm256_set1_ps(kErfcD2));
  d = _mm256_fmadd_ps(d, ac, _mm256_set1_ps(kErfcD1));
  d = _mm256_fmadd_ps(d, ac, _mm256_set1_ps(1.0f));
  const __m256 erfc = _mm256_mul_ps(e, _mm256_div_ps(n, d));
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 c_big = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc), erfc, neg);

  const __m256 c =
      _mm256_blendv_ps(c_big, c_small, _mm256_cmp_ps(a, _mm256_set1_ps(kGeluSplit), _CMP_LT_OQ));
  const __m256 low = _mm256_set1_ps(-kGeluClamp);
  const __m256 xm = _mm256_blendv_ps(x, low, _mm256_cmp_ps(x, low, _CMP_LT_OQ));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), xm), c);
}

// --- AVX-512 -------------------------------------------------------------------------------------

SAKER_TARGET_AVX512 inline __m512 exp_nonpos(__m512 x) {
  const __m512 round = _mm512_set1_ps(kRound);
  const __m512 kf = _mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), round);
  const __m512 k = _mm512_sub_ps(kf, round);
  __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-kLn2Hi), x);
  r = _mm512_fmadd_ps(k, _mm512_set1_ps(-kLn2Lo), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kExp6), r, _mm512_set1_ps(kExp5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExp4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExp3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExp2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_maskz_slli_epi32(
      0xffff,
      _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(kf), _mm512_castps_si512(round)),
                       _mm512_set1_epi32(127)),
      23);
  const __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
  const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
}

SAKER_TARGET_AVX512 inline __m512 gelu(__m512 x) {
  const __m512 a = _mm512_abs_ps(x);
  const __m512 u = _mm512_mul_ps(x, x);
  __m512 s = _mm512_fmadd_ps(_mm512_set1_ps(kErfS4), u, _mm512_set1_ps(kErfS3));
  s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(kErfS2));
  s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(kErfS1));
  s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(kErfS0));
  const __m512 c_small = _mm512_fmadd_ps(x, s, _mm512_set1_ps(1.0f));

  const __m512 clamp = _mm512_set1_ps(kGeluClamp);
  const __m512 ac = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, clamp, _CMP_LT_OQ), clamp, a);
  const __m512 h = _mm512_mul_ps(ac, ac);
  const __m512 l = _mm512_fmsub_ps(ac, ac, h);
  const __m512 minus_half = _mm512_set1_ps(-0.5f);
  __m512 e = exp_nonpos(_mm512_mul_ps(minus_half, h));
  e = _mm512_fmadd_ps(_mm512_mul_ps(minus_half, l), e, e);
  __m512 n = _mm512_fmadd_ps(_mm512_set1_ps(kErfcN4), ac, _mm512_set1_ps(kErfcN3));
  n = _mm512_fmadd_ps(n, ac, _mm512_set1_ps(kErfcN2));
  n = _mm512_fmadd_ps(n, ac, _mm512_set1_ps(kErfcN1));
  n = _mm512_fmadd_ps(n, ac, _mm512_set1_ps(kErfcN0));
  __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(kErfcD5), ac, _mm512_set1_ps(kErfcD4));
  d = _mm512_fmadd_ps(d, ac, _mm512_set1_ps(kErfcD3));
  d = _mm512_fmadd_ps(d, ac, _mm512_set1_ps(kErfcD2));
  d = _mm512_fmadd_ps(d, ac, _mm512_set1_ps(kErfcD1));
  d = _mm512_fmadd_ps(d, ac, _mm512_set1_ps(1.0f));
  const __m512 erfc = _mm512_mul_ps(e, _mm512_div_ps(n, d));
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 c_big = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), erfc), erfc);

  const __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(kGeluSplit), _CMP_LT_OQ);
  const __m512 c = _mm512_mask_blend_ps(small, c_big, c_small);
  const __m512 low = _mm512_set1_ps(-kGeluClamp);
  const __m512 xm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, low, _CMP_LT_OQ), x, low);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), xm), c);
}

}  // namespace saker::cpu::vm
