// The engine API: the one front door every frontend drives (HTTP, the backend socket, offline
// JSONL jobs, `saker generate`, `saker bench`). Built from one options struct on every rank of a
// tensor-parallel group, it loads this rank's shard, sizes the KV pool and owns both loops:
// rank 0's (take requests → schedule → step every rank → sample → stream events) and the other
// ranks' (execute the plans rank 0 sends). Frontends submit requests through requests() and hear
// back through each request's sink; they never touch the scheduler, the model or MPI.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "engine/batch_engine.h"
#include "engine/model/model_shape.h"
#include "engine/request.h"
#include "engine/request_queue.h"
#include "engine/scheduler.h"
#include "engine/speculative/speculation.h"

namespace saker {

class ConstraintCompiler;

class Backend;
class Communicator;
class StepRunner;
class Tokenizer;

struct EngineOptions {
  std::string model_dir;                      // a Hugging Face model directory
  std::string device;                         // cuda, cpu, or empty: cuda when a GPU is visible
  std::string dtype = "auto";                 // weights: auto (as stored) or int8
  unsigned threads = 0;                       // CPU backend threads; 0: every available core
  std::int32_t max_batch_size = 32;           // sequences in flight (dynamic: requests per batch)
  std::int64_t max_batch_tokens = 512;        // tokens per iteration; longer prompts are chunked
  std::int64_t block_size = 16;               // KV block, tokens
  std::optional<std::size_t> kv_cache_bytes;  // per rank; default: a share of free memory
  double kv_cache_fraction = 0.9;             // of the memory free after loading
  std::int64_t kv_cache_tokens = 0;  // > 0: a pool of exactly this many tokens (one generation)
  AdmissionPolicy policy = AdmissionPolicy::kMaxUtilization;
  Batching batching = Batching::kRolling;
  double max_batch_delay_s = 0.1;     // dynamic batching: how long a batch waits to fill
  double collective_timeout_s = 600;  // a step's collectives longer than this end the job
  // One collective (not a whole step) waiting longer than this means a peer or its link is gone;
  // while serving, rank 0 sends a heartbeat plan whenever it has been idle this long, so the
  // others notice a lost rank 0 within heartbeat + peer timeout.
  double peer_timeout_s = 20;
  double heartbeat_interval_s = 2;
  bool text = true;                   // rank 0 loads DIR/tokenizer.json (text, stop strings)
  bool warm_up = false;               // run one iteration end to end before health() says ready
  bool log_requests = false;          // one line per finished request (spdlog, info)
  bool enable_prefix_caching = true;  // reuse cached KV blocks of equal prompt prefixes
  // CUDA: linear layers sum every row the same way in any decode step of up to 64 tokens
  // (CudaOptions::batch_invariant); off, each takes its fastest kernel per token count.
  bool batch_invariant = true;
  // CUDA, tensor parallelism: the model's collectives over NCCL, or MPI staged through the host
  // (ranks sharing a GPU), or auto (NCCL unless a node runs more ranks than it has GPUs).
  std::string comm = "auto";
  // CPU, bf16 weights: matmul inputs fp32 (exact fp32 FMA chains), bf16 (rounded once per call,
  // AVX512_BF16 dot products at twice the FMA rate), or auto (bf16 where the CPU has them).
  std::string cpu_matmul = "auto";
  // Benchmarks, CUDA: every weight matrix filled with random values on the device; the
  // checkpoint's tensor bytes are never read, so a sparse file of the right header will do.
  bool random_weights = false;
  // Element type of the KV cache: fp32, bf16, fp16, fp8_e4m3 (or fp8), int8, or auto (the
  // checkpoint's 16-bit dtype, fp32 for an fp32 checkpoint, as vLLM's auto; the default). 16 bits
  // hold twice the tokens of fp32 in the same bytes; 8 bits, with an fp32 scale per token per KV
  // head, 4 * hd / (hd + 4) times. The exactness tests against transformers' fp32 use fp32.
  std::string kv_cache_dtype = "auto";
  // Speculative decoding (engine/speculative/speculation.h): "" (off), "ngram" (prompt lookup
  // from suffixes of up to ngram_max tokens) or "draft" (speculative_model, a Falcon with the
  // target's vocabulary; "" with speculative_model set means draft), proposing up to
  // num_speculative_tokens tokens per step. The draft is split across the ranks like the target
  // and keeps its KV in a pool of as many blocks, carved from the same budget.
  std::string speculative_method;
  std::string speculative_model;
  std::int32_t num_speculative_tokens = 3;
  std::int32_t ngram_max = 4;
  std::string speculative_acceptance = "exact";  // exact (same tokens) or rejection (same law)
  bool speculative_adaptive = true;              // propose only where measured to pay
};

// An option out of range, naming the EngineOptions field, the value and the limit; frontends
// map the field to their own spelling (a flag, a serving.properties key).
class OptionError : public std::invalid_argument {
 public:
  OptionError(std::string field, const std::string& message)
      : std::invalid_argument(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// Test and operations hooks, run on every rank.
struct EngineHooks {
  std::function<void()> after_load;                // the shard is loaded (fault injection)
  std::function<void(std::uint64_t)> before_step;  // before every step, with its number
  // A step's collectives hung past the timeout: must end the whole job (MPI_Abort). Default:
  // print the message and abort this process.
  std::function<void(const std::string&)> fatal;
};

// One iteration that ran (rank 0).
struct IterationStats {
  std::int64_t sequences = 0, tokens = 0;  // in this iteration
  double seconds = 0;                      // scheduling, the model, sampling, detokenizing
};

// A snapshot any thread may take (rank 0).
struct EngineSnapshot {
  EngineStats totals;
  std::int64_t running = 0, waiting = 0;
  std::int32_t kv_blocks = 0, kv_blocks_used = 0;
  std::uint64_t preemptions = 0;
  std::int32_t kv_blocks_cached = 0;                              // in the prefix cache
  std::uint64_t prefix_cache_queries = 0, prefix_cache_hits = 0;  // tokens, since the start
  IterationStats last;
};

// Sees every iteration and every finished request, on the engine thread (metrics, logs).
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void on_iteration(const IterationStats&, const EngineSnapshot&) {}  // one that ran
  virtual void on_state(const EngineSnapshot&) {}  // after every turn of the loop

  virtual void on_finished(const BatchResult&, const std::string& tag) { (void)tag; }
};

// How Engine::run ends and what it calls between iterations (engine thread).
struct RunOptions {
  // Called before every iteration; may submit. Returns whether more will come later (run keeps
  // going while it does, even when the engine is idle).
  std::function<bool()> pump;
  // Called after every iteration that ran.
  std::function<void(const IterationStats&)> after_iteration;
};

// The limits requests to the model in `model_dir` are checked against, from its config alone
// (offline jobs check every line before loading anything); text: whether it has tokenizer.json.
// With the model's tokenizer, structured-output constraints are compiled (checked) too.
RequestLimits read_model_limits(const std::string& model_dir, const Tokenizer* tokenizer = nullptr);

class Engine {
 public:
  // Collective: every rank of comm calls it with the same options. Throws OptionError naming a
  // bad option, std::runtime_error naming the file, tensor or memory limit otherwise (every rank
  // checks the same things, so all fail together). `queue`: where frontends submit (rank 0); it
  // may exist before the engine (a server answers 503 while the model loads); null: the engine
  // makes its own, without a limit.
  Engine(const EngineOptions& options, Communicator& comm, EngineHooks hooks = {},
         std::shared_ptr<RequestQueue> queue = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // --- every rank ---
  bool is_driver() const;
  const RequestLimits& limits() const { return limits_; }
  const ModelShape& shape() const;
  std::int64_t kv_blocks() const;
  std::int64_t block_size() const;
  DType kv_cache_dtype() const;  // as resolved (auto → the checkpoint's)
  unsigned threads() const { return threads_; }
  int ranks() const;
  // Weight bytes one decode step streams on this rank (the bandwidth floor's numerator).
  std::size_t step_weight_bytes() const;
  std::size_t weight_bytes() const;  // this rank holds
  Backend& backend() { return *backend_; }

  // --- rank 0, any thread ---
  RequestQueue& requests() { return *queue_; }
  Admit submit(BatchRequest r, EventSink sink, std::string tag = {}) {
    return queue_->submit(std::move(r), std::move(sink), std::move(tag));
  }
  void cancel(std::uint64_t id) { queue_->cancel(id); }
  void shutdown(double drain_timeout_s) { queue_->shutdown(drain_timeout_s); }
  Health health() const { return queue_->health(); }
  EngineSnapshot stats() const;
  // Rank 0 with options.text: the model's tokenizer; else null.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  std::vector<std::int64_t> eos_token_ids() const;

  // --- the main thread of every rank (the only one that makes MPI calls) ---
  // Rank 0: serves until shutdown() has drained (requests still running when the drain time is
  // over are cancelled). Other ranks: execute rank 0's plans until it ends.
  void serve();
  // Rank 0: runs until nothing waits or runs and options.pump (if set) has no more to submit
  // (offline jobs, bench). Other ranks: execute rank 0's plans until it ends. May be called
  // again, on every rank: each call is one phase (bench measures between them).
  void run(const RunOptions& options = {});
  // Rank 0, between runs: totals start again from zero.
  void reset_stats();
  void set_observer(EngineObserver* o) { observer_ = o; }
  // Seconds on the engine's clock (request arrival and token times use it).
  double now() const;

  // Testing: the rank-0 batch engine (logits observers, forced full rows).
  BatchEngine& batch_engine() { return *batch_; }

 private:
  struct Parts;
  struct Live {
    std::string tag;
    EventSink sink;
  };
  void load(const EngineOptions& o, Communicator& comm);
  // What ends the job when a watchdog expires: hooks_.fatal, else a message and abort().
  std::function<void(const std::string&)> fatal(int rank) const;
  void load_draft(const EngineOptions& o, Communicator& comm);
  void size_kv_pool(const EngineOptions& o, Communicator& comm);
  void start_driver(const EngineOptions& o);
  void warm_up();
  // The rank-0 loop shared by serve() and run(); `serving` picks how it ends.
  void drive(bool serving, const RunOptions& ro);
  void apply(RequestQueue::Command& c);
  void finish(RequestEvent&& e);
  void deliver_events();
  void publish(const IterationStats& it, bool ran);
  void cancel_all();

  std::unique_ptr<Parts> parts_;
  StepRunner* runner_ = nullptr;  // parts_'s, for the loops
  Backend* backend_ = nullptr;
  unsigned threads_ = 0;
  RequestLimits limits_;
  EngineHooks hooks_;
  double heartbeat_interval_s_ = 2;
  std::shared_ptr<RequestQueue> queue_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<const ConstraintCompiler> constraints_;  // with the tokenizer
  SpeculationConfig spec_;                                 // speculative decoding (rank 0)
  std::unique_ptr<BatchEngine> batch_;
  EngineObserver* observer_ = nullptr;
  bool log_requests_ = false;
  mutable std::mutex stats_mu_;
  EngineSnapshot snapshot_;
  std::unordered_map<std::uint64_t, Live> live_;  // engine thread only
  std::vector<RequestEvent> events_;              // this iteration's, delivered once it is over
};

}  // namespace saker
