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

namespace {

// Every figure the report prints and writes, computed once.
struct Figures {
  EngineStats stats;
  std::uint64_t preemptions = 0;
  std::uint64_t prefix_queries = 0, prefix_hits = 0;  // prompt tokens
  std::int32_t cached_blocks = 0;
  std::int32_t pool_blocks = 0;
  std::size_t completed = 0;
  LatencyMetrics lat;
  double duration = 0, iters = 1;
  std::int64_t in_tokens = 0, out_tokens = 0;
  double bw = 0, fma_peak = 0, dot_peak = 0, step_bytes = 0, tpot_floor_ms = 0;
  Spread decode_paired, prefill_paired, bw_paired, peak_paired;
  double prefill_tps = 0, prefill_flops = 0, prefill_fraction = 0;
  double decode_flops = 0, decode_batch = 0, step_floor_ms = 0;
  std::vector<OpTime> ops;
  // Decode-only steps: their time (p10/p50/p90, ms), mean batch, and floors at that batch.
  Spread decode_ms;
  double decode_only_batch = 0, decode_only_floor_ms = 0, decode_only_dot_floor_ms = 0;
};

Figures compute(const FlopShape& shape, const std::vector<BenchRequest>& reqs, const BenchRun& run,
                double step_bytes) {
  Figures f;
  f.stats = run.engine.totals;
  f.ops = run.ops;
  f.preemptions = run.engine.preemptions;
  f.prefix_queries = run.engine.prefix_cache_queries;
  f.prefix_hits = run.engine.prefix_cache_hits;
  f.cached_blocks = run.engine.kv_blocks_cached;
  f.pool_blocks = run.engine.kv_blocks;
  f.completed = run.results.size();
  f.step_bytes = step_bytes;
  // The best of the readings before and after the run (a busy neighbour halves some of them).
  f.bw = std::max(run.before.bandwidth, run.after.bandwidth);
  f.fma_peak = std::max(run.before.fma_peak, run.after.fma_peak);
  f.dot_peak = std::max(run.before.dot_peak, run.after.dot_peak);
  f.decode_paired = spread(run.paired.decode);
  f.prefill_paired = spread(run.paired.prefill);
  // The readings themselves, to compare with the whole-run ones (the same read, the same peak).
  f.bw_paired = spread(run.paired.bandwidth_gbps);
  f.peak_paired = spread(run.paired.peak_gflops);
  f.lat = latency_metrics(run.results);
  f.duration = f.lat.last_finish - f.lat.first_arrival;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    f.in_tokens += static_cast<std::int64_t>(reqs[i].prompt.size());
    f.out_tokens += static_cast<std::int64_t>(run.results[i].tokens.size());
  }
  f.iters = static_cast<double>(std::max<std::uint64_t>(f.stats.iterations, 1));
  f.tpot_floor_ms = f.bw > 0 ? step_bytes / f.bw * 1e3 : 0.0;
  // Prefill: prompt tokens over the time from scheduling to the first token (the prefill itself
  // when requests run alone, --max-concurrency 1), against the FLOPs they take at the FMA peak.
  double ttft_sum = 0;
  for (const BatchResult& r : run.results)
    ttft_sum += r.first_token - (r.scheduled >= 0 ? r.scheduled : r.arrival);
  const double mean_prompt = mean_prompt_tokens(reqs);
  const double prompt_sum = mean_prompt * static_cast<double>(reqs.size());
  f.prefill_tps = ttft_sum > 0 ? prompt_sum / ttft_sum : 0.0;
  f.prefill_flops = prefill_flops_per_token(shape, mean_prompt);
  f.prefill_fraction = f.fma_peak > 0 ? f.prefill_tps * f.prefill_flops / f.fma_peak : 0.0;
  // A decode step of B sequences reads every weight once and does B tokens' arithmetic: its floor
  // is the larger of the two times (batch 1 is bandwidth-bound; large batches on a CPU are not).
  double out_sum = 0;
  for (const BenchRequest& r : reqs) out_sum += static_cast<double>(r.output);
  const double mean_ctx = mean_prompt + out_sum / static_cast<double>(reqs.size()) / 2;
  f.decode_flops = decode_flops_per_token(shape, mean_ctx);
  f.decode_batch = static_cast<double>(f.stats.batch_sequences) / f.iters;
  {
    std::vector<double> ms;
    double seqs = 0;
    for (std::size_t i = 0; i < run.decode_steps.seconds.size(); ++i) {
      ms.push_back(run.decode_steps.seconds[i] * 1e3);
      seqs += run.decode_steps.sequences[i];
    }
    f.decode_ms = spread(ms);
    f.decode_only_batch = ms.empty() ? 0.0 : seqs / static_cast<double>(ms.size());
    const double flops = f.decode_only_batch * f.decode_flops;
    f.decode_only_floor_ms =
        std::max(f.tpot_floor_ms, f.fma_peak > 0 ? flops / f.fma_peak * 1e3 : 0.0);
    f.decode_only_dot_floor_ms =
        f.dot_peak > 0 ? std::max(f.tpot_floor_ms, flops / f.dot_peak * 1e3) : 0.0;
  }
  f.step_floor_ms = std::max(
      f.tpot_floor_ms, f.fma_peak > 0 ? f.decode_batch * f.decode_flops / f.fma_peak * 1e3 : 0.0);
  return f;
}

