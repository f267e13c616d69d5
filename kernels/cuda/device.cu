#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

namespace saker::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_description(int index) {
  cudaDeviceProp p{};
  if (const cudaError_t e = cudaGetDeviceProperties(&p, index); e != cudaSuccess)
    return cudaGetErrorString(e);
  return std::string(p.name) + ", " + std::to_string(p.totalGlobalMem >> 30) + " GiB, sm_" +
         std::to_string(p.major) + std::to_string(p.minor);
}

}  // namespace saker::cuda
