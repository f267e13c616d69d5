// Memory bandwidth of the current GPU, measured (GB/s = 1e9 bytes per second; median of reps).
#pragma once

#include <cstddef>

namespace saker::cuda {

// Bytes read by a streaming kernel per second: the rate a weight-streaming decode step can reach.
double measure_read_bandwidth(std::size_t bytes, int reps);
// cudaMemcpy device to device, counting the bytes read and written.
double measure_copy_bandwidth(std::size_t bytes, int reps);
// cudaMemcpy from pinned host memory to the device.
double measure_host_to_device_bandwidth(std::size_t bytes, int reps);

}  // namespace saker::cuda
