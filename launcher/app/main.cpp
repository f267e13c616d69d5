// saker: one executable, one subcommand per job.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "launcher/app/cli.h"
#include "parallel/world.h"

namespace {

constexpr const char* kUsage =
    "usage: saker <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate from a prompt, or run a JSONL job (--input) through the rolling batch\n"
    "  serve      serve the OpenAI, TGI and SageMaker/DJL HTTP APIs from rank 0\n"
    "  launch     run serve under mpirun from a DJL serving.properties (engine=MPI)\n"
    "  info       print a model's effective structure, parameters and weight bytes\n"
    "  bench      simulate serving: throughput and latency, rolling or dynamic batching\n"
    "  tokenize   text on stdin to token ids, or ids to text (--decode), by tokenizer.json\n"
    "\n"
    "Under mpirun (one rank per device) generate runs the model tensor-parallel over the ranks.\n"
    "\n"
    "Run 'saker <command> --help' for a command's options.\n";

}  // namespace

int dispatch(const std::string& cmd, const std::vector<std::string>& args) {
  if (cmd == "generate") return saker::cli::run_generate(args);
  if (cmd == "info") return saker::cli::run_info(args);
  if (cmd == "bench") return saker::cli::run_bench(args);
  if (cmd == "serve") return saker::cli::run_serve(args);
  if (cmd == "launch") return saker::cli::run_launch(args);
  if (cmd == "tokenize") return saker::cli::run_tokenize(args);
  throw saker::cli::UsageError("unknown command '" + cmd + "'\n\n" + kUsage);
}

int main(int argc, char** argv) {
  // Under mpirun every rank runs this; MPI starts here and ends when `world` goes.
  saker::MpiWorld world(argc, argv);
  saker::cli::set_world(world);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    if (world.rank() == 0) std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  const std::string who = world.size() > 1 ? " (rank " + std::to_string(world.rank()) + " of " +
                                                 std::to_string(world.size()) + ")"
                                           : "";
  try {
    return dispatch(cmd, args);
  } catch (const saker::cli::UsageError& e) {
    // Every rank sees the same command line: rank 0 alone says what is wrong with it. A mistake
    // only rank 0 can see (the prompt is read there) must still end the others.
    if (world.rank() == 0)
      std::cerr << "saker " << cmd << ": " << e.what() << "\n(see 'saker " << cmd << " --help')\n";
    if (world.size() > 1) world.abort(2);
    return 2;
  } catch (const boost::program_options::error& e) {
    if (world.rank() == 0)
      std::cerr << "saker " << cmd << ": " << e.what() << "\n(see 'saker " << cmd << " --help')\n";
    if (world.size() > 1) world.abort(2);
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "saker " << cmd << ": error" << who << ": " << e.what() << std::endl;
    // The other ranks may be waiting in a collective for this one: end the whole job.
    if (world.size() > 1) world.abort(1);
    return 1;
  }
}
