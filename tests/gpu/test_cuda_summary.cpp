// Logit summaries on the device: the CUDA kernel against the host implementation (its scalar
// reference), and the model's summary path against its full rows on the fixtures.
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include <catch2/catch.hpp>

#include "tests/gpu/gpu_harness.h"
// golden.h reads the fixtures from SAKER_FIXTURES_DIR (the harness's fixtures_root()).
#include "tests/golden.h"

#include "engine/model/falcon/falcon.h"

using namespace saker;
using namespace saker::test;
using namespace saker::gpu_test;

namespace {

// Normal spread, a few distinct values (ties everywhere), -inf sprinkled, or -0 mixed with +0.
std::vector<float> summary_row(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 4.0f);
  std::uniform_int_distribution<int> coarse(-2, 2), pick(0, 7);
  std::vector<float> v(n);
  const int kind = static_cast<int>(seed % 4);
  for (auto& x : v) {
    x = kind == 1 ? static_cast<float>(coarse(rng)) : d(rng);
    if (kind == 2 && pick(rng) != 0) x = -std::numeric_limits<float>::infinity();
    if (kind == 3) x = pick(rng) < 4 ? 0.0f : (pick(rng) < 4 ? -0.0f : -1.0f);
  }
  return v;
}

void check_same(const LogitSummary& got, const LogitSummary& want) {
  CHECK(got.argmax == want.argmax);
  CHECK(got.max == want.max);
  CHECK(got.count == want.count);
  // The device sums the exponentials in another order: equal to ~1e-15, not bit for bit.
  if (std::isnan(want.log_z))
    CHECK(std::isnan(got.log_z));
  else
    CHECK(got.log_z == Approx(want.log_z).epsilon(1e-13).margin(1e-13));
  for (int i = 0; i < want.count; ++i) {
    INFO("top " << i);
    CHECK(got.top_ids[i] == want.top_ids[i]);
    CHECK(std::memcmp(&got.top_logits[i], &want.top_logits[i], sizeof(float)) == 0);
  }
}

std::vector<LogitSummary> device_summaries(cuda::CudaBackend& g, const std::vector<float>& rows,
                                           std::int64_t n, std::int64_t vocab) {
  auto d_rows = g.upload(rows);
  auto d_out = g.allocate(logit_summary_floats(n));
  poison(g, d_out->data(), logit_summary_floats(n));
  g.logit_summary(d_rows->data(), n, vocab, reinterpret_cast<LogitSummary*>(d_out->data()));
  std::vector<LogitSummary> out(static_cast<std::size_t>(n));
  g.download(d_out->data(), logit_summary_floats(n), reinterpret_cast<float*>(out.data()));
  return out;
}

}  // namespace

TEST_CASE("cuda logit_summary matches the host summary", "[gpu][kernels][summary]") {
  cuda::CudaBackend& g = shared_backend();
  std::vector<std::int32_t> order;
  for (const std::int64_t vocab : {1, 7, 63, 64, 65, 1000, 1025, 65024}) {
    const std::int64_t n = 9;
    std::vector<float> rows;
    for (std::int64_t r = 0; r < n; ++r) {
      const auto row =
          summary_row(static_cast<std::size_t>(vocab), static_cast<std::uint32_t>(vocab * 16 + r));
      rows.insert(rows.end(), row.begin(), row.end());
    }
    const auto got = device_summaries(g, rows, n, vocab);
    for (std::int64_t r = 0; r < n; ++r) {
      INFO("vocab " << vocab << " row " << r << " (kind " << (vocab * 16 + r) % 4 << ")");
      LogitSummary want;
      summarize_logits({rows.data() + r * vocab, static_cast<std::size_t>(vocab)}, want, order);
      check_same(got[static_cast<std::size_t>(r)], want);
    }
  }
}

TEST_CASE("cuda model: summaries equal the host summaries of the full rows",
          "[gpu][model][summary]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const FalconConfig config = load_config(dir);
      const Checkpoint ck = Checkpoint::open(dir);
      const auto ref = read_reference(dir);
      cuda::CudaBackend gpu;
      FalconModel model(config, ck, gpu, ModelOptions{128, 16, 256});
      KvCache cache(gpu, model.kv_shape(), 64, 4);
      // Every case as one sequence of a batch, each in its own blocks.
      std::vector<std::vector<std::int32_t>> prompts, tables;
      for (const auto& c : ref["cases"]) {
        prompts.push_back(c["prompt_ids"].get<std::vector<std::int32_t>>());
        std::vector<std::int32_t> t(16);
        std::iota(t.begin(), t.end(), static_cast<std::int32_t>(16 * tables.size()));
        tables.push_back(t);
      }
      const auto V = static_cast<std::size_t>(config.vocab_size);
      std::vector<std::int32_t> order;
      auto compare_modes = [&](const std::vector<SequenceStep>& steps) {
        const auto rows = model.forward(steps, cache);
        const std::vector<float> full(rows.begin(), rows.end());
        // The same step again writes the same keys and values: the logits are the same.
        CHECK(model.forward(steps, cache, LogitsMode::kSummary).empty());
        const auto sums = model.summaries();
        REQUIRE(sums.size() == steps.size());
        for (std::size_t r = 0; r < steps.size(); ++r) {
          LogitSummary want;
          summarize_logits({full.data() + r * V, V}, want, order);
          check_same(sums[r], want);
        }
      };
      std::vector<SequenceStep> steps;
      for (std::size_t i = 0; i < prompts.size(); ++i)
        steps.push_back({prompts[i], 0, tables[i], false, i});
      compare_modes(steps);
      // Decode steps (run_step: captured and replayed as graphs) on the greedy continuations.
      std::vector<std::vector<std::int32_t>> next(prompts.size());
      for (int d = 0; d < 4; ++d) {
        steps.clear();
        for (std::size_t i = 0; i < prompts.size(); ++i) {
          const auto greedy = ref["cases"][i]["greedy_ids"].get<std::vector<std::int32_t>>();
          if (static_cast<std::size_t>(d) >= greedy.size()) continue;
          next[i] = {greedy[static_cast<std::size_t>(d)]};
          steps.push_back(
              {next[i], static_cast<std::int32_t>(prompts[i].size()) + d, tables[i], false, i});
        }
        if (steps.size() == prompts.size()) compare_modes(steps);
      }
    }
  }
}
