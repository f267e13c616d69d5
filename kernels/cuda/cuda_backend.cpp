#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory.h"

namespace saker::cuda {
namespace {

class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(std::size_t floats, cudaStream_t stream)
      : mem_(floats * sizeof(float)), size_(floats) {
    // Zeroed like the CPU backend's buffers; on the backend's stream so it is ordered with it.
    if (floats > 0) SAKER_CUDA_CHECK(cudaMemsetAsync(mem_.get(), 0, mem_.bytes(), stream));
  }
  float* data() override { return mem_.as<float>(); }
  std::size_t size() const override { return size_; }

 private:
  DeviceMemory mem_;
  std::size_t size_;
};

class PinnedBuffer final : public Buffer {
 public:
  explicit PinnedBuffer(std::size_t floats) : mem_(floats * sizeof(float)), size_(floats) {
    if (floats > 0) std::memset(mem_.get(), 0, mem_.bytes());
  }
  float* data() override { return static_cast<float*>(mem_.get()); }
  std::size_t size() const override { return size_; }

 private:
  PinnedMemory mem_;
  std::size_t size_;
};

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
void ensure(DeviceMemory& m, std::size_t bytes, Mode mode, cudaStream_t stream) {
  if (m.bytes() >= bytes) return;
  if (mode == Mode::kCapture) throw CaptureAbort{};
  SAKER_CUDA_CHECK(cudaStreamSynchronize(stream));
  m = DeviceMemory(std::max(bytes, m.bytes() + m.bytes() / 2));
}

bool same_places(std::span<const TokenPlace> a, const std::vector<TokenPlace>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].pos != b[i].pos || a[i].block_table != b[i].block_table) return false;
  return true;
}

}  // namespace

struct CudaBackend::Impl {
  CudaOptions options;
  int sms = 0;
  Stream stream;
  LtGemm gemm;
  std::vector<DeviceMemory> weights;
  std::uint64_t weight_seed = 1;
  DeviceMemory act_parts, gemm_out, attn_scratch;
  Arena arena;
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
  Mode mode = Mode::kDirect;
  bool in_step = false;  // inside run_step: calls add to `sig`
  Signature sig;
  struct Graph {
    std::vector<std::uint64_t> sig;
    GraphExec exec;
    int runs = 0;    // steps of this key run so far
    int aborts = 0;  // captures dropped
  };
  std::unordered_map<std::uint64_t, Graph> graphs;
  GraphStats stats;

  explicit Impl(const CudaOptions& o) : options(o), gemm(o.gemm_workspace_bytes) {}

  bool launching() const { return mode != Mode::kStageOnly; }
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
    const Arena::Piece p = arena.take(bytes, mode, stream.get());
    std::memcpy(p.host, host, bytes);
    arena.send(p, mode, stream.get());
    after_kernel = false;
    record(p.host, p.device, p.bytes);
    return p.device;
  }
  void ensure_scratch(DeviceMemory& m, std::size_t bytes) {
    if (m.bytes() >= bytes) return;
    ensure(m, bytes, mode, stream.get());
    after_kernel = false;
  }

  const DevicePlaces& stage_places(std::span<const TokenPlace> places, std::int64_t block_size,
                                   std::int64_t tokens_per_tile);
  // Runs `body` in `m` from the start of the arena, recording its signature.
  void attempt(Mode m, const std::function<void()>& body);
};

