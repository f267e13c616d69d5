// Matrix products through cuBLASLt: D = A B^T for a row-major weight A [N, K] (bf16, fp16 or
// fp32) and row-major activations B [m, K] of the same type, D row-major [m, N] fp32, with fp32
// accumulation. The algorithm for each shape is chosen once by cuBLASLt's heuristic and cached;
// the workspace is allocated once.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/memory.h"
#include "kernels/dtype.h"

namespace saker::cuda {

class LtGemm {
 public:
  explicit LtGemm(std::size_t workspace_bytes = std::size_t{32} << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // d[j, i] = sum_k a[i, k] * b[j, k] for i < N, j < m; a and b both of `dtype`. Returns false
  // (and computes nothing) when cuBLASLt has no algorithm for the shape and alignments.
  bool run(DType dtype, const void* a, const void* b, float* d, std::int64_t N, std::int64_t m,
           std::int64_t K, cudaStream_t stream);

 private:
  struct Plan;
  // dtype, N, m, K and the alignments of a, b, d (the heuristic's algorithms depend on them).
  using Key = std::tuple<int, std::int64_t, std::int64_t, std::int64_t, int, int, int>;
  const Plan* plan(const Key& key);  // null: no algorithm

  cublasLtHandle_t handle_ = nullptr;
  DeviceMemory workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace saker::cuda
