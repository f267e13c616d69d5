#include "launcher/bench/report.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

namespace saker::cli {
namespace {

std::string ms(const Distribution& d) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2) << std::setw(10) << d.mean << std::setw(10) << d.p50
    << std::setw(10) << d.p90 << std::setw(10) << d.p99;
  return o.str();
}

}  // namespace

// FLOPs of one token through the layers when it attends to `ctx` positions: 2 per weight of the
// four matrices, and 4 per head dimension per position for q·k and p·V.
double layer_flops_per_token(const FlopShape& c, double ctx) {
  return c.layers * (2 * c.matrix_weights_per_layer + 4.0 * c.attention_width * ctx);
}

// A prompt token of a `len`-token prompt sees (len + 1) / 2 positions on average; the lm_head runs
// for the prompt's last token only and is left out.
double prefill_flops_per_token(const FlopShape& c, double len) {
  return layer_flops_per_token(c, (len + 1) / 2);
}

double mean_prompt_tokens(const std::vector<BenchRequest>& reqs) {
  double sum = 0;
  for (const BenchRequest& r : reqs) sum += static_cast<double>(r.prompt.size());
  return reqs.empty() ? 0.0 : sum / static_cast<double>(reqs.size());
}

// A decode token at context `ctx` also goes through the lm_head.
double decode_flops_per_token(const FlopShape& c, double ctx) {
  return layer_flops_per_token(c, ctx) + 2.0 * c.lm_head_weights;
}