// Copies positions, block tables and attention tiles of `places` to the device, unless the same
// places were staged since the last begin_step with what the caller needs. block_size 0: the
// caller needs no tables (then the last known block size is used, so later calls match).
const DevicePlaces& CudaBackend::Impl::stage_places(std::span<const TokenPlace> places,
                                                    std::int64_t block_size,
                                                    std::int64_t tokens_per_tile) {
  if (staged_epoch == arena.epoch() && same_places(places, staged) &&
      (block_size == 0 || block_size == staged_block_size) && tokens_per_tile == staged_tiles)
    return dev;
  if (block_size == 0) block_size = last_block_size;
  last_block_size = block_size;
  const auto n = static_cast<std::int64_t>(places.size());

  // Host layout, all int32: pos[n], table_off[n], tiles[3 * tiles], tables[...]. Each run's
  // table is padded to a power of two (at least 8 entries; padding 0), so that a decode step's
  // layout, hence its signature, changes only when a sequence's table doubles.
  std::vector<std::int32_t> table_off(static_cast<std::size_t>(n)), tiles, tables;
  std::int64_t max_keys = 0;
  for (std::int64_t i = 0; i < n;) {
    // A run of consecutive tokens of one sequence (same block table).
    const std::int32_t* table = places[i].block_table;
    std::int64_t j = i;
    std::int32_t run_max = 0;
    while (j < n && places[j].block_table == table) run_max = std::max(run_max, places[j++].pos);
    const auto off = static_cast<std::int32_t>(tables.size());
    if (block_size > 0 && table) {
      const std::int64_t used = run_max / block_size + 1;
      std::int64_t padded = 8;
      while (padded < used) padded *= 2;
      tables.insert(tables.end(), table, table + used);
      tables.resize(tables.size() + static_cast<std::size_t>(padded - used), 0);
    }
    for (std::int64_t t = i; t < j; ++t) table_off[t] = off;
    for (std::int64_t a = i; a < j; a += tokens_per_tile) {
      const std::int64_t count = std::min(tokens_per_tile, j - a);
      std::int32_t tile_max = 0;
      for (std::int64_t t = a; t < a + count; ++t) tile_max = std::max(tile_max, places[t].pos);
      tiles.insert(tiles.end(),
                   {static_cast<std::int32_t>(a), static_cast<std::int32_t>(count), tile_max + 1});
    }
    max_keys = std::max<std::int64_t>(max_keys, run_max + 1);
    i = j;
  }
  const std::size_t ints = 2 * static_cast<std::size_t>(n) + tiles.size() + tables.size();
  std::vector<std::int32_t> h(ints);
  for (std::int64_t t = 0; t < n; ++t) h[t] = places[t].pos;
  std::copy(table_off.begin(), table_off.end(), h.begin() + n);
  std::copy(tiles.begin(), tiles.end(), h.begin() + 2 * n);
  std::copy(tables.begin(), tables.end(),
            h.begin() + 2 * n + static_cast<std::int64_t>(tiles.size()));
  const auto* d =
      reinterpret_cast<const std::int32_t*>(stage(h.data(), ints * sizeof(std::int32_t)));

  dev.pos = d;
  dev.table_off = d + n;
  dev.tiles = d + 2 * n;
  dev.tables = d + 2 * n + static_cast<std::int64_t>(tiles.size());
  dev.n = n;
  dev.num_tiles = static_cast<std::int64_t>(tiles.size() / 3);
  dev.max_keys = max_keys;
  staged.assign(places.begin(), places.end());
  staged_block_size = block_size;
  staged_tiles = tokens_per_tile;
  staged_epoch = arena.epoch();
  return dev;
}

void CudaBackend::Impl::attempt(Mode m, const std::function<void()>& body) {
  arena.reset();  // nothing was sent by a previous attempt of this step, or it has finished
  sig.v.clear();
  mode = m;
  in_step = true;
  after_kernel = false;
  sig.add(options.pdl, options.pdl_max_tokens, options.fuse, options.fuse_max_tokens,
          options.gemv_threads);
  struct Restore {
    Impl& i;
    ~Restore() {
      i.mode = Mode::kDirect;
      i.in_step = false;
    }
  } restore{*this};
  body();
}

CudaBackend::CudaBackend(CudaOptions options) {
  int count = 0;
  SAKER_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (options.device < 0 || options.device >= count)
    throw std::runtime_error("CUDA device " + std::to_string(options.device) + " does not exist (" +
                             std::to_string(count) + " visible)");
  SAKER_CUDA_CHECK(cudaSetDevice(options.device));
  impl_ = std::make_unique<Impl>(options);
  SAKER_CUDA_CHECK(
      cudaDeviceGetAttribute(&impl_->sms, cudaDevAttrMultiProcessorCount, options.device));
  int major = 0;
  SAKER_CUDA_CHECK(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, options.device));
  impl_->pdl_supported = major >= 9;
}

