#include "launcher/serve/engine_loop.h"

#include <chrono>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

namespace saker::serve {

EngineLoop::EngineLoop(ServingMetrics& metrics, std::size_t queue_limit)
    : metrics_(metrics), queue_limit_(queue_limit) {}

EngineLoop::Admit EngineLoop::submit(Submission s) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_ || health_ != Health::kReady) return Admit::kNotReady;
    if (waiting_ >= queue_limit_) return Admit::kQueueFull;
    ++waiting_;
    inbox_.push_back({Command::kSubmit, std::move(s), 0});
  }
  cv_.notify_one();
  return Admit::kQueued;
}

void EngineLoop::cancel(std::uint64_t id) {
  {
    std::lock_guard lock(mu_);
    inbox_.push_back({Command::kCancel, {}, id});
  }
  cv_.notify_one();
}

void EngineLoop::shutdown(double drain_timeout_s) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    drain_timeout_s_ = drain_timeout_s;
    if (health_ == Health::kReady) health_ = Health::kDraining;
  }
  cv_.notify_one();
}

void EngineLoop::apply(Command& c, BatchEngine& engine) {
  if (c.kind == Command::kCancel) {
    engine.cancel(c.id);  // the listener reports it; unknown or finished ids are ignored
    return;
  }
  Submission& s = c.submission;
  const std::uint64_t id = s.request.id;
  try {
    engine.add(std::move(s.request));
    live_[id] = {std::move(s.route), std::move(s.deliver)};
  } catch (const std::exception& e) {
    // Frontends check what they can first; what only the engine knows (the KV pool) ends here.
    Update u;
    u.id = id;
    u.finish = FinishReason::kCancelled;
    u.error = e.what();
    s.deliver(std::move(u));
  }
}

void EngineLoop::finish(std::uint64_t id, Update&& u, BatchEngine& engine) {
  auto it = live_.find(id);
  if (it == live_.end()) return;
  auto result = engine.take_result(id);
  if (result) {
    const BatchResult& r = *result;
    const auto n = static_cast<double>(r.tokens.size());
    const bool any = !r.tokens.empty();
    const double ttft = any ? r.first_token - r.arrival : -1;
    const double e2e = r.finished - r.arrival;
    metrics_.finished(r.prompt_tokens, static_cast<std::int64_t>(r.tokens.size()),
                      r.scheduled >= 0 ? r.scheduled - r.arrival : -1, ttft,
                      n > 1 ? (r.finished - r.first_token) / (n - 1) : -1, e2e,
                      finish_reason_name(r.finish));
    spdlog::info("request {} {}: {} prompt + {} generated tokens, ttft {}, total {:.1f} ms, {}", id,
                 it->second.route, r.prompt_tokens, r.tokens.size(),
                 any ? fmt::format("{:.1f} ms", ttft * 1e3) : std::string("none"), e2e * 1e3,
                 finish_reason_name(r.finish));
    u.result = std::make_shared<const BatchResult>(std::move(*result));
  }
  it->second.deliver(std::move(u));
  live_.erase(it);
}

void EngineLoop::deliver_updates(BatchEngine& engine) {
  for (Update& u : updates_) {
    if (u.finish != FinishReason::kNone) {
      finish(u.id, std::move(u), engine);
    } else if (auto it = live_.find(u.id); it != live_.end()) {
      it->second.deliver(std::move(u));
    }
  }
  updates_.clear();
}

void EngineLoop::publish(BatchEngine& engine) {
  const Scheduler& s = engine.scheduler();
  Gauges g;
  g.running = static_cast<std::int64_t>(s.running());
  g.waiting = static_cast<std::int64_t>(s.waiting());
  g.kv_usage = static_cast<double>(engine.blocks().used_blocks()) / engine.blocks().num_blocks();
  g.iteration_sequences = last_sequences_;
  g.iteration_tokens = last_tokens_;
  metrics_.set_gauges(g);
  std::lock_guard lock(mu_);
  waiting_ = inbox_.size() + s.waiting();
}

void EngineLoop::run(BatchEngine& engine, StepRunner& runner) {
  engine.set_listener([this](const TokenEvent& ev) {
    auto it = live_.find(ev.id);
    if (it == live_.end()) return;
    Update u;
    u.id = ev.id;
    u.token = ev.token;
    u.index = ev.index;
    u.text.assign(ev.text);
    u.logprob = ev.logprob;
    u.top.assign(ev.top.begin(), ev.top.end());
    u.finish = ev.finish;
    // Delivered after the iteration, once the queue counts are current (a client that sees its
    // first token must not still count as waiting) and, for last events, with the result.
    updates_.push_back(std::move(u));
  });
  using clock = std::chrono::steady_clock;
  std::optional<clock::time_point> deadline;
  std::deque<Command> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      // Idle: sleep until a command arrives (or, with requests queued, e.g. a dynamic batch
      // gathering, until its delay may have passed).
      if (inbox_.empty() && !shutdown_)
        cv_.wait_for(lock,
                     engine.idle() ? std::chrono::milliseconds(500) : std::chrono::milliseconds(0));
      batch.swap(inbox_);
      if (shutdown_ && !deadline)
        deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                      std::chrono::duration<double>(drain_timeout_s_));
    }
    for (Command& c : batch) apply(c, engine);
    batch.clear();
    if (deadline && (engine.idle() || clock::now() >= *deadline)) break;
    if (!engine.idle()) {
      const EngineStats before = engine.stats();
      if (engine.step()) {
        const EngineStats& after = engine.stats();
        last_sequences_ = static_cast<std::int64_t>(after.batch_sequences - before.batch_sequences);
        last_tokens_ = static_cast<std::int64_t>(after.batch_tokens - before.batch_tokens);
        metrics_.count_iteration(static_cast<std::int64_t>(engine.scheduler().preemptions()),
                                 after.step_seconds, after.forward_seconds);
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    publish(engine);
    deliver_updates(engine);
  }
  // Drain time is over: whatever still runs is cancelled (its client hears so).
  std::vector<std::uint64_t> rest;
  for (const auto& [id, live] : live_) rest.push_back(id);
  for (const std::uint64_t id : rest) engine.cancel(id);
  deliver_updates(engine);
  runner.stop();
  health_ = Health::kStopped;
}

}  // namespace saker::serve
