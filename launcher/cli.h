// Shared pieces of the saker subcommands.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace saker {
class MpiWorld;
}

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

// Threads for the CPU backend: the flag if given, else OMP_NUM_THREADS, else every available core.
unsigned thread_count(int flag);

int run_generate(const std::vector<std::string>& args);
int run_generate_jsonl(const std::vector<std::string>& args);  // generate --input
int run_info(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);

}  // namespace saker::cli
