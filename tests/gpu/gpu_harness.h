// Helpers of the CUDA backend tests: random inputs, host <-> device copies, NaN poisoning of
// outputs (so an element a kernel forgets to write shows as NaN), and error measures.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_backend.h"

namespace saker::gpu_test {

// tests/fixtures: $SAKER_FIXTURES_DIR, else the source tree's, else ./tests/fixtures (a packed
// test binary run from a checkout elsewhere).
inline std::filesystem::path fixtures_root() {
  if (const char* env = std::getenv("SAKER_FIXTURES_DIR")) return env;
  if (std::filesystem::exists(SAKER_SOURCE_FIXTURES_DIR)) return SAKER_SOURCE_FIXTURES_DIR;
  return std::filesystem::path("tests") / "fixtures";
}

// One backend shared by the kernel tests; released by main before the CUDA runtime shuts down
// (a static destructor would run after it).
inline std::unique_ptr<cuda::CudaBackend>& shared_backend_slot() {
  static std::unique_ptr<cuda::CudaBackend> backend;
  return backend;
}
inline cuda::CudaBackend& shared_backend() {
  auto& slot = shared_backend_slot();
  if (!slot) slot = std::make_unique<cuda::CudaBackend>();
  return *slot;
}

inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A weight in host memory in its stored dtype (values rounded from random fp32).
struct HostWeight {
  DType dtype = DType::F32;
  std::int64_t rows = 0, cols = 0;
  std::vector<std::byte> bytes;
  Weight view() const { return Weight{dtype, bytes.data(), rows, cols}; }
};

inline std::uint16_t f32_to_f16_bits(float f) {
  // Through the hardware-free path: float -> half by the CUDA host intrinsics is not available in
  // plain C++, so round via _Float16 where GCC provides it.
  const _Float16 h = static_cast<_Float16>(f);
  std::uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

inline HostWeight random_weight(DType dtype, std::int64_t rows, std::int64_t cols,
                                std::uint32_t seed, float scale = 1.0f) {
  HostWeight w{dtype, rows, cols, {}};
  const auto n = static_cast<std::size_t>(rows * cols);
  const auto v = random_floats(n, seed, -scale, scale);
  w.bytes.resize(n * dtype_size(dtype));
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(w.bytes.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t b = dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16_bits(v[i]);
      std::memcpy(w.bytes.data() + 2 * i, &b, 2);
    }
  }
  return w;
}

inline std::vector<float> download(cuda::CudaBackend& b, const float* d, std::size_t n) {
  std::vector<float> h(n);
  b.download(d, n, h.data());
  return h;
}

// Fills device floats with NaN (all bits set).
inline void poison(cuda::CudaBackend& b, float* d, std::size_t n) {
  SAKER_CUDA_CHECK(cudaMemsetAsync(d, 0xff, n * sizeof(float), b.stream()));
}

struct Diff {
  double max_abs = 0;     // max |got - want|
  double ref_scale = 0;   // max |want|
  std::size_t nans = 0;   // NaN or inf in got where want is finite
  std::size_t worst = 0;  // index of max_abs
  double rel() const { return ref_scale > 0 ? max_abs / ref_scale : max_abs; }
};

inline Diff compare(std::span<const float> got, std::span<const float> want) {
  Diff d;
  for (std::size_t i = 0; i < want.size(); ++i) {
    d.ref_scale = std::max(d.ref_scale, std::fabs(static_cast<double>(want[i])));
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      ++d.nans;
      continue;
    }
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (e > d.max_abs) {
      d.max_abs = e;
      d.worst = i;
    }
  }
  return d;
}

inline std::string describe(const Diff& d) {
  return "max abs error " + std::to_string(d.max_abs) + " at " + std::to_string(d.worst) +
         ", relative " + std::to_string(d.rel()) + ", non-finite " + std::to_string(d.nans);
}

}  // namespace saker::gpu_test
