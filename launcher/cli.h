// Shared pieces of the saker subcommands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "engine/model/checkpoint.h"
#include "kernels/backend.h"

namespace saker {
class Backend;
class Communicator;
class MpiWorld;
}  // namespace saker

namespace saker::cli {

// The process's MPI world (the one global the project allows), set once by main.
void set_world(MpiWorld& world);
MpiWorld& world();

namespace po = boost::program_options;

// A command-line mistake: printed with the subcommand's usage, exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses args into vm against desc; --help prints usage and returns false.
bool parse(const std::vector<std::string>& args, const po::options_description& desc,
           po::variables_map& vm, const std::string& usage);

// "1 2 3" or "1,2,3" → ids, each checked against [0, vocab).
std::vector<std::int32_t> parse_token_ids(const std::string& text, std::int64_t vocab,
                                          const std::string& flag);

// --dtype: "auto" (the checkpoint's precision) or "int8" (weight-only), or the checkpoint's own
// precision by name (bf16, fp16, fp32); anything else is a UsageError naming both.
inline constexpr const char* kDtypeHelp =
    "weights: auto (the checkpoint's precision), int8 (weight-only, a scale per output row; CPU "
    "backend), or bf16, fp16, fp32 when the checkpoint stores that";
WeightQuant parse_dtype(const std::string& dtype, const Checkpoint& checkpoint);

// Threads for the CPU backend: the flag if given, else OMP_NUM_THREADS, else every available core.
unsigned thread_count(int flag);

// --device: "cuda", "cpu", or "" for the default (cuda when a GPU is visible and the CUDA backend
// is built, else cpu). A help line for the flag.
inline constexpr const char* kDeviceHelp =
    "cuda or cpu (default: cuda when a GPU is visible, else cpu)";
// The backend for --device. CUDA: the GPU of this process's local rank (OMPI_COMM_WORLD_LOCAL_RANK,
// modulo the visible GPUs). CPU: `threads` threads, attention scratch for max_context positions.
std::unique_ptr<Backend> make_backend(const std::string& device, unsigned threads,
                                      std::int64_t max_context);
// The communicator the model's collectives need on `backend`: NCCL on the CUDA backend's stream
// when `comm` has more than one rank (device pointers), else null (use `comm` itself).
std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& comm);
// Memory read bandwidth (bytes per second) of the memory `backend` streams weights from.
double backend_read_bandwidth(Backend& backend, std::size_t bytes, int repeats);
// FP32 fused multiply-add peak (FLOP/s) of the CPU backend's threads, best of `repeats` runs;
// nullopt for a device.
std::optional<double> backend_fma_peak(Backend& backend, int repeats = 5);
// FMA rate (FLOP/s) of the CPU backend's threads over chains worth `flops` (cpu::fma_pass);
// nullopt for a device.
std::optional<double> backend_fma_rate(Backend& backend, double flops);
// Bandwidth (bytes per second) of a plain read of the weights the CPU backend holds, on their own
// pages: what a decode step's streaming is measured against. nullopt for a device.
std::optional<double> backend_weight_read_bandwidth(Backend& backend);
// This process's rank among the ranks of its node (0 outside mpirun).
int local_rank();

int run_generate(const std::vector<std::string>& args);
int run_generate_jsonl(const std::vector<std::string>& args);  // generate --input
int run_info(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_serve(const std::vector<std::string>& args);
int run_launch(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);

}  // namespace saker::cli
