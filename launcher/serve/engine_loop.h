// Rank 0's serving loop. The HTTP thread submits and cancels requests through a locked inbox; the
// main thread (the only one that makes MPI calls) drains it between iterations, steps the batch
// engine, and hands every token to its request's delivery function, which only posts to the HTTP
// side: the network never blocks the scheduler, and the scheduler never waits on a client.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/batch_engine.h"
#include "launcher/serve/metrics.h"

namespace saker::serve {

enum class Health { kLoading, kReady, kDraining, kStopped, kFailed };

// One step of a request's life, as its frontend sees it.
struct Update {
  std::uint64_t id = 0;
  std::int32_t token = -1;  // -1: none (a refusal, or a cancellation between tokens)
  std::int64_t index = 0;
  std::string text;
  float logprob = 0;
  std::vector<TokenLogprob> top;
  FinishReason finish = FinishReason::kNone;
  std::shared_ptr<const BatchResult> result;  // with the last update
  std::string error;                          // the engine refused the request (with finish)
};
// Called on the engine thread; must return at once (post to the connection's executor).
using Deliver = std::function<void(Update&&)>;

struct Submission {
  BatchRequest request;
  std::string route;  // for the request log
  Deliver deliver;
};

class EngineLoop {
 public:
  EngineLoop(ServingMetrics& metrics, std::size_t queue_limit);

  // --- any thread ---
  std::uint64_t next_id() { return next_id_++; }
  enum class Admit { kQueued, kQueueFull, kNotReady };
  Admit submit(Submission s);
  void cancel(std::uint64_t id);
  // kFailed while a step has been stuck long enough that the watchdog is about to end the job.
  Health health() const {
    const Health h = health_.load();
    return h == Health::kReady && stalled_ && stalled_() ? Health::kFailed : h;
  }
  void set_stall_probe(std::function<bool()> p) { stalled_ = std::move(p); }
  // Stops taking requests; in-flight ones may finish for drain_timeout_s, then are cancelled.
  void shutdown(double drain_timeout_s);
  std::size_t queue_limit() const { return queue_limit_; }

  // --- main thread ---
  // Runs until shutdown has drained; stops the other ranks' step loops at the end.
  void run(BatchEngine& engine, StepRunner& runner);
  void set_health(Health h) { health_ = h; }

 private:
  struct Command {
    enum { kSubmit, kCancel } kind;
    Submission submission;
    std::uint64_t id = 0;
  };
  struct Live {
    std::string route;
    Deliver deliver;
  };
  void apply(Command& c, BatchEngine& engine);
  void finish(std::uint64_t id, Update&& u, BatchEngine& engine);
  void publish(BatchEngine& engine);
  void deliver_updates(BatchEngine& engine);

  ServingMetrics& metrics_;
  std::size_t queue_limit_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<Health> health_{Health::kLoading};
  std::function<bool()> stalled_;
  std::atomic<std::size_t> waiting_{0};  // inbox + scheduler queue, for the 429 check
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> inbox_;
  bool shutdown_ = false;
  double drain_timeout_s_ = 0;
  // Engine thread only.
  std::unordered_map<std::uint64_t, Live> live_;
  std::vector<Update> updates_;  // this iteration's, delivered once it is over
  std::int64_t last_sequences_ = 0,
               last_tokens_ = 0;  // last events of this iteration, delivered with their results
};

}  // namespace saker::serve