CudaBackend::~CudaBackend() {
  if (impl_) cudaStreamSynchronize(impl_->stream.get());  // nothing may still use the memory
}

cudaStream_t CudaBackend::stream() const {
  return impl_->stream.get();
}

int CudaBackend::device() const {
  return impl_->options.device;
}

int CudaBackend::multiprocessors() const {
  return impl_->sms;
}

std::unique_ptr<Buffer> CudaBackend::allocate(std::size_t floats) {
  impl_->after_kernel = false;  // a memset
  return std::make_unique<DeviceBuffer>(floats, impl_->stream.get());
}

std::unique_ptr<Buffer> CudaBackend::upload(std::span<const float> host) {
  auto buf = std::make_unique<DeviceBuffer>(host.size(), impl_->stream.get());
  impl_->after_kernel = false;
  if (!host.empty()) {
    SAKER_CUDA_CHECK(cudaMemcpyAsync(buf->data(), host.data(), host.size_bytes(),
                                     cudaMemcpyHostToDevice, impl_->stream.get()));
    SAKER_CUDA_CHECK(cudaStreamSynchronize(impl_->stream.get()));  // the host span may go
  }
  return buf;
}

Weight CudaBackend::upload_weight(const Weight& host, WeightQuant quant) {
  if (quant != WeightQuant::kNone)
    throw std::invalid_argument(
        "--dtype int8 is supported by the CPU backend only; the CUDA backend runs the "
        "checkpoint's own precision");
  const std::int64_t count = host.rows * host.cols;
  const std::size_t bytes = static_cast<std::size_t>(count) * dtype_size(host.dtype);
  DeviceMemory mem(bytes);
  if (bytes > 0) {
    if (impl_->options.synthetic_weights) {
      // Small enough that every layer's activations stay of order one.
      const float scale =
          1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(1, host.cols)));
      fill_random(mem.get(), count, host.dtype, impl_->weight_seed++, scale);
    } else {
      SAKER_CUDA_CHECK(cudaMemcpyAsync(mem.get(), host.data, bytes, cudaMemcpyHostToDevice,
                                       impl_->stream.get()));
    }
    SAKER_CUDA_CHECK(cudaStreamSynchronize(impl_->stream.get()));
  }
  const Weight w{host.dtype, mem.get(), host.rows, host.cols};
  impl_->weights.push_back(std::move(mem));
  impl_->after_kernel = false;
  return w;
}

void CudaBackend::fill_random(void* data, std::int64_t count, DType dtype, std::uint64_t seed,
                              float scale) {
  launch_fill_random(data, count, dtype, seed, scale, impl_->stream.get());
}

void CudaBackend::linear(const float* x, std::int64_t n, const Weight& w, const float* bias,
                         float* y) {
  linear_impl(x, n, w, bias, false, nullptr, nullptr, y);
}

void CudaBackend::linear_gelu(const float* x, std::int64_t n, const Weight& w, const float* bias,
                              float* y) {
  linear_impl(x, n, w, bias, true, nullptr, nullptr, y);
}

void CudaBackend::linear_add(const float* x, std::int64_t n, const Weight& w, const float* bias,
                             const float* add, float* y, float* residual) {
  if (!impl_->fused(n)) return Backend::linear_add(x, n, w, bias, add, y, residual);
  linear_impl(x, n, w, bias, false, add, residual, y);
}

