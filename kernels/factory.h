// Which backend a process runs on, and what its hardware can do. The one place that knows which
// backends were built (SAKER_HAVE_CUDA): everything else asks here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "kernels/backend.h"

namespace saker {

class Communicator;

// "cuda", "cpu", or "" for the default: cuda when a GPU is visible and the CUDA backend is built,
// else cpu. std::invalid_argument naming the device otherwise; std::runtime_error when cuda is
// asked for and there is none. CUDA: the GPU of this process's local rank (modulo the visible
// GPUs). CPU: `threads` threads, attention scratch for max_context positions.
// What the backends take beyond the device: batch invariance (CudaOptions::batch_invariant; on
// the CPU, off lets bf16 dot products of 16 tokens or more take AMX tiles), random weights (CUDA
// only) and the CPU's matmul inputs.
struct DeviceOptions {
  bool batch_invariant = true;  // CudaOptions::batch_invariant, CpuBackend::set_batch_invariant
  bool random_weights = false;  // CudaOptions::synthetic_weights (benchmarks)
  // CPU: "fp32", "bf16" or "auto" (CpuBackend::set_bf16_dot; `--cpu-matmul`).
  std::string cpu_matmul = "auto";
};
std::unique_ptr<Backend> make_backend(const std::string& device, unsigned threads,
                                      std::int64_t max_context, const DeviceOptions& d = {});
// The communicator the model's collectives need on `backend` when `comm` has more than one rank,
// else null (use `comm` itself). On the CUDA backend (device pointers), by `kind` (`--comm`):
// "nccl" on the backend's stream; "mpi", `comm` staged through pinned host memory (ranks that
// share a GPU); "auto", nccl unless this node runs more ranks than it has GPUs. The CPU backend
// takes "mpi" and "auto" (its collectives are `comm`'s); "nccl" is an std::invalid_argument.
std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& comm,
                                                      const std::string& kind = "auto");
// Ranks of this job on this node, from the environment (1 outside mpirun).
int local_size();
// Processors this process may run on (its affinity set): the CPU backend's default threads.
unsigned usable_cpus();
// GPUs this process can see (0 without the CUDA backend).
int visible_gpus();
// This process's rank among the ranks of its node (0 outside mpirun), from the environment.
int local_rank();

// Memory read bandwidth (bytes per second) of the memory `backend` streams weights from.
double backend_read_bandwidth(Backend& backend, std::size_t bytes, int repeats);
// FP32 fused multiply-add peak (FLOP/s) of the CPU backend's threads, best of `repeats` runs;
// nullopt for a device.
std::optional<double> backend_fma_peak(Backend& backend, int repeats = 5);
// FMA rate (FLOP/s) of the CPU backend's threads over chains worth `flops` (cpu::fma_pass);
// nullopt for a device.
std::optional<double> backend_fma_rate(Backend& backend, double flops);
// Peak (FLOP/s) of the dot-product instruction the CPU backend's weights take (vdpbf16ps for
// `--cpu-matmul bf16`, vpdpbusd for `--dtype w8a8`), best of `repeats`; nullopt when they take
// fp32 FMAs, or for a device.
std::optional<double> backend_dot_peak(Backend& backend, int repeats = 5);
// Bandwidth (bytes per second) of a plain read of the weights the CPU backend holds, on their own
// pages: what a decode step's streaming is measured against. nullopt for a device.
std::optional<double> backend_weight_read_bandwidth(Backend& backend);

}  // namespace saker
