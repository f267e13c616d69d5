// CUDA device discovery (usable without a GPU: reports zero devices).
#pragma once

#include <string>

namespace saker::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no GPU.
int device_count();

// "NAME, N GiB, sm_XY" for device `index`, or the CUDA error text.
std::string device_description(int index);

}  // namespace saker::cuda
