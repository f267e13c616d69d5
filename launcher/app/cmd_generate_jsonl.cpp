// saker generate --input prompts.jsonl --output results.jsonl: an offline job through the rolling
// batch (launcher/offline/jsonl_job.h); this file is its flags.
#include <fstream>
#include <optional>

#include "launcher/app/cli.h"
#include "launcher/app/engine_flags.h"
#include "launcher/offline/jsonl_job.h"
#include "parallel/world.h"

namespace saker::cli {

int run_generate_jsonl(const std::vector<std::string>& args) {
  EngineFlags flags;
  std::string input, output;
  std::int64_t max_new = 32;
  double interval = 10;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&flags.model_dir)->required(),
                                                 "Hugging Face model directory (safetensors)")(
      "input", po::value(&input)->required(),
      "JSONL: {\"prompt\": str, \"parameters\": {...}, \"id\": any} per line")(
      "output", po::value(&output)->required(), "JSONL results, in input order")(
      "max-new-tokens", po::value(&max_new)->default_value(max_new),
      "for lines whose parameters do not say")(
      "progress-interval", po::value(&interval)->default_value(interval),
      "seconds between progress lines when stderr is not a terminal");
  desc.add(engine_options(flags));
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker generate --model DIR --input prompts.jsonl --output "
             "results.jsonl [options]"))
    return 0;
  if (max_new < 1) throw UsageError("--max-new-tokens must be >= 1");

  Communicator& comm = world().tensor_parallel();
  EngineOptions o = finish_engine_options(vm, flags);
  o.text = true;
  // Rank 0 alone reads the job; a bad line stops every rank before the model is loaded.
  JsonlJob job;
  std::ofstream out;
  if (comm.rank() == 0) {
    const Tokenizer tok = Tokenizer::from_model_dir(o.model_dir);
    RequestLimits limits = read_model_limits(o.model_dir, &tok);
    limits.text = true;
    try {
      job = read_jsonl_job(input, tok, limits, max_new);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());  // it names the file and line
    }
    out.open(output);
    if (!out) throw std::runtime_error("cannot write --output " + output);
  }
  const auto engine = make_engine(o, comm);
  if (!engine->is_driver()) {
    engine->run();
    return 0;
  }
  run_jsonl_job(*engine, std::move(job), input, {out, output, interval});
  return 0;
}

}  // namespace saker::cli
