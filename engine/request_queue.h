// The engine's front door on rank 0: frontends (HTTP, the backend socket, offline jobs, bench)
// submit and cancel requests here from any thread; the engine loop, on the main thread (the only
// one that makes MPI calls), takes what arrived between iterations. Each request's events go back
// through its sink, called on the engine thread: a sink must return at once (post to the
// connection's executor), so a client never blocks the scheduler.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"

namespace saker {

enum class Health { kLoading, kReady, kDraining, kStopped, kFailed };

// One step of a request's life, as its frontend sees it.
struct RequestEvent {
  std::uint64_t id = 0;
  std::int32_t token = -1;  // -1: none (a refusal, or a cancellation between tokens)
  std::int64_t index = 0;   // among the generated tokens
  std::string text;         // what this token releases (see TokenEvent)
  float logprob = 0;
  std::vector<TokenLogprob> top;
  FinishReason finish = FinishReason::kNone;
  std::shared_ptr<const BatchResult> result;  // with the last event
  std::string error;  // the engine refused the request (with finish): why, naming the limit
};
using EventSink = std::function<void(RequestEvent&&)>;

enum class Admit { kQueued, kQueueFull, kNotReady };

class RequestQueue {
 public:
  // At most `limit` requests wait (not yet running) before submit answers kQueueFull.
  explicit RequestQueue(std::size_t limit = std::numeric_limits<std::size_t>::max());

  // --- any thread ---
  std::uint64_t next_id() { return next_id_++; }
  // Checks the request against the model's limits first (RequestError naming the field and the
  // limit, thrown to the caller), then queues it. `tag` names it in the engine's log (a route).
  Admit submit(BatchRequest r, EventSink sink, std::string tag = {});
  // Ends a request: its sink hears a last event with FinishReason::kCancelled. Unknown or
  // finished ids are ignored.
  void cancel(std::uint64_t id);
  // Stops taking requests; in-flight ones may finish for drain_timeout_s, then are cancelled.
  void shutdown(double drain_timeout_s);
  // kFailed while a step has been stuck long enough that the watchdog is about to end the job.
  Health health() const;
  std::size_t limit() const { return limit_; }
  // Known once the model is loaded (before that every submission is refused as not ready).
  std::optional<RequestLimits> limits() const;

  // --- the engine ---
  struct Command {
    enum { kSubmit, kCancel } kind = kSubmit;
    BatchRequest request;
    EventSink sink;
    std::string tag;
    std::uint64_t id = 0;
  };
  void set_health(Health h) { health_ = h; }
  void set_limits(const RequestLimits& l);
  void set_stall_probe(std::function<bool()> p) { stalled_ = std::move(p); }
  // Moves what arrived into `out`; waits up to `wait_s` for something when nothing has.
  // Returns the drain deadline's length once shutdown was asked for.
  std::optional<double> take(std::deque<Command>& out, double wait_s);
  // Requests waiting in the engine's scheduler, for the queue-full check.
  void set_engine_waiting(std::size_t n);

 private:
  std::size_t limit_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<Health> health_{Health::kLoading};
  std::function<bool()> stalled_;
  std::atomic<std::size_t> waiting_{0};  // inbox + scheduler queue
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> inbox_;
  std::optional<RequestLimits> limits_;
  bool shutdown_ = false;
  double drain_timeout_s_ = 0;
};

}  // namespace saker
