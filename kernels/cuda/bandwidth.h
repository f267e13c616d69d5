// Memory bandwidth of the current GPU, measured (GB/s = 1e9 bytes per second; median of reps).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

namespace saker::cuda {

// Median seconds of `reps` runs of `op` on `stream` (timed with events), after one warm-up run.
double median_seconds(int reps, cudaStream_t stream, const std::function<void()>& op);

// Bytes read by a streaming kernel per second: the rate a weight-streaming decode step can reach.
double measure_read_bandwidth(std::size_t bytes, int reps);
// cudaMemcpy device to device, counting the bytes read and written.
double measure_copy_bandwidth(std::size_t bytes, int reps);
// cudaMemcpy from pinned host memory to the device.
double measure_host_to_device_bandwidth(std::size_t bytes, int reps);

}  // namespace saker::cuda
