// saker bench: an offline serving simulation. Requests of a workload arrive by a Poisson process
// (or all at once, or as a fixed concurrency allows) at the batch engine, rolling or dynamic, and
// the run is reported with vLLM's serving metrics, the engine's own counters, and the time per
// output token against the memory-bandwidth floor measured in the same run.
#include <algorithm>
#include <cmath>
#include <deque>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "launcher/bench/metrics.h"
#include "launcher/bench/workload.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_setup.h"
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

// FLOPs of one token through the layers when it attends to `ctx` positions: 2 per weight of the
// layer's matrices, and 4 per head dimension per position for q·k and p·V.
double layer_flops_per_token(const ModelShape& c, double ctx) {
  const double matrices = static_cast<double>(c.matrix_weights_per_layer);
  return static_cast<double>(c.layers) *
         (2 * matrices + 4.0 * static_cast<double>(c.heads * c.head_dim) * ctx);
}

// A prompt token of a `len`-token prompt sees (len + 1) / 2 positions on average; the lm_head runs
// for the prompt's last token only and is left out.
double prefill_flops_per_token(const ModelShape& c, double len) {
  return layer_flops_per_token(c, (len + 1) / 2);
}

double mean_prompt_tokens(const std::vector<BenchRequest>& reqs) {
  double sum = 0;
  for (const BenchRequest& r : reqs) sum += static_cast<double>(r.prompt.size());
  return reqs.empty() ? 0.0 : sum / static_cast<double>(reqs.size());
}

// A decode token at context `ctx` also goes through the lm_head.
double decode_flops_per_token(const ModelShape& c, double ctx) {
  return layer_flops_per_token(c, ctx) + 2.0 * static_cast<double>(c.vocab_size * c.hidden);
}

// Runs the requests through the engine, releasing each at its arrival time and while fewer than
// `concurrency` are in flight; a request held back by the limit is sent when a slot frees.
// `after_step`, if set, runs after every step that ran, given the step's seconds (a measurement
// paired with it); the engine's clock is treated as stopped while it runs.
std::vector<BatchResult> drive(BatchEngine& engine, const std::vector<BenchRequest>& reqs,
                               std::int64_t concurrency,
                               const std::function<void(double)>& after_step = {}) {
  const double t0 = engine.now();
  std::vector<BatchResult> results(reqs.size());
  std::vector<std::pair<double, double>> pauses;
  std::size_t next = 0, done = 0;
  std::int64_t in_flight = 0;
  std::deque<double> freed;  // times slots became free, not yet taken
  std::vector<std::uint64_t> finished;
  engine.set_listener([&](const TokenEvent& ev) {
    if (ev.finish != FinishReason::kNone) finished.push_back(ev.id);
  });
  while (done < reqs.size()) {
    const double now = engine.now() - t0;
    while (next < reqs.size() && reqs[next].arrival <= now &&
           (concurrency <= 0 || in_flight < concurrency)) {
      BatchRequest r;
      r.id = next;
      r.prompt = reqs[next].prompt;
      r.max_new_tokens = reqs[next].output;
      r.ignore_eos = true;
      double sent = reqs[next].arrival;
      if (concurrency > 0 && !freed.empty()) {
        sent = std::max(sent, freed.front());
        freed.pop_front();
      }
      r.arrival = t0 + sent;
      engine.add(std::move(r));
      ++in_flight;
      ++next;
    }
    const double step_start = engine.now();
    if (!engine.step()) {
      // Nothing ran: the next arrival is in the future, or a dynamic batch is gathering.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    if (after_step) {
      const double step_end = engine.now();
      after_step(step_end - step_start);
      pauses.emplace_back(step_end, engine.now() - step_end);
    }
    for (const std::uint64_t i : finished) {
      BatchResult& r = results[i] = *engine.take_result(i);
      if (concurrency > 0) freed.push_back(r.finished - t0);
      --in_flight;
      ++done;
    }
    finished.clear();
  }
  for (BatchResult& r : results) remove_pauses(r, pauses);
  return results;
}

