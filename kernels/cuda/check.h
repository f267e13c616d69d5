// Error checking for CUDA runtime and cuBLASLt calls: a failure throws std::runtime_error naming
// the call, its source line and the library's message, so the first run on a GPU says what broke.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace saker::cuda {

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + call + " (" + file + ":" +
                             std::to_string(line) + "): " + cudaGetErrorName(e) + ": " +
                             cudaGetErrorString(e));
}

inline void check(cublasStatus_t e, const char* call, const char* file, int line) {
  if (e != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt error in ") + call + " (" + file + ":" +
                             std::to_string(line) + "): status " +
                             std::to_string(static_cast<int>(e)));
}

}  // namespace saker::cuda

#define SAKER_CUDA_CHECK(call) ::saker::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: reports a bad launch configuration at once (execution errors surface at
// the next synchronising call).
#define SAKER_CUDA_LAUNCH_CHECK(what) \
  ::saker::cuda::check(cudaGetLastError(), what, __FILE__, __LINE__)
