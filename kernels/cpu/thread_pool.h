// A fixed set of worker threads that run one parallel loop at a time. The caller's thread takes
// part as worker 0, so `ThreadPool(1)` runs everything inline. Dispatching a loop allocates
// nothing and takes no lock on the hot path: workers wait on an atomic generation counter.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace saker {

// A non-owning reference to a callable: cheap to pass, never allocates.
template <typename Sig>
class FunctionRef;
template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): used like a function parameter
      : obj_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* o, Args... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...);
        }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

class ThreadPool {
 public:
  // `threads` == 0 means one per processor available to this process.
  explicit ThreadPool(unsigned threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

  // Calls fn(begin, end, worker) over contiguous, near-equal slices of [0, n), one per worker,
  // and returns when all are done; `worker` < size() indexes per-thread scratch. Results must not
  // depend on how [0, n) is sliced. Not reentrant. An exception in any slice is rethrown here.
  void parallel_for(std::int64_t n, FunctionRef<void(std::int64_t, std::int64_t, unsigned)> fn);

  // Like parallel_for, but slice boundaries are multiples of `grain` (except the end).
  void parallel_for_grain(std::int64_t n, std::int64_t grain,
                          FunctionRef<void(std::int64_t, std::int64_t, unsigned)> fn);

 private:
  void worker_loop(unsigned id);
  void run_slice(unsigned id);

  std::vector<std::thread> workers_;
  std::atomic<std::uint32_t> generation_{0};
  std::atomic<unsigned> pending_{0};
  std::atomic<bool> stop_{false};
  // The current loop; written before generation_ is bumped, read after it is seen.
  const FunctionRef<void(std::int64_t, std::int64_t, unsigned)>* fn_ = nullptr;
  std::int64_t n_ = 0;
  std::int64_t grain_ = 1;
  std::vector<std::exception_ptr> errors_;
};

// Processors this process may run on (sched_getaffinity), at least 1.
unsigned available_cpus();

}  // namespace saker