double of_p50(double floor_ms, const Distribution& d) {
  return d.p50 > 0 ? floor_ms / d.p50 : 0.0;
}

// Where rank 0's step time went, per iteration: the host's stages around the forward pass, and
// inside it each backend operation (linear layers by shape) and the rest (plans, collectives,
// the logits' hand-off). Stages over 0.1 % of the step, largest first.
nlohmann::json profile(const Figures& f) {
  const double it = std::max<double>(1.0, static_cast<double>(f.stats.iterations));
  const EngineStats& s = f.stats;
  std::vector<std::pair<std::string, double>> stages{
      {"host: scheduling", s.schedule_seconds},
      {"host: sampling, detokenizing, events", s.sample_seconds},
      {"host: completing", s.complete_seconds},
      {"host: other", s.step_seconds - s.forward_seconds - s.schedule_seconds - s.sample_seconds -
                          s.complete_seconds}};
  double in_ops = 0;
  for (const OpTime& op : f.ops) {
    stages.emplace_back("forward: " + op.name, op.seconds);
    in_ops += op.seconds;
  }
  if (!f.ops.empty())
    stages.emplace_back("forward: other (plans, collectives, logits hand-off)",
                        s.forward_seconds - in_ops);
  std::stable_sort(stages.begin(), stages.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, seconds] : stages)
    if (s.step_seconds > 0 && seconds > 1e-3 * s.step_seconds)
      out.push_back({{"stage", name},
                     {"ms_per_iteration", seconds / it * 1e3},
                     {"share_of_step", seconds / s.step_seconds}});
  return out;
}

