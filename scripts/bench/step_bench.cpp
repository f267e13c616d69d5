// What speculative decoding's parts cost on this machine (Google Benchmark): one model step of a
// sequence decoding at a context of 256 tokens, with 1 token (plain decode), or its last token
// and K proposals (the verification step: K + 1 positions, each with a logit row, read back as
// summaries or as whole rows), for the demo target and its draft (models/falcon-demo*). The
// ratios between these are what the adaptive rule (engine/speculative/adaptive.h) measures online.
//
//   saker_step_bench [--benchmark_filter=...]
#include <filesystem>
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include "engine/model/falcon/falcon.h"
#include "kernels/cpu/cpu_backend.h"

namespace {

using namespace saker;
namespace fs = std::filesystem;

const fs::path kModels = fs::path(SAKER_SOURCE_DIR) / "models";

struct Loaded {
  FalconConfig config;
  Checkpoint checkpoint;
  CpuBackend backend;
  FalconModel model;
  KvCache cache;
  std::vector<std::int32_t> table;
  explicit Loaded(const fs::path& dir)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        backend(0, config.max_positions),
        model(config, checkpoint, backend, ModelOptions{512, 64, config.max_positions}),
        cache(backend, model.kv_shape(), 64, 16),
        table(64) {
    std::iota(table.begin(), table.end(), 0);
    // A context of 256 tokens in the cache.
    std::vector<std::int32_t> prompt(256);
    for (std::size_t i = 0; i < prompt.size(); ++i)
      prompt[i] = static_cast<std::int32_t>(i * 7 % 8000);
    const SequenceStep step{prompt, 0, table, false};
    model.forward({&step, 1}, cache);
  }
};

// The fp32 target: the same weights widened (scripts/bench/speculative.sh makes it), 45 MB,
// more than this machine's last-level cache.
const fs::path kWide = fs::path(SAKER_SOURCE_DIR) / "bench-models" / "falcon-demo-fp32";

Loaded& model(int which) {
  static Loaded target(kModels / "falcon-demo");
  static Loaded draft(kModels / "falcon-demo-draft");
  if (which == 2) {
    static Loaded wide(kWide);
    return wide;
  }
  return which == 0 ? target : draft;
}

const char* kNames[] = {"target", "draft", "target fp32"};

// range(0): 0 target, 1 draft, 2 the fp32 target; range(1): positions in the step (1: decode, K +
// 1: verification); range(2): 0 summaries, 1 whole rows.
void BM_Step(benchmark::State& state) {
  if (state.range(0) == 2 && !fs::exists(kWide)) {
    state.SkipWithError("no bench-models/falcon-demo-fp32: run scripts/bench/speculative.sh");
    return;
  }
  Loaded& m = model(static_cast<int>(state.range(0)));
  const auto n = static_cast<std::size_t>(state.range(1));
  const std::vector<std::int32_t> tokens(n, 42);
  const SequenceStep step{tokens, 256, m.table, n > 1};
  const LogitsMode mode = state.range(2) ? LogitsMode::kRows : LogitsMode::kSummary;
  for (auto _ : state) benchmark::DoNotOptimize(m.model.forward({&step, 1}, m.cache, mode).data());
  state.SetLabel(std::string(kNames[state.range(0)]) + ", " + std::to_string(n) + " position(s), " +
                 (state.range(2) ? "rows" : "summaries"));
}

}  // namespace

BENCHMARK(BM_Step)
    ->ArgsProduct({{0, 1, 2}, {1, 2, 3, 4, 6}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.2);

BENCHMARK_MAIN();
