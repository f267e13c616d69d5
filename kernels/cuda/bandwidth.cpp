#include "kernels/cuda/bandwidth.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory.h"

namespace saker::cuda {

double median_seconds(int reps, cudaStream_t stream, const std::function<void()>& op) {
  cudaEvent_t start = nullptr, stop = nullptr;
  SAKER_CUDA_CHECK(cudaEventCreate(&start));
  SAKER_CUDA_CHECK(cudaEventCreate(&stop));
  const std::unique_ptr<CUevent_st, decltype(&cudaEventDestroy)> start_owner(start,
                                                                             &cudaEventDestroy);
  const std::unique_ptr<CUevent_st, decltype(&cudaEventDestroy)> stop_owner(stop,
                                                                            &cudaEventDestroy);
  op();
  SAKER_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> times;
  for (int i = 0; i < std::max(1, reps); ++i) {
    SAKER_CUDA_CHECK(cudaEventRecord(start, stream));
    op();
    SAKER_CUDA_CHECK(cudaEventRecord(stop, stream));
    SAKER_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SAKER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1e-3);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double measure_read_bandwidth(std::size_t bytes, int reps) {
  DeviceMemory data(bytes), sink(sizeof(float));
  SAKER_CUDA_CHECK(cudaMemset(data.get(), 1, bytes));
  const double s = median_seconds(
      reps, nullptr, [&] { launch_read_probe(data.get(), bytes, sink.as<float>(), nullptr); });
  return static_cast<double>(bytes) / s * 1e-9;
}

double measure_copy_bandwidth(std::size_t bytes, int reps) {
  DeviceMemory a(bytes), b(bytes);
  SAKER_CUDA_CHECK(cudaMemset(a.get(), 1, bytes));
  const double s = median_seconds(reps, nullptr, [&] {
    SAKER_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr));
  });
  return 2.0 * static_cast<double>(bytes) / s * 1e-9;
}

double measure_host_to_device_bandwidth(std::size_t bytes, int reps) {
  PinnedMemory host(bytes);
  DeviceMemory dev(bytes);
  const double s = median_seconds(reps, nullptr, [&] {
    SAKER_CUDA_CHECK(
        cudaMemcpyAsync(dev.get(), host.get(), bytes, cudaMemcpyHostToDevice, nullptr));
  });
  return static_cast<double>(bytes) / s * 1e-9;
}

}  // namespace saker::cuda