nlohmann::json to_json(const BenchSettings& s, const Figures& f) {
  const double d = f.duration, it = f.iters;
  return {{"model", s.model},
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
          {"completed", f.completed},
          {"duration_s", d},
          {"total_input_tokens", f.in_tokens},
          {"total_output_tokens", f.out_tokens},
          {"request_throughput", static_cast<double>(f.completed) / d},
          {"output_throughput", static_cast<double>(f.out_tokens) / d},
          {"total_token_throughput", static_cast<double>(f.in_tokens + f.out_tokens) / d},
          {"ttft_ms", f.lat.ttft_ms.to_json()},
          {"tpot_ms", f.lat.tpot_ms.to_json()},
          {"itl_ms", f.lat.itl_ms.to_json()},
          {"e2el_ms", f.lat.e2el_ms.to_json()},
          {"iterations", f.stats.iterations},
          // Rank 0's engine time per iteration, and the part of it outside the model's forward
          // pass (scheduling, plans, sampling, detokenizing, the events' hand-off).
          {"step_ms_per_iteration", f.stats.step_seconds / it * 1e3},
          {"forward_ms_per_iteration", f.stats.forward_seconds / it * 1e3},
          {"host_ms_per_iteration", (f.stats.step_seconds - f.stats.forward_seconds) / it * 1e3},
          {"profile", profile(f)},
          {"host_fraction_of_step",
           f.stats.step_seconds > 0
               ? (f.stats.step_seconds - f.stats.forward_seconds) / f.stats.step_seconds
               : 0.0},
          {"avg_batch_size", static_cast<double>(f.stats.batch_sequences) / it},
          {"avg_tokens_per_iteration", static_cast<double>(f.stats.batch_tokens) / it},
          {"kv_blocks", f.pool_blocks},
          {"kv_usage_mean", static_cast<double>(f.stats.kv_blocks_used) / it / f.pool_blocks},
          {"kv_usage_max", static_cast<double>(f.stats.max_kv_blocks_used) / f.pool_blocks},
          {"preemptions", f.preemptions},
          // vLLM's spec_decode counters, and the tokens a speculating step gave on average.
          {"spec_decode_num_drafts", f.stats.spec_drafts},
          {"spec_decode_num_draft_tokens", f.stats.spec_draft_tokens},
          {"spec_decode_num_accepted_tokens", f.stats.spec_accepted_tokens},
          {"spec_decode_acceptance_rate", f.stats.spec_draft_tokens > 0
                                              ? static_cast<double>(f.stats.spec_accepted_tokens) /
                                                    static_cast<double>(f.stats.spec_draft_tokens)
                                              : 0.0},
          {"spec_decode_mean_accepted_length",
           f.stats.spec_drafts > 0 ? 1.0 + static_cast<double>(f.stats.spec_accepted_tokens) /
                                               static_cast<double>(f.stats.spec_drafts)
                                   : 0.0},
          {"enable_prefix_caching", s.prefix_caching},
          {"guided_json", s.guided_json},
          {"prefix_cache_queries", f.prefix_queries},
          {"prefix_cache_hits", f.prefix_hits},
          {"prefix_cache_hit_rate", f.prefix_queries > 0 ? static_cast<double>(f.prefix_hits) /
                                                               static_cast<double>(f.prefix_queries)
                                                         : 0.0},
          {"kv_blocks_cached", f.cached_blocks},
          {"memory_bandwidth_gbps", f.bw / 1e9},
          {"weight_bytes_per_step", f.step_bytes},
          {"tpot_floor_ms", f.tpot_floor_ms},
          {"tpot_fraction_of_floor", of_p50(f.tpot_floor_ms, f.lat.tpot_ms)},
          {"decode_tokens_per_s_per_sequence", of_p50(1e3, f.lat.tpot_ms)},
          {"decode_flops_per_token", f.decode_flops},
          {"decode_step_fraction_of_paired_floor", f.decode_paired.to_json()},
          {"prefill_step_fraction_of_paired_peak", f.prefill_paired.to_json()},
          {"paired_read_bandwidth_gbps", f.bw_paired.to_json()},
          {"paired_fma_peak_gflops", f.peak_paired.to_json()},
          {"decode_step_floor_ms", f.step_floor_ms},
          {"tpot_fraction_of_step_floor", of_p50(f.step_floor_ms, f.lat.tpot_ms)},
          {"prefill_tokens_per_s", f.prefill_tps},
          {"prefill_flops_per_token", f.prefill_flops},
          {"fma_peak_gflops", f.fma_peak / 1e9},
          {"prefill_fraction_of_fma_peak", f.prefill_fraction},
          // The kernels' own limit when they take dot products (bf16 or int8): prefill against
          // it, and the decode step's floor at it (bandwidth, or the batch's FLOPs at that peak).
          {"dot_peak_gflops", f.dot_peak / 1e9},
          // Decode-only iterations (no prompt chunk in them): time, batch, and their floor (the
          // weights at the bandwidth, or the batch's FLOPs at the FMA / dot-product peak).
          {"decode_only_steps", f.decode_ms.count},
          {"decode_only_step_ms", f.decode_ms.to_json()},
          {"decode_only_batch", f.decode_only_batch},
          {"decode_only_step_floor_ms", f.decode_only_floor_ms},
          {"decode_only_fraction_of_floor",
           f.decode_ms.p50 > 0 ? f.decode_only_floor_ms / f.decode_ms.p50 : 0.0},
          {"decode_only_fraction_of_dot_floor",
           f.decode_ms.p50 > 0 ? f.decode_only_dot_floor_ms / f.decode_ms.p50 : 0.0},
          {"prefill_fraction_of_dot_peak",
           f.dot_peak > 0 ? f.prefill_tps * f.prefill_flops / f.dot_peak : 0.0},
          {"decode_step_floor_at_dot_peak_ms",
           f.dot_peak > 0
               ? std::max(f.tpot_floor_ms, f.decode_batch * f.decode_flops / f.dot_peak * 1e3)
               : 0.0},
          {"tpot_fraction_of_dot_step_floor",
           f.dot_peak > 0 ? of_p50(std::max(f.tpot_floor_ms,
                                            f.decode_batch * f.decode_flops / f.dot_peak * 1e3),
                                   f.lat.tpot_ms)
                          : 0.0}};
}

