// The rank-0 loop behind Engine::serve and Engine::run, and the other ranks' follower loop: the
// one decode driver every frontend shares.
#include <chrono>
#include <deque>
#include <thread>

#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "engine/step_runner.h"

namespace saker {

void Engine::apply(RequestQueue::Command& c) {
  if (c.kind == RequestQueue::Command::kCancel) {
    batch_->cancel(c.id);  // the listener reports it; unknown or finished ids are ignored
    return;
  }
  const std::uint64_t id = c.request.id;
  try {
    batch_->add(std::move(c.request));
    live_[id] = {std::move(c.tag), std::move(c.sink)};
  } catch (const std::exception& e) {
    // What only the engine knows (an id in use, a prompt the KV pool can never hold) ends here.
    RequestEvent ev;
    ev.id = id;
    ev.finish = FinishReason::kCancelled;
    ev.error = e.what();
    c.sink(std::move(ev));
  }
}

void Engine::finish(RequestEvent&& ev) {
  auto it = live_.find(ev.id);
  if (it == live_.end()) return;
  if (auto result = batch_->take_result(ev.id)) {
    const BatchResult& r = *result;
    const bool any = !r.tokens.empty();
    if (log_requests_)
      spdlog::info(
          "request {} {}: {} prompt + {} generated tokens, ttft {}, total {:.1f} ms, {}", ev.id,
          it->second.tag, r.prompt_tokens, r.tokens.size(),
          any ? fmt::format("{:.1f} ms", (r.first_token - r.arrival) * 1e3) : std::string("none"),
          (r.finished - r.arrival) * 1e3, finish_reason_name(r.finish));
    if (observer_) observer_->on_finished(r, it->second.tag);
    ev.result = std::make_shared<const BatchResult>(std::move(*result));
  }
  EventSink sink = std::move(it->second.sink);
  live_.erase(it);
  sink(std::move(ev));
}

void Engine::deliver_events() {
  // Only the batch engine's listener appends here, never a sink (a sink that submits or cancels
  // goes through the queue), so the buffer is walked in place and keeps its capacity.
  for (RequestEvent& ev : events_) {
    if (ev.finish != FinishReason::kNone) {
      finish(std::move(ev));
    } else if (auto it = live_.find(ev.id); it != live_.end()) {
      it->second.sink(std::move(ev));
    }
  }
  events_.clear();
}

void Engine::publish(const IterationStats& it, bool ran) {
  const Scheduler& s = batch_->scheduler();
  EngineSnapshot snap;
  snap.totals = batch_->stats();
  snap.running = static_cast<std::int64_t>(s.running());
  snap.waiting = static_cast<std::int64_t>(s.waiting());
  snap.kv_blocks = batch_->blocks().num_blocks();
  snap.kv_blocks_used = batch_->blocks().used_blocks();
  snap.preemptions = s.preemptions();
  snap.kv_blocks_cached = batch_->blocks().cached_blocks();
  snap.prefix_cache_queries = s.prefix_queries();
  snap.prefix_cache_hits = s.prefix_hits();
  snap.last = it;
  {
    std::lock_guard lock(stats_mu_);
    snapshot_ = snap;
  }
  queue_->set_engine_waiting(s.waiting());
  if (!observer_) return;
  if (ran) observer_->on_iteration(it, snap);
  observer_->on_state(snap);
}

void Engine::cancel_all() {
  std::vector<std::uint64_t> rest;
  for (const auto& [id, live] : live_) rest.push_back(id);
  for (const std::uint64_t id : rest) batch_->cancel(id);
  deliver_events();
}

void Engine::drive(bool serving, const RunOptions& ro) {
  batch_->set_listener([this](const TokenEvent& t) {
    if (!live_.count(t.id)) return;
    RequestEvent ev;
    ev.id = t.id;
    ev.token = t.token;
    ev.index = t.index;
    ev.text.assign(t.text);
    ev.logprob = t.logprob;
    ev.top.assign(t.top.begin(), t.top.end());
    ev.finish = t.finish;
    // Delivered after the iteration, once the queue counts are current (a client that sees its
    // first token must not still count as waiting) and, for last events, with the result.
    events_.push_back(std::move(ev));
  });
  using clock = std::chrono::steady_clock;
  std::optional<clock::time_point> deadline;
  std::deque<RequestQueue::Command> commands;
  IterationStats last;
  // While serving, rank 0 is never silent for longer than the heartbeat interval.
  const auto beat_every = std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(heartbeat_interval_s_));
  // The first one before anything else: from it on, the other ranks expect plans that often.
  if (serving) runner_->heartbeat();
  clock::time_point last_beat = clock::now();
  for (;;) {
    const bool more = ro.pump && ro.pump();
    // Serving and idle: sleep until a request arrives (with requests queued, e.g. a dynamic batch
    // gathering, only look).
    const double wait = serving && batch_->idle() ? 0.5 : 0.0;
    const std::optional<double> drain = queue_->take(commands, wait);
    if (drain && !deadline)
      deadline = clock::now() +
                 std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(*drain));
    for (RequestQueue::Command& c : commands) apply(c);
    commands.clear();
    if (deadline && (batch_->idle() || clock::now() >= *deadline)) break;
    if (!serving && batch_->idle() && !more) break;
    bool ran = false;
    if (!batch_->idle()) {
      const EngineStats before = batch_->stats();
      ran = batch_->step();
      if (ran) {
        const EngineStats& after = batch_->stats();
        last.sequences = static_cast<std::int64_t>(after.batch_sequences - before.batch_sequences);
        last.tokens = static_cast<std::int64_t>(after.batch_tokens - before.batch_tokens);
        last.seconds = after.step_seconds - before.step_seconds;
      }
    }
    publish(last, ran);
    deliver_events();
    if (ran) {
      last_beat = clock::now();
    } else if (serving && clock::now() - last_beat >= beat_every) {
      runner_->heartbeat();
      last_beat = clock::now();
    }
    if (ran && ro.after_iteration) ro.after_iteration(last);
    // Nothing ran: the next arrival is in the future, or a dynamic batch is gathering.
    if (!ran && (!serving || !batch_->idle()))
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Drain time is over: whatever still runs is cancelled (its client hears so).
  cancel_all();
  publish(last, false);
  batch_->set_listener({});
}

void Engine::serve() {
  if (!is_driver()) {
    runner_->serve();
    return;
  }
  try {
    drive(true, {});
  } catch (...) {
    runner_->stop();
    throw;
  }
  runner_->stop();
  queue_->set_health(Health::kStopped);
}

void Engine::run(const RunOptions& ro) {
  if (!is_driver()) {
    runner_->serve();
    return;
  }
  try {
    drive(false, ro);
  } catch (...) {
    runner_->stop();
    throw;
  }
  runner_->stop();
}

}  // namespace saker
