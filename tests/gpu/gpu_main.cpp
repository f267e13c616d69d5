// The GPU tests' entry point: without a visible CUDA device they report themselves skipped (exit
// code 77, which CTest's SKIP_RETURN_CODE turns into "Skipped") and never fail.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>

#include "kernels/cuda/device.h"
#include "tests/gpu/gpu_harness.h"

int main(int argc, char* argv[]) {
  const int gpus = saker::cuda::device_count();
  if (gpus == 0) {
    std::cout << "SKIPPED: no CUDA device is visible; the CUDA backend tests need a GPU\n";
    return 77;
  }
  std::cout << "CUDA device 0: " << saker::cuda::device_description(0) << "\n";
  const int failed = Catch::Session().run(argc, argv);
  saker::gpu_test::shared_backend_slot().reset();
  return failed == 0 ? 0 : 1;  // never 77, which means skipped
}