std::string percents(const Spread& sp) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(1) << 100 * sp.p50 << " % (p10 " << 100 * sp.p10
    << " %, p90 " << 100 * sp.p90 << " %, " << sp.count << " steps)";
  return o.str();
}

// The settings and vLLM's serving metrics.
void print_serving(std::ostream& out, const BenchSettings& s, const Figures& f,
                   const nlohmann::json& j) {
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
      << "duration                " << f.duration << " s\n"
      << "request throughput      " << j["request_throughput"].get<double>() << " req/s\n"
      << "output throughput       " << j["output_throughput"].get<double>() << " tokens/s\n"
      << "total token throughput  " << j["total_token_throughput"].get<double>() << " tokens/s\n"
      << "                              mean       p50       p90       p99\n"
      << "TTFT (ms)               " << ms(f.lat.ttft_ms) << "\n"
      << "TPOT (ms)               " << ms(f.lat.tpot_ms) << "\n"
      << "ITL (ms)                " << ms(f.lat.itl_ms) << "\n"
      << "E2E latency (ms)        " << ms(f.lat.e2el_ms) << "\n";
}

// The engine's counters and the floors.
void print_floors(std::ostream& out, const Figures& f, const nlohmann::json& j) {
  out << "iterations              " << f.stats.iterations << ", avg batch "
      << j["avg_batch_size"].get<double>() << " sequences, "
      << j["avg_tokens_per_iteration"].get<double>() << " tokens\n"
      << "engine time             " << j["step_ms_per_iteration"].get<double>()
      << " ms per iteration, of which the forward pass "
      << j["forward_ms_per_iteration"].get<double>() << " ms and the host (scheduling, sampling, "
      << "detokenizing, hand-off) " << j["host_ms_per_iteration"].get<double>() << " ms ("
      << 100 * j["host_fraction_of_step"].get<double>() << " %)\n";
  for (const auto& stage : j["profile"])
    out << "  " << std::left << std::setw(58) << stage["stage"].get<std::string>() << std::right
        << std::setw(9) << stage["ms_per_iteration"].get<double>() << " ms " << std::setw(6)
        << 100 * stage["share_of_step"].get<double>() << " %\n";
  out << "KV usage                mean " << 100 * j["kv_usage_mean"].get<double>() << " %, max "
      << 100 * j["kv_usage_max"].get<double>() << " % of " << f.pool_blocks << " blocks; "
      << f.preemptions << " preemptions\n"
      << "speculative decoding    " << f.stats.spec_accepted_tokens << " of "
      << f.stats.spec_draft_tokens << " proposed tokens accepted over " << f.stats.spec_drafts
      << " speculating steps (mean accepted length "
      << j["spec_decode_mean_accepted_length"].get<double>() << ")\n"
      << "prefix cache            " << (j["enable_prefix_caching"].get<bool>() ? "on" : "off")
      << ": " << f.prefix_hits << " of " << f.prefix_queries << " prompt tokens from the cache ("
      << 100 * j["prefix_cache_hit_rate"].get<double>() << " %), " << f.cached_blocks
      << " blocks cached\n"
      << "constraint              "
      << (j["guided_json"].get<std::string>().empty()
              ? "none"
              : "guided_json " + j["guided_json"].get<std::string>())
      << "\n"
      << "bandwidth floor         " << f.tpot_floor_ms << " ms per step (" << f.step_bytes / 1e9
      << " GB of weights at " << f.bw / 1e9 << " GB/s); p50 TPOT is "
      << 100 * j["tpot_fraction_of_floor"].get<double>() << " % of it\n"
      << "prefill                 " << f.prefill_tps << " tokens/s (scheduled to first token); "
      << f.prefill_flops / 1e9 << " GFLOP per token";
  if (f.fma_peak > 0)
    out << ", FMA peak " << f.fma_peak / 1e9 << " GFLOP/s: " << 100 * f.prefill_fraction
        << " % of it";
  out << "\n";
  if (f.decode_paired.count > 0)
    out << "paired decode floor     each step against a plain read of the same weights "
           "right after it: "
        << percents(f.decode_paired) << "; those reads ran at " << f.bw_paired.p50 << " GB/s (p10 "
        << f.bw_paired.p10 << ", p90 " << f.bw_paired.p90 << ")\n";
  if (f.prefill_paired.count > 0)
    out << "paired prefill peak     each prefill step against FMA chains of as many FLOPs right "
           "after it: "
        << percents(f.prefill_paired) << "; those peaks were " << f.peak_paired.p50
        << " GFLOP/s (p10 " << f.peak_paired.p10 << ", p90 " << f.peak_paired.p90 << ")\n";
  if (f.fma_peak > 0)
    out << "decode step floor       " << f.step_floor_ms << " ms (bandwidth, or " << f.decode_batch
        << " tokens' FLOPs at the FMA peak); p50 TPOT is "
        << 100 * j["tpot_fraction_of_step_floor"].get<double>() << " % of it\n";
  if (f.decode_ms.count > 0) {
    out << "decode-only steps       " << f.decode_ms.count << ", avg batch " << f.decode_only_batch
        << ": p50 " << f.decode_ms.p50 << " ms (p10 " << f.decode_ms.p10 << ", p90 "
        << f.decode_ms.p90 << "); floor " << f.decode_only_floor_ms << " ms (bandwidth, or "
        << "FLOPs at the FMA peak): p50 at "
        << 100 * j["decode_only_fraction_of_floor"].get<double>() << " %";
    if (f.dot_peak > 0)
      out << "; at the dot-product peak " << f.decode_only_dot_floor_ms
          << " ms: " << 100 * j["decode_only_fraction_of_dot_floor"].get<double>() << " %";
    out << "\n";
  }
  if (f.dot_peak > 0)
    out << "dot-product peak        " << f.dot_peak / 1e9
        << " GFLOP/s (the kernels' instruction): prefill at "
        << 100 * j["prefill_fraction_of_dot_peak"].get<double>() << " % of it; decode step floor "
        << j["decode_step_floor_at_dot_peak_ms"].get<double>() << " ms at it, p50 TPOT at "
        << 100 * j["tpot_fraction_of_dot_step_floor"].get<double>() << " % of that\n";
}

}  // namespace

BenchReport make_report(const BenchSettings& s, const FlopShape& shape,
                        const std::vector<BenchRequest>& reqs, const BenchRun& run,
                        double step_bytes) {
  const Figures f = compute(shape, reqs, run, step_bytes);
  BenchReport r{to_json(s, f), {}};
  std::ostringstream out;
  print_serving(out, s, f, r.json);
  print_floors(out, f, r.json);
  r.text = out.str();
  return r;
}

}  // namespace saker::cli
