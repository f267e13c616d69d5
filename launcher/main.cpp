// saker: one executable, one subcommand per job.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "launcher/cli.h"

namespace {

constexpr const char* kUsage =
    "usage: saker <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate tokens from a prompt (greedy)\n"
    "  info       print a model's effective structure, parameters and weight bytes\n"
    "  bench      measure decode speed against the memory-bandwidth floor\n"
    "\n"
    "Run 'saker <command> --help' for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "generate") return saker::cli::run_generate(args);
    if (cmd == "info") return saker::cli::run_info(args);
    if (cmd == "bench") return saker::cli::run_bench(args);
    std::cerr << "saker: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const saker::cli::UsageError& e) {
    std::cerr << "saker " << cmd << ": " << e.what() << "\n(see 'saker " << cmd << " --help')\n";
    return 2;
  } catch (const boost::program_options::error& e) {
    std::cerr << "saker " << cmd << ": " << e.what() << "\n(see 'saker " << cmd << " --help')\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "saker " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