void CudaBackend::linear_impl(const float* x, std::int64_t n, const Weight& w, const float* bias,
                              bool gelu, const float* add, float* residual, float* y) {
  if (n <= 0 || w.rows == 0) return;
  Impl& m = *impl_;
  cudaStream_t s = m.stream.get();
  m.record(1, x, n, static_cast<int>(w.dtype), w.data, w.rows, w.cols, bias, gelu, add, residual,
           y);
  // GEMV for a few tokens; also, a chunk of tokens at a time, for shapes cuBLASLt cannot take.
  auto gemv_chunks = [&] {
    for (std::int64_t t = 0; t < n; t += kGemvMaxTokens) {
      const std::int64_t o = t * w.rows;
      launch_gemv(x + t * w.cols, std::min(kGemvMaxTokens, n - t), w, bias, gelu,
                  add ? add + o : nullptr, residual ? residual + o : nullptr, y + o,
                  m.options.gemv_threads, m.next_kernel(n));
    }
  };
  if (n <= kGemvMaxTokens) {
    if (m.launching()) gemv_chunks();
    return;
  }

  // cuBLASLt: fp32 weights take the fp32 activations; half-precision weights take them rounded
  // to the weights' type, as hi (+ lo) stacked into one [parts * n, K] operand.
  const std::int64_t K = w.cols, N = w.rows;
  const int parts = w.dtype != DType::F32 && m.options.split_activations ? 2 : 1;
  const std::size_t half_bytes = static_cast<std::size_t>(n * K) * 2;
  if (w.dtype != DType::F32) m.ensure_scratch(m.act_parts, parts * half_bytes);
  if (parts > 1)
    m.ensure_scratch(m.gemm_out, static_cast<std::size_t>(parts * n * N) * sizeof(float));
  m.record(m.act_parts.get(), m.gemm_out.get(), parts);
  if (!m.launching()) return;
  const void* b = x;
  if (w.dtype != DType::F32) {
    auto* hi = static_cast<std::byte*>(m.act_parts.get());
    launch_split_activations(x, n * K, w.dtype, hi, parts == 2 ? hi + half_bytes : nullptr, s);
    b = hi;
  }
  float* d = parts > 1 ? m.gemm_out.as<float>() : y;
  m.after_kernel = false;  // a library's kernels (or the activations' split) come next
  if (!m.gemm.run(w.dtype, w.data, b, d, N, parts * n, K, s)) return gemv_chunks();
  if (parts > 1 || bias || gelu) launch_bias_act(d, parts, n, N, bias, gelu, y, s);
  if (add) launch_add(add, n * N, y, s);
  if (residual) launch_add(y, n * N, residual, s);
}

void CudaBackend::embedding(std::span<const std::int32_t> ids, const Weight& table,
                            std::int64_t first_id, float* y) {
  if (ids.empty()) return;
  Impl& m = *impl_;
  const auto* d = reinterpret_cast<const std::int32_t*>(m.stage(ids.data(), ids.size_bytes()));
  const auto n = static_cast<std::int64_t>(ids.size());
  m.record(2, n, static_cast<int>(table.dtype), table.data, table.rows, table.cols, first_id, y);
  if (m.launching()) launch_embedding(d, n, table, first_id, y, m.next_kernel(n));
}

void CudaBackend::layer_norm(const float* x, std::int64_t n, std::int64_t dim, const float* gamma,
                             const float* beta, float eps, float* y) {
  Impl& m = *impl_;
  m.record(3, x, n, dim, gamma, beta, eps, y);
  if (m.launching())
    launch_layer_norm(x, nullptr, nullptr, n, dim, gamma, beta, eps, y, m.next_kernel(n));
}

void CudaBackend::add_layer_norm(const float* a, std::int64_t n, std::int64_t dim, float* x,
                                 const float* gamma, const float* beta, float eps, float* y) {
  Impl& m = *impl_;
  m.record(4, a, n, dim, x, gamma, beta, eps, y);
  if (m.launching()) launch_layer_norm(x, a, x, n, dim, gamma, beta, eps, y, m.next_kernel(n));
}

void CudaBackend::gelu(float* x, std::int64_t count) {
  Impl& m = *impl_;
  m.record(5, x, count);
  if (m.launching()) launch_gelu(x, count, m.stream.get());
}

void CudaBackend::add(const float* x, std::int64_t count, float* y) {
  Impl& m = *impl_;
  m.record(6, x, count, y);
  if (m.launching()) launch_add(x, count, y, m.next_kernel(0));
}

