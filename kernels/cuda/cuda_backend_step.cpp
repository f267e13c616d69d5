// Per-step host data and decode graphs: staging token places to the device, and run_step's
// capture and replay of a step keyed by its signature.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace saker::cuda {
namespace {

bool same_places(std::span<const TokenPlace> a, const std::vector<TokenPlace>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].pos != b[i].pos || a[i].block_table != b[i].block_table) return false;
  return true;
}

}  // namespace

using detail::GraphExec;
using detail::Mode;

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

}  // namespace saker::cuda
