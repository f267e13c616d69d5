#include "launcher/serve/metrics.h"

#include <time.h>

#include <cstdio>

namespace saker::serve {
namespace {

std::string num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

const std::vector<double> kLatencyBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                             0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                             7.5,   10.0,  20.0, 40.0, 80.0, 160.0};
const std::vector<double> kTokenBuckets = {0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
                                           0.1,   0.15, 0.2,   0.3,  0.4,   0.5,  0.75, 1.0,  2.5};

}  // namespace

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help,
                       const std::string& model) const {
  const std::string label = "model_name=\"" + model + "\"";
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? num(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + label + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum{" + label + "} " + num(sum_) + "\n" + name + "_count{" + label + "} " +
         std::to_string(count_) + "\n";
}

ServingMetrics::ServingMetrics()
    : queue_(kLatencyBuckets),
      ttft_(kLatencyBuckets),
      tpot_(kTokenBuckets),
      e2e_(kLatencyBuckets) {}

void ServingMetrics::set_gauges(const Gauges& g) {
  std::lock_guard lock(mu_);
  g_ = g;
}

Gauges ServingMetrics::gauges() const {
  std::lock_guard lock(mu_);
  return g_;
}

void ServingMetrics::count_iteration(std::int64_t preemptions_total, double step_seconds_total,
                                     double forward_seconds_total) {
  std::lock_guard lock(mu_);
  ++iterations_;
  preemptions_ = static_cast<std::uint64_t>(preemptions_total);
  step_seconds_ = step_seconds_total;
  forward_seconds_ = forward_seconds_total;
}

void ServingMetrics::finished(std::int64_t prompt_tokens, std::int64_t generated_tokens,
                              double queue_s, double ttft_s, double tpot_s, double e2e_s,
                              const std::string& reason) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<std::uint64_t>(prompt_tokens);
  generated_tokens_ += static_cast<std::uint64_t>(generated_tokens);
  if (reason == "length")
    ++finished_length_;
  else if (reason == "cancelled")
    ++finished_cancelled_;
  else
    ++finished_stop_;
  if (queue_s >= 0) queue_.observe(queue_s);
  if (ttft_s >= 0) ttft_.observe(ttft_s);
  if (tpot_s >= 0) tpot_.observe(tpot_s);
  e2e_.observe(e2e_s);
}

void ServingMetrics::rejected(int status) {
  std::lock_guard lock(mu_);
  ++(status >= 500 ? rejected_5xx_ : rejected_4xx_);
}

