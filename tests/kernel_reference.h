// Scalar double-precision references of the CPU kernels: the plainest reading of each formula
// in docs/falcon.md, with no blocking, vectorisation or threads.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace saker::ref {

// n normal(0, scale) floats: the random inputs of the kernel tests.
inline std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Row-major, stored precision (as a checkpoint holds it).
inline double weight_at(const Weight& w, std::int64_t r, std::int64_t k) {
  const std::int64_t i = r * w.cols + k;
  switch (w.dtype) {
    case DType::F32:
      return static_cast<const float*>(w.data)[i];
    case DType::BF16:
      return bf16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
    case DType::F16:
      return f16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
    case DType::I8:
    case DType::F8E4M3:
      break;
  }
  return 0;
}

// y[t, r] = sum_k x[t, k] w[r, k] + b[r]; also returns sum |x w| per output for error bounds.
inline void linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                   std::vector<double>& y, std::vector<double>& mag) {
  y.assign(static_cast<std::size_t>(n * w.rows), 0.0);
  mag.assign(y.size(), 0.0);
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double s = bias ? bias[r] : 0.0, m = bias ? std::fabs(bias[r]) : 0.0;
      for (std::int64_t k = 0; k < w.cols; ++k) {
        const double p = x[t * w.cols + k] * weight_at(w, r, k);
        s += p;
        m += std::fabs(p);
      }
      y[t * w.rows + r] = s;
      mag[t * w.rows + r] = m;
    }
}

inline std::vector<double> layer_norm(const float* x, std::int64_t n, std::int64_t dim,
                                      const float* g, const float* b, double eps) {
  std::vector<double> y(static_cast<std::size_t>(n * dim));
  for (std::int64_t r = 0; r < n; ++r) {
    double mean = 0, var = 0;
    for (std::int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
    mean /= dim;
    for (std::int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
    var /= dim;
    for (std::int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = (x[r * dim + i] - mean) / std::sqrt(var + eps) * g[i] + b[i];
  }
  return y;
}

inline double gelu(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}

// Rotate-half rotary of one head at position pos with base theta.
inline std::vector<double> rotary(const float* head, std::int64_t hd, std::int64_t pos,
                                  double theta) {
  std::vector<double> out(static_cast<std::size_t>(hd));
  const std::int64_t half = hd / 2;
  for (std::int64_t d = 0; d < half; ++d) {
    const double inv_freq = 1.0 / std::pow(theta, 2.0 * d / hd);
    const double a = pos * inv_freq, c = std::cos(a), s = std::sin(a);
    out[d] = head[d] * c - head[d + half] * s;
    out[d + half] = head[d + half] * c + head[d] * s;
  }
  return out;
}

// Causal attention of one query (head h of token row) over keys/values given per position.
inline std::vector<double> attention(const float* q, const std::vector<const float*>& keys,
                                     const std::vector<const float*>& values, std::int64_t hd,
                                     double alibi_slope, bool alibi) {
  const std::size_t n = keys.size();
  std::vector<double> s(n);
  double mx = -INFINITY;
  for (std::size_t j = 0; j < n; ++j) {
    double dot = 0;
    for (std::int64_t d = 0; d < hd; ++d) dot += double(q[d]) * keys[j][d];
    s[j] = dot / std::sqrt(double(hd));
    if (alibi) s[j] += alibi_slope * static_cast<double>(j) / std::sqrt(double(hd));
    mx = std::max(mx, s[j]);
  }
  double z = 0;
  for (auto& v : s) z += (v = std::exp(v - mx));
  std::vector<double> out(static_cast<std::size_t>(hd), 0.0);
  for (std::size_t j = 0; j < n; ++j)
    for (std::int64_t d = 0; d < hd; ++d) out[d] += s[j] / z * values[j][d];
  return out;
}

}  // namespace saker::ref