std::string ms(const Distribution& d) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2) << std::setw(10) << d.mean << std::setw(10) << d.p50
    << std::setw(10) << d.p90 << std::setw(10) << d.p99;
  return o.str();
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  EngineOptions o;
  std::string workload = "mixed", rate_text = "inf", output_json;
  std::int64_t num_requests = 64, concurrency = 0;
  std::uint64_t seed = 0;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&o.model_dir)->required(),
                                                 "model directory")(
      "workload", po::value(&workload)->default_value(workload),
      "mixed | mixed:SHORT:LONG | fixed:IN:OUT | random | random:IN:OUT")(
      "num-requests", po::value(&num_requests)->default_value(num_requests), "requests to send")(
      "request-rate", po::value(&rate_text)->default_value(rate_text),
      "Poisson arrivals per second, or inf (all at once)")(
      "max-concurrency", po::value(&concurrency)->default_value(0),
      "most requests in flight (0: no limit)")("seed", po::value(&seed)->default_value(0),
                                               "prompts, order and arrivals")(
      "output-json", po::value(&output_json), "also write the results as JSON");
  desc.add(engine_options(o));
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: [mpirun -np N] saker bench --model DIR [options]")) return 0;
  finish_engine_options(vm, o);
  if (num_requests <= 0) throw UsageError("--num-requests must be positive");
  if (concurrency < 0) throw UsageError("--max-concurrency must be >= 0");
  const double rate = parse_rate(rate_text);
  const ModelShape config = load_model_shape(o.model_dir);
  const WorkloadSpec spec = parse_workload(workload, config.max_positions);
  const auto reqs = make_requests(spec, num_requests, rate, config.vocab_size, seed);

  Communicator& comm = world().tensor_parallel();
  Engine engine(o, comm);
  // Every rank streams its own shard: the floor is all ranks' bytes over the machine's bandwidth,
  // measured with every rank reading at once, before and after the run (shared hosts drift).
  float step_bytes_f = static_cast<float>(engine.model().step_weight_bytes());
  comm.all_reduce_sum(&step_bytes_f, 1);
  // Prefill is arithmetic-bound: its floor is the FMA peak, measured with every rank at once.
  auto machine_fma_peak = [&] {
    comm.barrier();
    float peak = static_cast<float>(backend_fma_peak(engine.backend()).value_or(0.0));
    comm.all_reduce_sum(&peak, 1);
    return static_cast<double>(peak);
  };
  auto machine_bandwidth = [&] {
    comm.barrier();
    float bw =
        static_cast<float>(backend_read_bandwidth(engine.backend(), std::size_t{512} << 20, 3));
    comm.all_reduce_sum(&bw, 1);
    return static_cast<double>(bw);
  };
  StepRunner& runner = engine.runner();
  if (!runner.is_driver()) {
    runner.serve();  // warm-up
    machine_bandwidth();
    machine_fma_peak();
    runner.serve();
    machine_bandwidth();
    machine_fma_peak();
    return 0;
  }
  double bw_before = 0, fma_peak_before = 0;
  // One request at a time on one rank: every step is paired with a measurement of its own floor
  // taken right after it (this host's bandwidth and FMA rate drift from second to second): a
  // decode step with a plain read of the same weights, a prefill step with FMA chains of as many
  // FLOPs.
  const bool paired =
      concurrency == 1 && comm.size() == 1 && engine.backend().host_accessible();  // the CPU
  std::vector<double> paired_decode, paired_prefill, paired_bw, paired_peak;
  std::vector<BatchResult> results;
  EngineStats stats;
  std::uint64_t preemptions = 0;
  std::int32_t pool_blocks = 0;
  {
    // Warm-up: one short request pages the weights in; not counted.
    BatchEngine warm(runner, engine.scheduler_config(), {});
    BatchRequest w;
    w.prompt = reqs.front().prompt;
    w.max_new_tokens = 2;
    w.ignore_eos = true;
    warm.add(w);
    warm.run_to_completion();
    runner.stop();
    bw_before = machine_bandwidth();
    fma_peak_before = machine_fma_peak();
    BatchEngine batch(runner, engine.scheduler_config(), {});
    EngineStats seen;
    const double prompt_flops = prefill_flops_per_token(config, mean_prompt_tokens(reqs));
    auto pair_step = [&](double step_s) {
      const EngineStats now = batch.stats();
      const auto tokens = static_cast<double>(now.batch_tokens - seen.batch_tokens);
      const bool decode =
          now.batch_tokens - seen.batch_tokens == now.batch_sequences - seen.batch_sequences;
      seen = now;
      if (decode) {
        const double bw_now = backend_weight_read_bandwidth(engine.backend()).value();
        paired_decode.push_back(static_cast<double>(step_bytes_f) / bw_now / step_s);
        paired_bw.push_back(bw_now / 1e9);
      } else {
        // FMA chains of as many FLOPs as the step: the rate over as long a stretch of time.
        const double peak_now =
            backend_fma_rate(engine.backend(), tokens * prompt_flops).value_or(0.0);
        if (peak_now > 0) {
          paired_prefill.push_back(tokens * prompt_flops / step_s / peak_now);
          paired_peak.push_back(peak_now / 1e9);
        }
      }
    };
    try {
      results = drive(batch, reqs, concurrency,
                      paired ? std::function<void(double)>(pair_step) : nullptr);
    } catch (...) {
      runner.stop();
      throw;
    }
    runner.stop();
    stats = batch.stats();
    preemptions = batch.scheduler().preemptions();
    pool_blocks = batch.blocks().num_blocks();
  }
  const double bw = std::max(bw_before, machine_bandwidth());
  const Spread decode_paired = spread(paired_decode), prefill_paired = spread(paired_prefill);
  // The readings themselves, to compare with the whole-run ones (the same read, the same peak).
  const Spread bw_paired = spread(paired_bw), peak_paired = spread(paired_peak);
  // The best of the readings before and after the run (a busy neighbour halves some of them).
  const double fma_peak = std::max(fma_peak_before, machine_fma_peak());
  const LatencyMetrics lat = latency_metrics(results);
  const double duration = lat.last_finish - lat.first_arrival;
  std::int64_t in_tokens = 0, out_tokens = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    in_tokens += static_cast<std::int64_t>(reqs[i].prompt.size());
    out_tokens += static_cast<std::int64_t>(results[i].tokens.size());
  }
  const double iters = static_cast<double>(std::max<std::uint64_t>(stats.iterations, 1));
  const double step_bytes = step_bytes_f;
  const double tpot_floor_ms = bw > 0 ? step_bytes / bw * 1e3 : 0.0;
  // Prefill: prompt tokens over the time from scheduling to the first token (the prefill itself
  // when requests run alone, --max-concurrency 1), against the FLOPs they take at the FMA peak.
  double ttft_sum = 0;
  for (const BatchResult& r : results)
    ttft_sum += r.first_token - (r.scheduled >= 0 ? r.scheduled : r.arrival);
  const double mean_prompt = mean_prompt_tokens(reqs);
  const double prompt_sum = mean_prompt * static_cast<double>(reqs.size());
  const double prefill_tps = ttft_sum > 0 ? prompt_sum / ttft_sum : 0.0;
  const double prefill_flops = prefill_flops_per_token(config, mean_prompt);
  const double prefill_fraction = fma_peak > 0 ? prefill_tps * prefill_flops / fma_peak : 0.0;
  // A decode step of B sequences reads every weight once and does B tokens' arithmetic: its floor
  // is the larger of the two times (batch 1 is bandwidth-bound; large batches on a CPU are not).
  double out_sum = 0;
  for (const BenchRequest& r : reqs) out_sum += static_cast<double>(r.output);
  const double mean_ctx = mean_prompt + out_sum / static_cast<double>(reqs.size()) / 2;
  const double decode_flops = decode_flops_per_token(config, mean_ctx);
  const double decode_batch =
      static_cast<double>(stats.batch_sequences) / iters;  // sequences per iteration
  const double step_floor_ms =
      std::max(tpot_floor_ms, fma_peak > 0 ? decode_batch * decode_flops / fma_peak * 1e3 : 0.0);
  nlohmann::json j = {
      {"model", o.model_dir},
      {"workload", workload},
      {"num_requests", num_requests},
      {"request_rate", rate_text},
      {"max_concurrency", concurrency},
      {"batching", o.batching},
      {"max_batch_size", o.max_batch_size},
      {"max_batch_delay_ms", o.max_batch_delay_ms},
      {"max_tokens_per_iteration", o.max_batch_tokens},
      {"tp", comm.size()},
      {"threads", engine.threads()},
      {"completed", results.size()},
      {"duration_s", duration},
      {"total_input_tokens", in_tokens},
      {"total_output_tokens", out_tokens},
      {"request_throughput", static_cast<double>(results.size()) / duration},
      {"output_throughput", static_cast<double>(out_tokens) / duration},
      {"total_token_throughput", static_cast<double>(in_tokens + out_tokens) / duration},
      {"ttft_ms", lat.ttft_ms.to_json()},
      {"tpot_ms", lat.tpot_ms.to_json()},
      {"itl_ms", lat.itl_ms.to_json()},
      {"e2el_ms", lat.e2el_ms.to_json()},
      {"iterations", stats.iterations},
      {"avg_batch_size", static_cast<double>(stats.batch_sequences) / iters},
      {"avg_tokens_per_iteration", static_cast<double>(stats.batch_tokens) / iters},
      {"kv_blocks", pool_blocks},
      {"kv_usage_mean", static_cast<double>(stats.kv_blocks_used) / iters / pool_blocks},
      {"kv_usage_max", static_cast<double>(stats.max_kv_blocks_used) / pool_blocks},
      {"preemptions", preemptions},
      {"memory_bandwidth_gbps", bw / 1e9},
      {"weight_bytes_per_step", step_bytes},
      {"tpot_floor_ms", tpot_floor_ms},
      {"tpot_fraction_of_floor", lat.tpot_ms.p50 > 0 ? tpot_floor_ms / lat.tpot_ms.p50 : 0.0},
      {"decode_tokens_per_s_per_sequence", lat.tpot_ms.p50 > 0 ? 1e3 / lat.tpot_ms.p50 : 0.0},
      {"decode_flops_per_token", decode_flops},
      {"decode_step_fraction_of_paired_floor", decode_paired.to_json()},
      {"prefill_step_fraction_of_paired_peak", prefill_paired.to_json()},
      {"paired_read_bandwidth_gbps", bw_paired.to_json()},
      {"paired_fma_peak_gflops", peak_paired.to_json()},
      {"decode_step_floor_ms", step_floor_ms},
      {"tpot_fraction_of_step_floor", lat.tpot_ms.p50 > 0 ? step_floor_ms / lat.tpot_ms.p50 : 0.0},
      {"prefill_tokens_per_s", prefill_tps},
      {"prefill_flops_per_token", prefill_flops},
      {"fma_peak_gflops", fma_peak / 1e9},
      {"prefill_fraction_of_fma_peak", prefill_fraction}};
  std::cout << std::fixed << std::setprecision(2) << "model                   " << o.model_dir
            << " (" << config.variant << "), " << comm.size() << " rank(s) x " << engine.threads()
            << " threads\n"
            << "workload                " << workload << ", " << num_requests << " requests, rate "
            << rate_text << "/s, max concurrency "
            << (concurrency ? std::to_string(concurrency) : std::string("none")) << "\n"
            << "batching                " << o.batching << ", max batch " << o.max_batch_size
            << (o.batching == "dynamic"
                    ? ", max delay " + std::to_string(static_cast<int>(o.max_batch_delay_ms)) +
                          " ms"
                    : std::string())
            << "\n"
            << "duration                " << duration << " s\n"
            << "request throughput      " << j["request_throughput"].get<double>() << " req/s\n"
            << "output throughput       " << j["output_throughput"].get<double>() << " tokens/s\n"
            << "total token throughput  " << j["total_token_throughput"].get<double>()
            << " tokens/s\n"
            << "                              mean       p50       p90       p99\n"
            << "TTFT (ms)               " << ms(lat.ttft_ms) << "\n"
            << "TPOT (ms)               " << ms(lat.tpot_ms) << "\n"
            << "ITL (ms)                " << ms(lat.itl_ms) << "\n"
            << "E2E latency (ms)        " << ms(lat.e2el_ms) << "\n"
            << "iterations              " << stats.iterations << ", avg batch "
            << j["avg_batch_size"].get<double>() << " sequences, "
            << j["avg_tokens_per_iteration"].get<double>() << " tokens\n"
            << "KV usage                mean " << 100 * j["kv_usage_mean"].get<double>()
            << " %, max " << 100 * j["kv_usage_max"].get<double>() << " % of " << pool_blocks
            << " blocks; " << preemptions << " preemptions\n"
            << "bandwidth floor         " << tpot_floor_ms << " ms per step (" << step_bytes / 1e9
            << " GB of weights at " << bw / 1e9 << " GB/s); p50 TPOT is "
            << 100 * j["tpot_fraction_of_floor"].get<double>() << " % of it\n"
            << "prefill                 " << prefill_tps << " tokens/s (scheduled to first token); "
            << prefill_flops / 1e9 << " GFLOP per token";
  if (fma_peak > 0)
    std::cout << ", FMA peak " << fma_peak / 1e9 << " GFLOP/s: " << 100 * prefill_fraction
              << " % of it";
  std::cout << "\n";
  auto percents = [](const Spread& sp) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(1) << 100 * sp.p50 << " % (p10 " << 100 * sp.p10
      << " %, p90 " << 100 * sp.p90 << " %, " << sp.count << " steps)";
    return o.str();
  };
  if (decode_paired.count > 0)
    std::cout << "paired decode floor     each step against a plain read of the same weights "
                 "right after it: "
              << percents(decode_paired) << "; those reads ran at " << bw_paired.p50
              << " GB/s (p10 " << bw_paired.p10 << ", p90 " << bw_paired.p90 << ")\n";
  if (prefill_paired.count > 0)
    std::cout
        << "paired prefill peak     each prefill step against FMA chains of as many FLOPs right "
           "after it: "
        << percents(prefill_paired) << "; those peaks were " << peak_paired.p50 << " GFLOP/s (p10 "
        << peak_paired.p10 << ", p90 " << peak_paired.p90 << ")\n";
  if (fma_peak > 0)
    std::cout << "decode step floor       " << step_floor_ms << " ms (bandwidth, or "
              << decode_batch << " tokens' FLOPs at the FMA peak); p50 TPOT is "
              << 100 * j["tpot_fraction_of_step_floor"].get<double>() << " % of it\n";
  if (!output_json.empty()) {
    std::ofstream out(output_json);
    if (!out) throw std::runtime_error("cannot write " + output_json);
    out << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace saker::cli
