// Owning handles for device and pinned host memory (RAII; freed on destruction).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "kernels/cuda/check.h"

namespace saker::cuda {

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }  // errors cannot be reported from here
};
struct PinnedFree {
  void operator()(void* p) const { cudaFreeHost(p); }
};

// `bytes` of device memory (cudaMalloc, 256-byte aligned), or empty for 0 bytes.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    void* p = nullptr;
    SAKER_CUDA_CHECK(cudaMalloc(&p, bytes));
    ptr_.reset(p);
  }
  void* get() const { return ptr_.get(); }
  std::size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_.get());
  }

 private:
  std::unique_ptr<void, DeviceFree> ptr_;
  std::size_t bytes_ = 0;
};

// `bytes` of page-locked host memory (cudaHostAlloc), or empty for 0 bytes.
class PinnedMemory {
 public:
  PinnedMemory() = default;
  explicit PinnedMemory(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    void* p = nullptr;
    SAKER_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
    ptr_.reset(p);
  }
  void* get() const { return ptr_.get(); }
  std::size_t bytes() const { return bytes_; }

 private:
  std::unique_ptr<void, PinnedFree> ptr_;
  std::size_t bytes_ = 0;
};

}  // namespace saker::cuda
