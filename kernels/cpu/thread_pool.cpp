#include "kernels/cpu/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace saker {
namespace {

// How long a waiting thread spins before it sleeps on the futex. The loops of a decode step come
// microseconds apart and a futex wake-up costs tens of microseconds, so spinning through the gaps
// pays, and it makes no system call (the clock is read through the vDSO): a step's loops run
// without entering the kernel. Past the spin time (between steps, or when the machine is
// oversubscribed and the awaited thread is not running) the waiter sleeps.
constexpr auto kSpinTime = std::chrono::microseconds(100);

// Returns the atomic's value once it differs from `old`.
template <typename T>
T wait_for_change(const std::atomic<T>& a, T old) {
  T v = a.load(std::memory_order_acquire);
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (unsigned i = 1; v == old; ++i) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
    v = a.load(std::memory_order_acquire);
    if (v == old && i % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
  }
  while (v == old) {
    a.wait(old, std::memory_order_acquire);
    v = a.load(std::memory_order_acquire);
  }
  return v;
}

}  // namespace

unsigned available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(unsigned threads) {
  if (threads == 0) threads = available_cpus();
  errors_.resize(threads);
  workers_.reserve(threads - 1);
  for (unsigned i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_slice(unsigned id) {
  const std::int64_t workers = size();
  const std::int64_t chunks = (n_ + grain_ - 1) / grain_;
  const std::int64_t begin = std::min(n_, chunks * id / workers * grain_);
  const std::int64_t end = std::min(n_, chunks * (id + 1) / workers * grain_);
  if (begin >= end) return;
  try {
    (*fn_)(begin, end, id);
  } catch (...) {
    errors_[id] = std::current_exception();
  }
}

void ThreadPool::worker_loop(unsigned id) {
  std::uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(generation_, seen);
    if (stop_.load(std::memory_order_acquire)) return;
    run_slice(id);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::parallel_for(std::int64_t n,
                              FunctionRef<void(std::int64_t, std::int64_t, unsigned)> fn) {
  parallel_for_grain(n, 1, fn);
}

void ThreadPool::parallel_for_grain(std::int64_t n, std::int64_t grain,
                                    FunctionRef<void(std::int64_t, std::int64_t, unsigned)> fn) {
  if (n <= 0) return;
  fn_ = &fn;
  n_ = n;
  grain_ = std::max<std::int64_t>(1, grain);
  if (workers_.empty() || n <= grain_) {
    // Too little work to share: run inline, no wake-ups.
    fn(0, n, 0);
    return;
  }
  pending_.store(static_cast<unsigned>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  run_slice(0);
  for (unsigned left = static_cast<unsigned>(workers_.size()); left != 0;)
    left = wait_for_change(pending_, left);
  for (auto& e : errors_) {
    if (e) {
      auto err = std::exchange(e, nullptr);
      for (auto& other : errors_) other = nullptr;
      std::rethrow_exception(err);
    }
  }
}

}  // namespace saker
