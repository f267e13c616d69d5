// saker bench: decode speed at batch 1 against the memory-bandwidth floor measured in the same run.
#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/falcon.h"
#include "engine/model/shard_plan.h"
#include "engine/step_runner.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/membw.h"
#include "launcher/cli.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

struct Workload {
  std::int64_t input = 0, output = 0;
};

Workload parse_workload(const std::string& w) {
  // fixed:IN:OUT — the only workload a single sequence can run; the rolling batch adds the rest.
  Workload out;
  char tail = 0;
  long long in = 0, o = 0;
  if (std::sscanf(w.c_str(), "fixed:%lld:%lld%c", &in, &o, &tail) != 2 || in <= 0 || o <= 0)
    throw UsageError("--workload must be fixed:IN:OUT with positive token counts, got '" + w + "'");
  out.input = in;
  out.output = o;
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  std::string model_dir, workload = "fixed:32:64", output_json;
  std::int64_t num_requests = 3;
  int threads = 0;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&model_dir)->required(),
                                                 "model directory")(
      "workload", po::value(&workload)->default_value(workload), "fixed:IN:OUT tokens per request")(
      "num-requests", po::value(&num_requests)->default_value(3), "requests, run one at a time")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0: OMP_NUM_THREADS or all)")(
      "output-json", po::value(&output_json), "also write the results as JSON");
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: [mpirun -np N] saker bench --model DIR [options]")) return 0;
  const Workload wl = parse_workload(workload);
  if (num_requests <= 0) throw UsageError("--num-requests must be positive");

  const FalconConfig config = load_config(model_dir);
  if (wl.input + wl.output > config.max_positions)
    throw UsageError("workload needs " + std::to_string(wl.input + wl.output) +
                     " positions; the model's context is " + std::to_string(config.max_positions));
  Communicator& comm = world().tensor_parallel();
  const ShardPlan plan(config, comm.size());
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  const unsigned n_threads = thread_count(threads);
  CpuBackend backend(n_threads, config.max_positions);
  const TensorParallel tp =
      comm.size() > 1 ? TensorParallel{&plan.rank(comm.rank()), &comm} : TensorParallel{};
  FalconModel model(config, checkpoint, backend, ModelOptions{256, 1, config.max_positions}, tp);
  const std::int64_t block = 16;
  KvCache cache(backend, config, model.local_kv_heads(), (wl.input + wl.output + block - 1) / block,
                block);
  StepRunner runner(model, cache, comm);

  // Every rank streams its own shard: the floor is all ranks' bytes over the machine's bandwidth,
  // measured with every rank reading at once.
  float step_bytes_f = static_cast<float>(model.step_weight_bytes());
  comm.all_reduce_sum(&step_bytes_f, 1);
  const double step_bytes = step_bytes_f;
  auto machine_bandwidth = [&] {
    comm.barrier();
    float bw =
        static_cast<float>(cpu::measure_read_bandwidth(backend.pool(), std::size_t{512} << 20, 3));
    comm.all_reduce_sum(&bw, 1);
    return static_cast<double>(bw);
  };
  if (!runner.is_driver()) {
    for (std::int64_t r = -1; r < num_requests; ++r) {
      if (r >= 0) machine_bandwidth();
      runner.serve();
    }
    return 0;
  }

  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::int32_t> tok(0,
                                                  static_cast<std::int32_t>(config.vocab_size - 1));
  GenerateOptions opt;
  opt.max_new_tokens = wl.output;
  opt.ignore_eos = true;
  // The machine's bandwidth drifts (shared hosts), so each request is paired with a bandwidth
  // measurement taken just before it, and the ratio is formed pair by pair.
  std::vector<double> decode_tps, prefill_tps, tpot_ms, bandwidth, fraction;
  // One warm-up request pages the weights in; it is not counted.
  for (std::int64_t r = -1; r < num_requests; ++r) {
    std::vector<std::int32_t> prompt(static_cast<std::size_t>(wl.input));
    for (auto& t : prompt) t = tok(rng);
    const double bw = r < 0 ? 0.0 : machine_bandwidth();
    const GenerateResult res = generate_sequence(runner, prompt, opt);
    runner.stop();
    if (r < 0) continue;
    const double steps = static_cast<double>(res.tokens.size() - 1);
    if (steps > 0) {
      decode_tps.push_back(steps / res.decode_seconds);
      tpot_ms.push_back(res.decode_seconds / steps * 1e3);
      bandwidth.push_back(bw);
      fraction.push_back(decode_tps.back() / (bw / step_bytes));
    }
    prefill_tps.push_back(static_cast<double>(wl.input) / res.prefill_seconds);
  }
  const double bw = median(bandwidth);
  const double floor_tps = bw / step_bytes;
  const double dec = median(decode_tps);
  nlohmann::json j = {{"model", model_dir},
                      {"workload", workload},
                      {"num_requests", num_requests},
                      {"threads", n_threads},
                      {"tp", comm.size()},
                      {"batch_size", 1},
                      {"weight_bytes_per_step", step_bytes},
                      {"memory_bandwidth_gbps", bw / 1e9},
                      {"floor_tokens_per_s", floor_tps},
                      {"decode_tokens_per_s", dec},
                      {"decode_fraction_of_floor", median(fraction)},
                      {"tpot_ms", median(tpot_ms)},
                      {"prefill_tokens_per_s", median(prefill_tps)}};
  std::cout << std::fixed << std::setprecision(2) << "model                 " << model_dir << " ("
            << config.variant() << ")\n"
            << "ranks x threads       " << comm.size() << " x " << n_threads << "\n"
            << "weight bytes / step   " << step_bytes / 1e9 << " GB\n"
            << "memory bandwidth      " << bw / 1e9
            << " GB/s (median; measured before each request, same threads)\n"
            << "floor                 " << floor_tps << " tokens/s (bandwidth / weight bytes)\n"
            << "decode, batch 1       " << dec << " tokens/s (median of " << num_requests
            << " requests, " << wl.output << " tokens each)\n"
            << "share of floor        " << 100.0 * median(fraction)
            << " % (median of the per-request ratios)\n"
            << "time per output token " << median(tpot_ms) << " ms\n"
            << "prefill               " << median(prefill_tps) << " tokens/s (" << wl.input
            << "-token prompts)\n";
  if (!output_json.empty()) {
    std::ofstream out(output_json);
    if (!out) throw std::runtime_error("cannot write " + output_json);
    out << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace saker::cli