std::string ServingMetrics::render(const std::string& model) const {
  std::lock_guard lock(mu_);
  std::string out;
  const std::string label = "{model_name=\"" + model + "\"}";
  auto gauge = [&](const std::string& name, const std::string& help, double v) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + label + " " +
           num(v) + "\n";
  };
  auto counter = [&](const std::string& name, const std::string& help, double v) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n" + name + label + " " +
           num(v) + "\n";
  };
  gauge("vllm:num_requests_running", "Sequences in the running batch.",
        static_cast<double>(g_.running));
  gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.",
        static_cast<double>(g_.waiting));
  gauge("vllm:gpu_cache_usage_perc", "Share of the KV cache's blocks in use (1 = full).",
        g_.kv_usage);
  gauge("saker:iteration_sequences", "Sequences in the last iteration.",
        static_cast<double>(g_.iteration_sequences));
  gauge("saker:iteration_tokens", "Tokens in the last iteration.",
        static_cast<double>(g_.iteration_tokens));
  gauge("saker:kv_blocks_used", "KV blocks referenced by sequences.",
        static_cast<double>(g_.kv_blocks_used));
  gauge("saker:kv_blocks_free", "KV blocks free, counting cached blocks nobody references.",
        static_cast<double>(g_.kv_blocks_free));
  gauge("saker:kv_blocks_cached", "KV blocks in the prefix cache, referenced or not.",
        static_cast<double>(g_.kv_blocks_cached));
  counter("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
          static_cast<double>(g_.prefix_cache_queries));
  counter("vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
          static_cast<double>(g_.prefix_cache_hits));
  counter("vllm:spec_decode_num_drafts_total",
          "Speculative decoding: sequence steps that ran proposals.",
          static_cast<double>(g_.spec_drafts));
  counter("vllm:spec_decode_num_draft_tokens_total", "Speculative decoding: tokens proposed.",
          static_cast<double>(g_.spec_draft_tokens));
  counter("vllm:spec_decode_num_accepted_tokens_total",
          "Speculative decoding: proposed tokens the target's own choice confirmed.",
          static_cast<double>(g_.spec_accepted_tokens));
  counter("saker:iterations_total", "Iterations run.", static_cast<double>(iterations_));
  counter("saker:iteration_seconds_total",
          "Engine thread time in iterations: scheduling, the model, sampling, detokenizing.",
          step_seconds_);
  counter("saker:forward_seconds_total", "Of which the model's forward pass.", forward_seconds_);
  timespec cpu{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);  // rendering runs on the HTTP thread
  counter("saker:http_thread_cpu_seconds_total", "CPU time of the HTTP thread.",
          static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) * 1e-9);
  counter("vllm:num_preemptions_total", "Sequences preempted (recomputed later).",
          static_cast<double>(preemptions_));
  counter("vllm:prompt_tokens_total", "Prompt tokens of finished requests.",
          static_cast<double>(prompt_tokens_));
  counter("vllm:generation_tokens_total", "Generated tokens of finished requests.",
          static_cast<double>(generated_tokens_));
  out +=
      "# HELP vllm:request_success_total Finished requests by finish reason.\n"
      "# TYPE vllm:request_success_total counter\n";
  for (const auto& [reason, n] : {std::pair<const char*, std::uint64_t>{"length", finished_length_},
                                  {"stop", finished_stop_},
                                  {"abort", finished_cancelled_}})
    out += "vllm:request_success_total{model_name=\"" + model + "\",finished_reason=\"" + reason +
           "\"} " + std::to_string(n) + "\n";
  counter("saker:requests_rejected_4xx_total", "Requests refused as invalid or over a limit.",
          static_cast<double>(rejected_4xx_));
  counter("saker:requests_rejected_5xx_total", "Requests refused while unhealthy or failed.",
          static_cast<double>(rejected_5xx_));
  queue_.render(out, "vllm:request_queue_time_seconds", "Time from arrival to first scheduled.",
                model);
  ttft_.render(out, "vllm:time_to_first_token_seconds", "Time from arrival to the first token.",
               model);
  tpot_.render(out, "vllm:time_per_output_token_seconds",
               "Mean time between output tokens per request.", model);
  e2e_.render(out, "vllm:e2e_request_latency_seconds", "Time from arrival to the last token.",
              model);
  return out;
}

void ServingMetrics::on_state(const EngineSnapshot& s) {
  Gauges g;
  g.running = s.running;
  g.waiting = s.waiting;
  g.kv_usage = s.kv_blocks > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks : 0.0;
  g.iteration_sequences = s.last.sequences;
  g.iteration_tokens = s.last.tokens;
  g.kv_blocks_used = s.kv_blocks_used;
  g.kv_blocks_free = s.kv_blocks - s.kv_blocks_used;
  g.kv_blocks_cached = s.kv_blocks_cached;
  g.prefix_cache_queries = s.prefix_cache_queries;
  g.prefix_cache_hits = s.prefix_cache_hits;
  g.spec_drafts = s.totals.spec_drafts;
  g.spec_draft_tokens = s.totals.spec_draft_tokens;
  g.spec_accepted_tokens = s.totals.spec_accepted_tokens;
  set_gauges(g);
}

void ServingMetrics::on_iteration(const IterationStats&, const EngineSnapshot& s) {
  count_iteration(static_cast<std::int64_t>(s.preemptions), s.totals.step_seconds,
                  s.totals.forward_seconds);
}

void ServingMetrics::on_finished(const BatchResult& r, const std::string&) {
  const auto n = static_cast<double>(r.tokens.size());
  const bool any = !r.tokens.empty();
  finished(r.prompt_tokens, static_cast<std::int64_t>(r.tokens.size()),
           r.scheduled >= 0 ? r.scheduled - r.arrival : -1, any ? r.first_token - r.arrival : -1,
           n > 1 ? (r.finished - r.first_token) / (n - 1) : -1, r.finished - r.arrival,
           finish_reason_name(r.finish));
}

}  // namespace saker::serve