void CudaBackend::gather_rows(const float* src, std::span<const std::int64_t> rows,
                              std::int64_t dim, float* dst) {
  if (rows.empty()) return;
  Impl& m = *impl_;
  const auto* d = reinterpret_cast<const std::int64_t*>(m.stage(rows.data(), rows.size_bytes()));
  const auto n = static_cast<std::int64_t>(rows.size());
  m.record(7, src, n, dim, dst);
  if (m.launching()) launch_gather_rows(src, d, n, dim, dst, m.next_kernel(n));
}

void CudaBackend::logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                                LogitSummary* out) {
  Impl& m = *impl_;
  m.record(11, logits, rows, vocab, out);
  if (m.launching()) launch_logit_summary(logits, rows, vocab, out, m.next_kernel(rows));
}

namespace {
// The parts of staged places a kernel's launch depends on (not max_keys: see attention).
template <typename Impl>
void record_places(Impl& m, const DevicePlaces& p, const AttentionShape& s) {
  m.record(p.pos, p.table_off, p.tables, p.tiles, p.n, p.num_tiles, s.heads, s.kv_heads, s.head_dim,
           s.alibi_slopes);
}
}  // namespace

void CudaBackend::rotary(float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                         const float* cos_sin) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, 0, attention_tokens_per_tile(s));
  m.record(8, qkv, cos_sin);
  record_places(m, p, s);
  if (m.launching()) launch_rotary(qkv, p, s, cos_sin, m.next_kernel(p.n));
}

void CudaBackend::rotary_kv_write(float* qkv, std::span<const TokenPlace> places,
                                  const AttentionShape& s, const float* cos_sin,
                                  const KvLayer& kv) {
  Impl& m = *impl_;
  if (!m.fused(static_cast<std::int64_t>(places.size())) || !cos_sin)
    return Backend::rotary_kv_write(qkv, places, s, cos_sin, kv);
  if (places.empty()) return;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  m.record(12, qkv, cos_sin, kv.k, kv.v, kv.kv_heads, kv.head_dim, kv.block_size);
  record_places(m, p, s);
  if (m.launching()) launch_rotary_kv_write(qkv, p, s, cos_sin, kv, m.next_kernel(p.n));
}

void CudaBackend::kv_write(const float* qkv, std::span<const TokenPlace> places,
                           const AttentionShape& s, const KvLayer& kv) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  m.record(9, qkv, kv.k, kv.v, kv.kv_heads, kv.head_dim, kv.block_size);
  record_places(m, p, s);
  if (m.launching()) launch_kv_write(qkv, p, s, kv, m.next_kernel(p.n));
}

void CudaBackend::attention(const float* qkv, std::span<const TokenPlace> places,
                            const AttentionShape& s, const KvLayer& kv, float* out) {
  if (places.empty()) return;
  Impl& m = *impl_;
  const DevicePlaces& p = m.stage_places(places, kv.block_size, attention_tokens_per_tile(s));
  const int splits = attention_splits(p, s, m.sms);
  m.ensure_scratch(m.attn_scratch, attention_scratch_floats(p.n, s, splits) * sizeof(float));
  m.record(10, qkv, kv.k, kv.v, kv.kv_heads, kv.head_dim, kv.block_size, out, splits,
           attention_key_bound(p), m.attn_scratch.get());
  record_places(m, p, s);
  if (m.launching())
    launch_attention(qkv, p, s, kv, splits, m.attn_scratch.as<float>(), out, m.next_kernel(p.n));
}

std::unique_ptr<Buffer> CudaBackend::allocate_host(std::size_t floats) {
  return std::make_unique<PinnedBuffer>(floats);
}

void CudaBackend::download(const float* src, std::size_t n, float* host) {
  if (impl_->mode != Mode::kDirect)
    throw std::logic_error("CudaBackend::download inside run_step's body");
  impl_->after_kernel = false;
  if (n > 0)
    SAKER_CUDA_CHECK(
        cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, impl_->stream.get()));
  SAKER_CUDA_CHECK(cudaStreamSynchronize(impl_->stream.get()));
}

