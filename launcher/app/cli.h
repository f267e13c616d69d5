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

#include "kernels/backend.h"
#include "kernels/factory.h"

namespace saker {
class Backend;
class Checkpoint;
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
    "weights: auto (the checkpoint's precision), int8 or fp8 (e4m3; weight-only, a scale per "
    "output row), w8a8 (CPU: int8 weights and int8 activations, a scale per token; VNNI dot "
    "products), or bf16, fp16, fp32 when the checkpoint stores that";

inline constexpr const char* kCpuMatmulHelp =
    "CPU, bf16 weights: fp32 (inputs kept in fp32, exact FMA chains), bf16 (inputs rounded to "
    "bf16, AVX512_BF16 dot products: twice the FMA rate), or auto (bf16 where the CPU has "
    "AVX512_BF16; docs/numerics.md)";
inline constexpr const char* kCommHelp =
    "tensor parallelism on CUDA: nccl, mpi (collectives staged through host memory: ranks that "
    "share a GPU), or auto (nccl unless a node runs more ranks than it has GPUs)";

inline constexpr const char* kKvCacheDtypeHelp =
    "KV cache elements: fp32, bf16, fp16, fp8_e4m3, int8, or auto (the checkpoint's 16-bit "
    "dtype; fp32 for an fp32 checkpoint). 16 bits hold twice the tokens, 8 bits (with an fp32 "
    "scale per token per KV head) nearly four times; CPU backend only for now";

// Threads for the CPU backend: the flag if given, else OMP_NUM_THREADS, else every available core.
unsigned thread_count(int flag);

// --device: a help line for the flag (kernels/factory.h picks the backend).
inline constexpr const char* kDeviceHelp =
    "cuda or cpu (default: cuda when a GPU is visible, else cpu)";

int run_generate(const std::vector<std::string>& args);
int run_generate_jsonl(const std::vector<std::string>& args);  // generate --input
int run_info(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_serve(const std::vector<std::string>& args);
int run_launch(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);

}  // namespace saker::cli
