// saker bench: an offline serving simulation. Requests of a workload arrive by a Poisson process
// (or all at once, or as a fixed concurrency allows) at the batch engine, rolling or dynamic, and
// the run is reported with vLLM's serving metrics, the engine's own counters, and the time per
// output token against the memory-bandwidth floor measured in the same run.
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "engine/constraints/compiler.h"
#include "engine/tokenizer/tokenizer.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_flags.h"
#include "launcher/bench/report.h"
#include "launcher/bench/simulator.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

double parse_rate(const std::string& s) {
  if (s == "inf") return std::numeric_limits<double>::infinity();
  char* end = nullptr;
  const double r = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != 0 || !(r > 0) || std::isinf(r))
    throw UsageError("--request-rate must be a positive number of requests/s or inf, got '" + s +
                     "'");
  return r;
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  EngineFlags flags;
  std::string workload = "mixed", rate_text = "inf", output_json, guided_json;
  std::int64_t num_requests = 64, concurrency = 0;
  std::uint64_t seed = 0;
  bool random_weights = false;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&flags.model_dir)->required(),
                                                 "model directory")(
      "workload", po::value(&workload)->default_value(workload),
      "mixed | mixed:SHORT:LONG | fixed:IN:OUT | random | random:IN:OUT | "
      "shared-prefix[:P:PL:SL:OUT] | "
      "copy[:PASSAGE:OUT]")("num-requests", po::value(&num_requests)->default_value(num_requests),
                            "requests to send")(
      "request-rate", po::value(&rate_text)->default_value(rate_text),
      "Poisson arrivals per second, or inf (all at once)")(
      "max-concurrency", po::value(&concurrency)->default_value(0),
      "most requests in flight (0: no limit)")("seed", po::value(&seed)->default_value(0),
                                               "prompts, order and arrivals")(
      "output-json", po::value(&output_json), "also write the results as JSON")(
      "guided-json", po::value(&guided_json),
      "FILE: a JSON schema every request's output must follow (structured outputs; the model "
      "directory needs tokenizer.json)")(
      "random-weights", po::bool_switch(&random_weights),
      "CUDA: weights made at random on the device, the checkpoint's tensor bytes never read (a "
      "model that is not at hand, e.g. saker_gpu_bench --checkpoint-only's sparse Falcon-7B)");
  desc.add(engine_options(flags));
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: [mpirun -np N] saker bench --model DIR [options]")) return 0;
  EngineOptions o = finish_engine_options(vm, flags);
  o.text = !guided_json.empty();  // constraints need the tokenizer
  o.random_weights = random_weights;
  if (random_weights && o.device == "cpu")
    throw UsageError("--random-weights makes the weights on a CUDA device (--device cuda)");
  if (num_requests <= 0) throw UsageError("--num-requests must be positive");
  if (concurrency < 0) throw UsageError("--max-concurrency must be >= 0");
  const double rate = parse_rate(rate_text);
  const RequestLimits limits = read_model_limits(o.model_dir);
  WorkloadSpec spec;
  try {
    spec = parse_workload(workload, limits.max_context);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());  // it names --workload
  }
  auto reqs = make_requests(spec, num_requests, rate, limits.vocab, seed);
  if (!guided_json.empty()) {
    std::ifstream in(guided_json);
    if (!in) throw UsageError("cannot read --guided-json " + guided_json);
    std::stringstream text;
    text << in.rdbuf();
    const Constraint c{Constraint::Kind::kJsonSchema, text.str(), {}, "--guided-json"};
    // Checked here, before the model loads: a schema saker cannot enforce is a usage error.
    const Tokenizer tok = Tokenizer::from_model_dir(o.model_dir);
    try {
      read_model_limits(o.model_dir, &tok).constraints->compile(c);
    } catch (const ConstraintError& e) {
      throw UsageError(e.what());
    }
    for (auto& r : reqs) r.constraint = c;
  }

  Communicator& comm = world().tensor_parallel();
  const auto engine = make_engine(o, comm);
  float step_bytes = static_cast<float>(engine->step_weight_bytes());
  comm.all_reduce_sum(&step_bytes, 1);
  const ModelShape& m = engine->shape();
  const FlopShape shape{
      static_cast<double>(m.layers), static_cast<double>(m.matrix_weights_per_layer),
      static_cast<double>(m.heads * m.head_dim), static_cast<double>(m.vocab_size * m.hidden)};
  // One request at a time on one rank: every step is paired with a measurement of its own floor.
  const bool paired =
      concurrency == 1 && comm.size() == 1 && engine->backend().host_accessible();  // the CPU
  const BenchRun run =
      run_bench_phases(*engine, comm, reqs, concurrency, paired,
                       prefill_flops_per_token(shape, mean_prompt_tokens(reqs)), step_bytes);
  if (!engine->is_driver()) return 0;
  const BenchSettings settings{o.model_dir,
                               m.variant,
                               workload,
                               rate_text,
                               flags.batching,
                               num_requests,
                               concurrency,
                               o.max_batch_tokens,
                               o.max_batch_size,
                               flags.max_batch_delay_ms,
                               comm.size(),
                               engine->threads(),
                               o.enable_prefix_caching,
                               guided_json};
  const BenchReport report = make_report(settings, shape, reqs, run, step_bytes);
  std::cout << report.text;
  if (!output_json.empty()) {
    std::ofstream out(output_json);
    if (!out) throw std::runtime_error("cannot write " + output_json);
    out << report.json.dump(2) << "\n";
  }
  return 0;
}

}  // namespace saker::cli
