// Serving metrics in the Prometheus text format, with vLLM's names (vllm:…) so existing
// dashboards work. Updated by the engine thread, read by the HTTP thread: one mutex, held briefly.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace saker::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help,
              const std::string& model) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, the last one +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

struct Gauges {
  std::int64_t running = 0, waiting = 0;
  double kv_usage = 0;  // share of the KV pool's blocks in use
  std::int64_t iteration_sequences = 0, iteration_tokens = 0;  // the last iteration's
  // The block pool: referenced by sequences, free (the free list plus cached blocks nobody
  // references), and in the prefix cache (referenced or not).
  std::int64_t kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_cached = 0;
  // Prompt tokens looked up in the prefix cache and found there, since the start (counters).
  std::uint64_t prefix_cache_queries = 0, prefix_cache_hits = 0;
  std::uint64_t spec_drafts = 0, spec_draft_tokens = 0, spec_accepted_tokens = 0;
};

// Fed by the engine (an observer on its thread) and by the routes (refusals).
class ServingMetrics : public EngineObserver {
 public:
  ServingMetrics();

  void on_iteration(const IterationStats& it, const EngineSnapshot& s) override;
  void on_state(const EngineSnapshot& s) override;
  void on_finished(const BatchResult& r, const std::string& tag) override;

  void set_gauges(const Gauges& g);
  void count_iteration(std::int64_t preemptions_total, double step_seconds_total,
                       double forward_seconds_total);
  void finished(std::int64_t prompt_tokens, std::int64_t generated_tokens, double queue_s,
                double ttft_s, double tpot_s, double e2e_s, const std::string& reason);
  void rejected(int status);
  // The whole exposition, `model` as the model_name label.
  std::string render(const std::string& model) const;
  Gauges gauges() const;

 private:
  mutable std::mutex mu_;
  Gauges g_;
  std::uint64_t iterations_ = 0, preemptions_ = 0, prompt_tokens_ = 0, generated_tokens_ = 0;
  std::uint64_t finished_length_ = 0, finished_stop_ = 0, finished_cancelled_ = 0;
  std::uint64_t rejected_4xx_ = 0, rejected_5xx_ = 0;
  double step_seconds_ = 0, forward_seconds_ = 0;
  Histogram queue_, ttft_, tpot_, e2e_;
};

}  // namespace saker::serve
