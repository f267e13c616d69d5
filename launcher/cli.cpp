#include "launcher/cli.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/membw.h"
#include "kernels/cpu/thread_pool.h"
#include "parallel/world.h"
#ifdef SAKER_HAVE_CUDA
#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "parallel/nccl_communicator.h"
#endif

namespace saker::cli {

namespace {
MpiWorld* g_world = nullptr;
}  // namespace

void set_world(MpiWorld& world) {
  g_world = &world;
}

MpiWorld& world() {
  if (!g_world) throw std::logic_error("the MPI world is not set up");
  return *g_world;
}

bool parse(const std::vector<std::string>& args, const po::options_description& desc,
           po::variables_map& vm, const std::string& usage) {
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << usage << "\n" << desc << "\n";
    return false;
  }
  po::notify(vm);
  return true;
}

std::vector<std::int32_t> parse_token_ids(const std::string& text, std::int64_t vocab,
                                          const std::string& flag) {
  std::string s = text;
  for (char& ch : s)
    if (ch == ',') ch = ' ';
  std::istringstream in(s);
  std::vector<std::int32_t> ids;
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size()) throw UsageError(flag + ": '" + word + "' is not a token id");
    if (v < 0 || v >= vocab)
      throw UsageError(flag + ": token id " + word + " is outside the vocabulary [0, " +
                       std::to_string(vocab) + ")");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  if (ids.empty()) throw UsageError(flag + ": no token ids given");
  return ids;
}

// --dtype: auto and int8, or the checkpoint's own precision by name (a conversion would be
// silent otherwise).
WeightQuant parse_dtype(const std::string& d, const Checkpoint& ck) {
  if (d == "auto") return WeightQuant::kNone;
  if (d == "int8") return WeightQuant::kInt8;
  const TensorInfo* t = ck.find("transformer.word_embeddings.weight");
  const std::string stored = t ? std::string(dtype_name(t->dtype)) : "?";
  const std::string want = d == "bf16" || d == "bfloat16"  ? "BF16"
                           : d == "fp16" || d == "float16" ? "F16"
                           : d == "fp32" || d == "float32" ? "F32"
                                                           : "";
  if (want.empty())
    throw UsageError("--dtype must be auto, int8, bf16, fp16 or fp32, got '" + d + "'");
  if (want != stored)
    throw UsageError("--dtype " + d + ": the checkpoint stores " + stored +
                     " weights, and saker runs them as stored (--dtype auto) or as int8");
  return WeightQuant::kNone;
}

unsigned thread_count(int flag) {
  if (flag < 0) throw UsageError("--threads must be >= 0");
  if (flag > 0) return static_cast<unsigned>(flag);
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return static_cast<unsigned>(n);
  }
  // Ranks that share processors (mpirun --bind-to none) split them rather than each taking all:
  // two ranks of two threads on two cores ran a decode step in 72 ms, of one thread each in 51.
  return g_world ? g_world->cpu_share() : available_cpus();
}

int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  return 0;
}

std::unique_ptr<Backend> make_backend(const std::string& device, unsigned threads,
                                      std::int64_t max_context) {
  if (!device.empty() && device != "cuda" && device != "cpu")
    throw UsageError("--device must be cuda or cpu, not '" + device + "'");
#ifdef SAKER_HAVE_CUDA
  const int gpus = cuda::device_count();
  if (device == "cuda" || (device.empty() && gpus > 0)) {
    if (gpus == 0) throw std::runtime_error("--device cuda: no CUDA device is visible");
    cuda::CudaOptions o;
    o.device = local_rank() % gpus;
    return std::make_unique<cuda::CudaBackend>(o);
  }
#else
  if (device == "cuda")
    throw std::runtime_error("--device cuda: this saker was built without the CUDA backend");
#endif
  return std::make_unique<CpuBackend>(threads, max_context);
}

std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& comm) {
#ifdef SAKER_HAVE_CUDA
  if (auto* gpu = dynamic_cast<cuda::CudaBackend*>(&backend); gpu && comm.size() > 1)
    return std::make_unique<NcclCommunicator>(comm, gpu->device(), gpu->stream());
#else
  (void)backend;
  (void)comm;
#endif
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

}  // namespace saker::cli
