// The CUDA backend's state (CudaBackend::Impl) and the pieces it is made of: private to the
// backend's own files (cuda_backend.cpp: memory and settings; cuda_backend_ops.cpp: the calls
// that launch kernels; cuda_backend_step.cpp: staging host data and decode graphs).
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory.h"

namespace saker::cuda {
namespace detail {

class Stream {
 public:
  Stream() { SAKER_CUDA_CHECK(cudaStreamCreate(&s_)); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { SAKER_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Thrown inside a graph capture by whatever would need the host to wait for the stream (a
// scratch buffer or the staging arena growing): the capture is dropped and the step runs directly.
struct CaptureAbort {};

// How the backend's calls act: launch (kDirect); launch into a stream capture (kCapture); or
// only stage host data and record the step's signature, launching nothing (kStageOnly: the
// step is then replayed from a graph captured with the same signature).
enum class Mode { kDirect, kCapture, kStageOnly };

// Pinned host memory and its device twin for small per-step host data (token ids, logit rows,
// positions, block tables, attention tiles), handed out by bumping an offset, so the data of
// one step lies at fixed offsets and no piece overwrites another of the same step: a graph
// replays the captured host-to-device copies from the same pinned addresses, freshly written.
// The offset returns to 0 at each step (reset), or earlier when the space runs out (wrap: after
// the last copy out of it finished; the device side is overwritten in stream order, after the
// kernels that read it). `epoch` changes whenever earlier pieces may have been overwritten.
class Arena {
 public:
  struct Piece {
    std::byte* host;
    std::byte* device;
    std::size_t bytes;
  };
  // Waits for the copies of the previous step, then starts at offset 0.
  void reset() {
    wait();
    used_ = 0;
    ++epoch_;
  }
  std::uint64_t epoch() const { return epoch_; }
  Piece take(std::size_t bytes, Mode mode, cudaStream_t stream) {
    bytes = std::max<std::size_t>(16, (bytes + 15) / 16 * 16);
    if (used_ + bytes > host_.bytes()) {
      if (mode == Mode::kCapture) throw CaptureAbort{};
      if (used_ > 0 && bytes <= host_.bytes()) {
        wait();  // wrap around
      } else {
        SAKER_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels may read the old copy
        const std::size_t cap = std::max({bytes, 2 * host_.bytes(), std::size_t{64} << 10});
        host_ = PinnedMemory(cap);
        device_ = DeviceMemory(cap);
        pending_ = false;
      }
      used_ = 0;
      ++epoch_;
    }
    const Piece p{static_cast<std::byte*>(host_.get()) + used_,
                  static_cast<std::byte*>(device_.get()) + used_, bytes};
    used_ += bytes;
    return p;
  }
  // Sends a piece (written by the host) to the device, in stream order; nothing in kStageOnly
  // (the graph's copy node does it).
  void send(const Piece& p, Mode mode, cudaStream_t stream) {
    if (mode == Mode::kStageOnly) return;
    SAKER_CUDA_CHECK(cudaMemcpyAsync(p.device, p.host, p.bytes, cudaMemcpyHostToDevice, stream));
    if (mode == Mode::kDirect) mark(stream);
  }
  // Everything sent so far is covered by an event recorded now (outside a capture).
  void mark(cudaStream_t stream) {
    SAKER_CUDA_CHECK(cudaEventRecord(done_.get(), stream));
    pending_ = true;
  }

 private:
  void wait() {
    if (pending_) SAKER_CUDA_CHECK(cudaEventSynchronize(done_.get()));
    pending_ = false;
  }
  PinnedMemory host_;
  DeviceMemory device_;
  Event done_;
  bool pending_ = false;
  std::size_t used_ = 0;
  std::uint64_t epoch_ = 0;
};

// A step's signature: every backend call's arguments and every host-derived launch parameter,
// in order. A graph is replayed only for a step whose signature equals the captured one.
struct Signature {
  std::vector<std::uint64_t> v;
  template <typename... A>
  void add(A... a) {
    (v.push_back(word(a)), ...);
  }

 private:
  template <typename T>
  static std::uint64_t word(T a) {
    if constexpr (std::is_pointer_v<T>) {
      return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(a));
    } else if constexpr (std::is_same_v<T, float>) {
      std::uint32_t u;
      std::memcpy(&u, &a, 4);
      return u;
    } else {
      return static_cast<std::uint64_t>(a);
    }
  }
};

class GraphExec {
 public:
  GraphExec() = default;
  explicit GraphExec(cudaGraphExec_t e) : e_(e) {}
  ~GraphExec() {
    if (e_) cudaGraphExecDestroy(e_);
  }
  GraphExec(GraphExec&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  GraphExec& operator=(GraphExec&& o) noexcept {
    if (this != &o) {
      if (e_) cudaGraphExecDestroy(e_);
      e_ = std::exchange(o.e_, nullptr);
    }
    return *this;
  }
  cudaGraphExec_t get() const { return e_; }
  explicit operator bool() const { return e_ != nullptr; }

 private:
  cudaGraphExec_t e_ = nullptr;
};

// Grows `m` to at least `bytes` (waiting for the kernels that may still use the old memory;
// never inside a capture).
inline void ensure(DeviceMemory& m, std::size_t bytes, Mode mode, cudaStream_t stream) {
  if (m.bytes() >= bytes) return;
  if (mode == Mode::kCapture) throw CaptureAbort{};
  SAKER_CUDA_CHECK(cudaStreamSynchronize(stream));
  m = DeviceMemory(std::max(bytes, m.bytes() + m.bytes() / 2));
}

}  // namespace detail

struct CudaBackend::Impl {
  CudaOptions options;
  int sms = 0;
  detail::Stream stream;
  LtGemm gemm;
  std::vector<DeviceMemory> weights;
  std::uint64_t weight_seed = 1;
  DeviceMemory act_parts, gemm_out, attn_scratch, tune_out;
  // The tuner's choices (batch_invariant off): index into `choices` by (dtype, rows, cols, tokens).
  std::map<std::tuple<int, std::int64_t, std::int64_t, std::int64_t>, std::size_t> tuned;
  std::vector<LinearChoice> choices;
  detail::Arena arena;
  bool pdl_supported = false;  // sm_90 or later
  // The last operation enqueued on the stream was one of our kernels: only then may the next
  // one be a programmatic dependent launch.
  bool after_kernel = false;
  std::int64_t step_tokens = 0;  // tokens of the last call that said

  // The places staged last and how: tables for `block_size` (0: none), tiles of `tokens_per_tile`,
  // valid while the arena's epoch is `staged_epoch`.
  std::uint64_t staged_epoch = ~std::uint64_t{0};
  std::vector<TokenPlace> staged;
  std::int64_t staged_block_size = 0, staged_tiles = 0;
  std::int64_t last_block_size = 0;
  DevicePlaces dev;

  // Decode graphs (run_step).
  detail::Mode mode = detail::Mode::kDirect;
  bool in_step = false;  // inside run_step: calls add to `sig`
  detail::Signature sig;
  struct Graph {
    std::vector<std::uint64_t> sig;
    detail::GraphExec exec;
    int runs = 0;    // steps of this key run so far
    int aborts = 0;  // captures dropped
  };
  std::unordered_map<std::uint64_t, Graph> graphs;
  GraphStats stats;

  explicit Impl(const CudaOptions& o) : options(o), gemm(o.gemm_workspace_bytes) {}

  bool launching() const { return mode != detail::Mode::kStageOnly; }
  bool fused(std::int64_t tokens) const {
    return options.fuse && tokens <= options.fuse_max_tokens;
  }
  // The queue for a kernel about to be launched on `tokens` tokens (0: as many as the call
  // before, for calls that do not know, such as add).
  Enqueue next_kernel(std::int64_t tokens) {
    if (tokens > 0) step_tokens = tokens;
    const bool pdl =
        options.pdl && pdl_supported && after_kernel && step_tokens <= options.pdl_max_tokens;
    after_kernel = true;
    return Enqueue(stream.get(), pdl);
  }
  template <typename... A>
  void record(A... a) {
    if (in_step) sig.add(a...);
  }
  // A piece of the arena holding `bytes` of host data, sent to the device.
  const std::byte* stage(const void* host, std::size_t bytes) {
    const detail::Arena::Piece p = arena.take(bytes, mode, stream.get());
    std::memcpy(p.host, host, bytes);
    arena.send(p, mode, stream.get());
    after_kernel = false;
    record(p.host, p.device, p.bytes);
    return p.device;
  }
  void ensure_scratch(DeviceMemory& m, std::size_t bytes) {
    if (m.bytes() >= bytes) return;
    detail::ensure(m, bytes, mode, stream.get());
    after_kernel = false;
  }

  const DevicePlaces& stage_places(std::span<const TokenPlace> places, std::int64_t block_size,
                                   std::int64_t tokens_per_tile);
  // Runs `body` in `m` from the start of the arena, recording its signature.
  void attempt(detail::Mode m, const std::function<void()>& body);
};

}  // namespace saker::cuda