BenchReport make_report(const BenchSettings& s, const FlopShape& shape,
                        const std::vector<BenchRequest>& reqs, const BenchRun& run,
                        double step_bytes) {
  std::ostringstream out;
  const EngineStats& stats = run.engine.totals;
  const std::uint64_t preemptions = run.engine.preemptions;
  const std::int32_t pool_blocks = run.engine.kv_blocks;
  const std::vector<BatchResult>& results = run.results;
  const double bw = std::max(run.before.bandwidth, run.after.bandwidth);
  const Spread decode_paired = spread(run.paired.decode),
               prefill_paired = spread(run.paired.prefill);
  // The readings themselves, to compare with the whole-run ones (the same read, the same peak).
  const Spread bw_paired = spread(run.paired.bandwidth_gbps),
               peak_paired = spread(run.paired.peak_gflops);
  // The best of the readings before and after the run (a busy neighbour halves some of them).
  const double fma_peak = std::max(run.before.fma_peak, run.after.fma_peak);
  const LatencyMetrics lat = latency_metrics(results);
  const double duration = lat.last_finish - lat.first_arrival;
  std::int64_t in_tokens = 0, out_tokens = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    in_tokens += static_cast<std::int64_t>(reqs[i].prompt.size());
    out_tokens += static_cast<std::int64_t>(results[i].tokens.size());
  }
  const double iters = static_cast<double>(std::max<std::uint64_t>(stats.iterations, 1));
  const double tpot_floor_ms = bw > 0 ? step_bytes / bw * 1e3 : 0.0;
  // Prefill: prompt tokens over the time from scheduling to the first token (the prefill itself
  // when requests run alone, --max-concurrency 1), against the FLOPs they take at the FMA peak.
  double ttft_sum = 0;
  for (const BatchResult& r : results)
    ttft_sum += r.first_token - (r.scheduled >= 0 ? r.scheduled : r.arrival);
  const double mean_prompt = mean_prompt_tokens(reqs);
  const double prompt_sum = mean_prompt * static_cast<double>(reqs.size());
  const double prefill_tps = ttft_sum > 0 ? prompt_sum / ttft_sum : 0.0;
  const double prefill_flops = prefill_flops_per_token(shape, mean_prompt);
  const double prefill_fraction = fma_peak > 0 ? prefill_tps * prefill_flops / fma_peak : 0.0;
  // A decode step of B sequences reads every weight once and does B tokens' arithmetic: its floor
  // is the larger of the two times (batch 1 is bandwidth-bound; large batches on a CPU are not).
  double out_sum = 0;
  for (const BenchRequest& r : reqs) out_sum += static_cast<double>(r.output);
  const double mean_ctx = mean_prompt + out_sum / static_cast<double>(reqs.size()) / 2;
  const double decode_flops = decode_flops_per_token(shape, mean_ctx);
  const double decode_batch =
      static_cast<double>(stats.batch_sequences) / iters;  // sequences per iteration
  const double step_floor_ms =
      std::max(tpot_floor_ms, fma_peak > 0 ? decode_batch * decode_flops / fma_peak * 1e3 : 0.0);
  nlohmann::json j = {
      {"model", s.model},
      {"workload", s.workload},
      {"num_requests", s.num_requests},
      {"request_rate", s.request_rate},
      {"max_concurrency", s.max_concurrency},
      {"batching", s.batching},
      {"max_batch_size", s.max_batch_size},
      {"max_batch_delay_ms", s.max_batch_delay_ms},
      {"max_tokens_per_iteration", s.max_batch_tokens},
      {"tp", s.tp},
      {"threads", s.threads},
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
  out << std::fixed << std::setprecision(2) << "model                   " << s.model << " ("
      << s.variant << "), " << s.tp << " rank(s) x " << s.threads << " threads\n"
      << "workload                " << s.workload << ", " << s.num_requests << " requests, rate "
      << s.request_rate << "/s, max concurrency "
      << (s.max_concurrency ? std::to_string(s.max_concurrency) : std::string("none")) << "\n"
      << "batching                " << s.batching << ", max batch " << s.max_batch_size
      << (s.batching == "dynamic"
              ? ", max delay " + std::to_string(static_cast<int>(s.max_batch_delay_ms)) + " ms"
              : std::string())
      << "\n"
      << "duration                " << duration << " s\n"
      << "request throughput      " << j["request_throughput"].get<double>() << " req/s\n"
      << "output throughput       " << j["output_throughput"].get<double>() << " tokens/s\n"
      << "total token throughput  " << j["total_token_throughput"].get<double>() << " tokens/s\n"
      << "                              mean       p50       p90       p99\n"
      << "TTFT (ms)               " << ms(lat.ttft_ms) << "\n"
      << "TPOT (ms)               " << ms(lat.tpot_ms) << "\n"
      << "ITL (ms)                " << ms(lat.itl_ms) << "\n"
      << "E2E latency (ms)        " << ms(lat.e2el_ms) << "\n"
      << "iterations              " << stats.iterations << ", avg batch "
      << j["avg_batch_size"].get<double>() << " sequences, "
      << j["avg_tokens_per_iteration"].get<double>() << " tokens\n"
      << "KV usage                mean " << 100 * j["kv_usage_mean"].get<double>() << " %, max "
      << 100 * j["kv_usage_max"].get<double>() << " % of " << pool_blocks << " blocks; "
      << preemptions << " preemptions\n"
      << "bandwidth floor         " << tpot_floor_ms << " ms per step (" << step_bytes / 1e9
      << " GB of weights at " << bw / 1e9 << " GB/s); p50 TPOT is "
      << 100 * j["tpot_fraction_of_floor"].get<double>() << " % of it\n"
      << "prefill                 " << prefill_tps << " tokens/s (scheduled to first token); "
      << prefill_flops / 1e9 << " GFLOP per token";
  if (fma_peak > 0)
    out << ", FMA peak " << fma_peak / 1e9 << " GFLOP/s: " << 100 * prefill_fraction << " % of it";
  out << "\n";
  auto percents = [](const Spread& sp) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(1) << 100 * sp.p50 << " % (p10 " << 100 * sp.p10
      << " %, p90 " << 100 * sp.p90 << " %, " << sp.count << " steps)";
    return o.str();
  };
  if (decode_paired.count > 0)
    out << "paired decode floor     each step against a plain read of the same weights "
           "right after it: "
        << percents(decode_paired) << "; those reads ran at " << bw_paired.p50 << " GB/s (p10 "
        << bw_paired.p10 << ", p90 " << bw_paired.p90 << ")\n";
  if (prefill_paired.count > 0)
    out << "paired prefill peak     each prefill step against FMA chains of as many FLOPs right "
           "after it: "
        << percents(prefill_paired) << "; those peaks were " << peak_paired.p50 << " GFLOP/s (p10 "
        << peak_paired.p10 << ", p90 " << peak_paired.p90 << ")\n";
  if (fma_peak > 0)
    out << "decode step floor       " << step_floor_ms << " ms (bandwidth, or " << decode_batch
        << " tokens' FLOPs at the FMA peak); p50 TPOT is "
        << 100 * j["tpot_fraction_of_step_floor"].get<double>() << " % of it\n";
  return {std::move(j), out.str()};
}

}  // namespace saker::cli