void CudaBackend::synchronize() {
  if (impl_->mode != Mode::kDirect)
    throw std::logic_error("CudaBackend::synchronize inside run_step's body");
  SAKER_CUDA_CHECK(cudaStreamSynchronize(impl_->stream.get()));
}

void CudaBackend::begin_step() {
  impl_->arena.reset();  // also makes the staged places stale
}

void CudaBackend::run_step(std::uint64_t key, const std::function<void()>& body) {
  Impl& m = *impl_;
  if (!m.options.graphs || m.in_step) return body();
  cudaStream_t s = m.stream.get();
  Impl::Graph& g = m.graphs[key];
  // A graph of this key: stage this step's host data into the same places and compare the
  // signature; replay when it is the same.
  if (g.exec) {
    m.attempt(Mode::kStageOnly, body);
    if (m.sig.v == g.sig) {
      SAKER_CUDA_CHECK(cudaGraphLaunch(g.exec.get(), s));
      m.after_kernel = false;  // a graph, not a kernel, comes before the next launch
      m.arena.mark(s);
      ++g.runs;
      ++m.stats.replays;
      return;
    }
    g.exec = GraphExec();
    ++m.stats.mismatches;
  }
  // The first step of a key runs directly (it grows scratch buffers, picks GEMM algorithms); a
  // later one is captured, unless captures of this key keep failing or there are enough graphs.
  std::size_t live = 0;
  for (const auto& [k, other] : m.graphs) live += other.exec ? 1 : 0;
  const bool capture = g.runs > 0 && g.aborts < 3 && live < kMaxGraphs;
  if (capture) {
    m.arena.reset();  // waits for earlier copies before the capture starts
    SAKER_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    bool captured = false;
    cudaGraph_t graph = nullptr;
    try {
      m.attempt(Mode::kCapture, body);
      captured = true;
    } catch (...) {
      // CaptureAbort, or a call the capture refused: drop it and run the step directly below.
    }
    const cudaError_t end = cudaStreamEndCapture(s, &graph);
    if (captured && end == cudaSuccess && graph) {
      cudaGraphExec_t exec = nullptr;
      const cudaError_t inst = cudaGraphInstantiateWithFlags(&exec, graph, 0);
      cudaGraphDestroy(graph);
      if (inst == cudaSuccess) {
        g.exec = GraphExec(exec);
        g.sig = m.sig.v;
        ++m.stats.captures;
        SAKER_CUDA_CHECK(cudaGraphLaunch(exec, s));
        m.after_kernel = false;
        m.arena.mark(s);
        ++g.runs;
        return;
      }
    } else if (graph) {
      cudaGraphDestroy(graph);
    }
    (void)cudaGetLastError();  // a refused capture leaves its (non-sticky) error behind
    ++g.aborts;
    ++m.stats.aborts;
  }
  m.attempt(Mode::kDirect, body);
  m.arena.mark(s);
  ++g.runs;
  ++m.stats.direct;
}

void CudaBackend::set_graphs(bool on) {
  impl_->options.graphs = on;
}

void CudaBackend::set_pdl(bool on) {
  impl_->options.pdl = on;
}

void CudaBackend::set_pdl_max_tokens(std::int64_t tokens) {
  impl_->options.pdl_max_tokens = tokens;
}

void CudaBackend::set_fuse(bool on, std::int64_t max_tokens) {
  impl_->options.fuse = on;
  impl_->options.fuse_max_tokens = max_tokens;
}

void CudaBackend::set_gemv_threads(int threads) {
  impl_->options.gemv_threads = threads;
}

bool CudaBackend::pdl_supported() const {
  return impl_->pdl_supported;
}

GraphStats CudaBackend::graph_stats() const {
  return impl_->stats;
}

std::optional<std::size_t> CudaBackend::free_memory() const {
  std::size_t free = 0, total = 0;
  SAKER_CUDA_CHECK(cudaSetDevice(device()));
  SAKER_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

}  // namespace saker::cuda
