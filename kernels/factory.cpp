#include "kernels/factory.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/thread_pool.h"
#include "parallel/communicator.h"
#ifdef SAKER_HAVE_CUDA
#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "parallel/nccl_communicator.h"
#include "parallel/staged_communicator.h"
#endif

namespace saker {

unsigned usable_cpus() {
  return available_cpus();
}

int visible_gpus() {
#ifdef SAKER_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  return 0;
}

std::unique_ptr<Backend> make_backend(const std::string& device, unsigned threads,
                                      std::int64_t max_context, const DeviceOptions& d) {
  if (!device.empty() && device != "cuda" && device != "cpu")
    throw std::invalid_argument("device must be cuda or cpu, not '" + device + "'");
#ifdef SAKER_HAVE_CUDA
  const int gpus = cuda::device_count();
  if (device == "cuda" || (device.empty() && gpus > 0)) {
    if (gpus == 0) throw std::runtime_error("device cuda: no CUDA device is visible");
    cuda::CudaOptions o;
    o.device = local_rank() % gpus;
    o.batch_invariant = d.batch_invariant;
    o.synthetic_weights = d.random_weights;
    return std::make_unique<cuda::CudaBackend>(o);
  }
#else
  if (device == "cuda")
    throw std::runtime_error("device cuda: this saker was built without the CUDA backend");
#endif
  if (d.random_weights)
    throw std::invalid_argument("random weights are made on a CUDA device only (--device cuda)");
  if (d.cpu_matmul != "auto" && d.cpu_matmul != "fp32" && d.cpu_matmul != "bf16")
    throw std::invalid_argument("cpu_matmul must be auto, fp32 or bf16, not '" + d.cpu_matmul +
                                "'");
  // The dot-product kernels run on AVX-512 with AVX512_BF16 (SAKER_CPU_ISA may cap below it).
  const bool dot = cpu::has_avx512_bf16() && cpu::detect_isa() == cpu::Isa::kAvx512;
  if (d.cpu_matmul == "bf16" && !dot)
    throw std::invalid_argument("cpu_matmul bf16 needs a CPU with AVX512_BF16 (this one runs " +
                                std::string(cpu::isa_name(cpu::detect_isa())) +
                                "); use fp32 or auto");
  auto cpu = std::make_unique<CpuBackend>(threads, max_context);
  cpu->set_bf16_dot(d.cpu_matmul == "bf16" || (d.cpu_matmul == "auto" && dot));
  cpu->set_batch_invariant(d.batch_invariant);
  return cpu;
}

int local_size() {
  for (const char* name :
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(name)) return std::max(1, std::atoi(v));
  return 1;
}

std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& comm,
                                                      const std::string& kind) {
  if (kind != "auto" && kind != "nccl" && kind != "mpi")
    throw std::invalid_argument("comm must be auto, nccl or mpi, not '" + kind + "'");
#ifdef SAKER_HAVE_CUDA
  if (auto* gpu = dynamic_cast<cuda::CudaBackend*>(&backend)) {
    if (comm.size() == 1) return nullptr;
    // NCCL needs a GPU per rank: ranks sharing one go through the host.
    const bool shared = local_size() > visible_gpus();
    if (kind == "mpi" || (kind == "auto" && shared))
      return std::make_unique<HostStagedCommunicator>(comm, gpu->stream());
    return std::make_unique<NcclCommunicator>(comm, gpu->device(), gpu->stream());
  }
#endif
  (void)backend;
  (void)comm;
  if (kind == "nccl")
    throw std::invalid_argument("comm nccl is for the CUDA backend (device cuda)");
  return nullptr;
}

double backend_read_bandwidth(Backend& backend, std::size_t bytes, int repeats) {
#ifdef SAKER_HAVE_CUDA
  if (dynamic_cast<cuda::CudaBackend*>(&backend))
    return cuda::measure_read_bandwidth(bytes, repeats) * 1e9;
#endif
  if (auto* cpu = dynamic_cast<CpuBackend*>(&backend))
    return cpu::measure_read_bandwidth(cpu->pool(), bytes, repeats);
  throw std::logic_error("backend_read_bandwidth: unknown backend");
}

std::optional<double> backend_fma_peak(Backend& backend, int repeats) {
  if (auto* cpu = dynamic_cast<CpuBackend*>(&backend))
    return cpu::measure_fma_peak(cpu->pool(), repeats);
  return std::nullopt;
}

std::optional<double> backend_dot_peak(Backend& backend, int repeats) {
  auto* cpu = dynamic_cast<CpuBackend*>(&backend);
  if (!cpu || *cpu->dot_product() == '\0') return std::nullopt;
  return std::string(cpu->dot_product()) == "bf16"
             ? cpu::measure_bf16_dot_peak(cpu->pool(), repeats)
             : cpu::measure_int8_dot_peak(cpu->pool(), repeats);
}

std::optional<double> backend_fma_rate(Backend& backend, double flops) {
  auto* cpu = dynamic_cast<CpuBackend*>(&backend);
  if (!cpu) return std::nullopt;
  const auto t0 = std::chrono::steady_clock::now();
  const double done = cpu::fma_pass(cpu->pool(), flops);
  return done / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::optional<double> backend_weight_read_bandwidth(Backend& backend) {
  auto* cpu = dynamic_cast<CpuBackend*>(&backend);
  if (!cpu) return std::nullopt;
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t bytes = cpu->read_weights();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(bytes) / s;
}

}  // namespace saker
