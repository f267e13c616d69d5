#include "launcher/app/cli.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "kernels/factory.h"
#include "parallel/world.h"

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

unsigned thread_count(int flag) {
  if (flag < 0) throw UsageError("--threads must be >= 0");
  if (flag > 0) return static_cast<unsigned>(flag);
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return static_cast<unsigned>(n);
  }
  // Ranks that share processors (mpirun --bind-to none) split them rather than each taking all:
  // two ranks of two threads on two cores ran a decode step in 72 ms, of one thread each in 51.
  return g_world ? g_world->cpu_share() : usable_cpus();
}

}  // namespace saker::cli
