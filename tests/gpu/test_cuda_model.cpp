// The whole Falcon model on the CUDA backend against the CPU backend and transformers, on every
// fixture in tests/fixtures.
#include <algorithm>
#include <iostream>
#include <numeric>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/gpu/gpu_harness.h"
// golden.h reads the fixtures from SAKER_FIXTURES_DIR, defined for this target as the harness's
// fixtures_root() so a packed test binary finds them too.
#include "tests/golden.h"

#include "engine/model/falcon/falcon.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;
using namespace saker::gpu_test;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kContext = 256;

// One fixture: config, checkpoint and transformers' reference.
struct Fixture {
  FalconConfig config;
  Checkpoint ck;
  nlohmann::json ref;
  std::size_t V;
  explicit Fixture(const fs::path& dir)
      : config(load_config(dir)),
        ck(Checkpoint::open(dir)),
        ref(read_reference(dir)),
        V(static_cast<std::size_t>(config.vocab_size)) {}
  std::vector<std::int32_t> ids(std::size_t c, const char* key) const {
    return ref["cases"][c][key].get<std::vector<std::int32_t>>();
  }
  std::size_t cases() const { return ref["cases"].size(); }
  FalconModel model(Backend& b, WeightQuant quant = WeightQuant::kNone) const {
    return FalconModel(config, ck, b, ModelOptions{128, 128, kContext, quant});
  }
};

KvCache make_cache(Backend& b, const FalconConfig& c, std::int64_t block_size = 4) {
  return KvCache(b, KvShape{c.layers, c.kv_heads, c.head_dim}, kContext / block_size, block_size);
}

// Blocks first, first + 1, ... (count of them).
std::vector<std::int32_t> block_range(std::int32_t first, std::int64_t count) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(count));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Row r of [rows][V] logits.
std::vector<float> row(std::span<const float> logits, std::size_t r, std::size_t V) {
  const auto s = logits.subspan(r * V, V);
  return {s.begin(), s.end()};
}

std::vector<float> prefill_logits(FalconModel& m, Backend& b, const FalconConfig& c,
                                  const std::vector<std::int32_t>& prompt) {
  auto cache = make_cache(b, c);
  const auto table = block_range(0, cache.num_blocks());
  const SequenceStep step{prompt, 0, table, true};
  const auto out = m.forward({&step, 1}, cache);
  return {out.begin(), out.end()};
}

double worst_row_error(const std::vector<float>& got, const std::vector<float>& want,
                       std::size_t V) {
  double worst = 0;
  for (std::size_t r = 0; r * V < want.size(); ++r)
    worst = std::max(worst, rel_l2(row(got, r, V), row(want, r, V)));
  return worst;
}

}  // namespace

TEST_CASE("cuda model: prefill logits match the CPU backend and transformers", "[gpu][model]") {
  REQUIRE(!fixture_dirs().empty());
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const Fixture f(dir);
      CpuBackend cpu(2, f.config.max_positions, 1);
      cuda::CudaBackend gpu;
      cuda::CudaOptions unsplit;
      unsplit.split_activations = false;
      cuda::CudaBackend fast(unsplit);
      auto on_cpu = f.model(cpu), on_gpu = f.model(gpu), on_fast = f.model(fast);
      double vs_cpu = 0, vs_ref = 0, fast_vs_cpu = 0;
      for (std::size_t c = 0; c < f.cases(); ++c) {
        const auto prompt = f.ids(c, "prompt_ids");
        const auto want = prefill_logits(on_cpu, cpu, f.config, prompt);
        const auto got = prefill_logits(on_gpu, gpu, f.config, prompt);
        const auto got_fast = prefill_logits(on_fast, fast, f.config, prompt);
        REQUIRE(got.size() == want.size());
        CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
        vs_cpu = std::max(vs_cpu, worst_row_error(got, want, f.V));
        fast_vs_cpu = std::max(fast_vs_cpu, worst_row_error(got_fast, want, f.V));
        for (std::size_t p = 0; p < prompt.size(); ++p)
          vs_ref = std::max(
              vs_ref,
              rel_l2(row(got, p, f.V), f.ref["cases"][c]["logits"][p].get<std::vector<float>>()));
      }
      std::cout << dir.filename().string() << ": prefill logits, worst relative L2 error vs CPU "
                << vs_cpu << ", vs transformers " << vs_ref
                << " (unsplit bf16/fp16 activations vs CPU: " << fast_vs_cpu << ")\n";
      CHECK(vs_cpu < 1e-4);
      CHECK(vs_ref < 2e-4);
      // Activations rounded to bf16 in the GEMMs: as transformers running natively in bf16.
      CHECK(fast_vs_cpu < 3e-2);
    }
  }
}

TEST_CASE("cuda model: greedy tokens equal the CPU backend's and transformers'", "[gpu][model]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const Fixture f(dir);
      CpuBackend cpu(2, f.config.max_positions, 1);
      cuda::CudaBackend gpu;
      auto on_cpu = f.model(cpu), on_gpu = f.model(gpu);
      for (std::size_t c = 0; c < f.cases(); ++c) {
        const auto prompt = f.ids(c, "prompt_ids");
        const auto want = f.ids(c, "greedy_ids");
        GenerateOptions opt;
        opt.max_new_tokens = static_cast<std::int64_t>(want.size());
        opt.ignore_eos = true;
        auto ccache = make_cache(cpu, f.config), gcache = make_cache(gpu, f.config);
        const auto by_cpu = generate_sequence(on_cpu, ccache, prompt, opt).tokens;
        const auto by_gpu = generate_sequence(on_gpu, gcache, prompt, opt).tokens;
        const auto first_diff = static_cast<std::size_t>(
            std::mismatch(by_gpu.begin(), by_gpu.end(), want.begin(), want.end()).first -
            by_gpu.begin());
        std::cout << dir.filename().string() << " case " << c << ": "
                  << (by_gpu == want ? "greedy tokens identical to transformers"
                                     : "greedy tokens DIFFER from transformers at step " +
                                           std::to_string(first_diff))
                  << (by_gpu == by_cpu ? ", identical to CPU" : ", DIFFER from CPU") << "\n";
        CHECK(by_gpu == want);
        CHECK(by_gpu == by_cpu);
      }
    }
  }
}

TEST_CASE("cuda model: --dtype int8 and fp8 give the CPU backend's logits", "[gpu][model]") {
  for (const auto& dir : fixture_dirs())
    for (const WeightQuant quant : {WeightQuant::kInt8, WeightQuant::kFp8}) {
      DYNAMIC_SECTION(dir.filename().string() << (quant == WeightQuant::kInt8 ? " int8" : " fp8")) {
        const Fixture f(dir);
        CpuBackend cpu(2, f.config.max_positions, 1);
        cuda::CudaBackend gpu;
        auto on_cpu = f.model(cpu, quant), on_gpu = f.model(gpu, quant);
        double worst = 0;
        for (std::size_t c = 0; c < f.cases(); ++c) {
          const auto prompt = f.ids(c, "prompt_ids");
          worst =
              std::max(worst, worst_row_error(prefill_logits(on_gpu, gpu, f.config, prompt),
                                              prefill_logits(on_cpu, cpu, f.config, prompt), f.V));
        }
        std::cout << dir.filename().string() << (quant == WeightQuant::kInt8 ? " int8" : " fp8")
                  << ": prefill logits, worst relative L2 error vs the CPU at the same dtype "
                  << worst << "\n";
        CHECK(worst < 1e-4);  // the same codes and scales: only the summation order differs
      }
    }
}

TEST_CASE("cuda model: chunked prefill and decode agree with one whole pass", "[gpu][model]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const Fixture f(dir);
      cuda::CudaBackend gpu;
      auto m = f.model(gpu);
      auto seq = f.ids(2, "prompt_ids");
      const auto gen = f.ids(2, "greedy_ids");
      const std::size_t prompt_len = seq.size();
      seq.insert(seq.end(), gen.begin(), gen.begin() + 24);
      const auto full = prefill_logits(m, gpu, f.config, seq);

      // Prefill in chunks of 3, then one token per step, through a reversed block table.
      auto cache = make_cache(gpu, f.config);
      auto table = block_range(0, cache.num_blocks());
      std::reverse(table.begin(), table.end());
      double worst = 0;
      for (std::size_t pos = 0; pos < seq.size();) {
        const std::size_t len = pos < prompt_len ? std::min<std::size_t>(3, prompt_len - pos) : 1;
        const SequenceStep step{std::span(seq).subspan(pos, len), static_cast<std::int32_t>(pos),
                                table, true};
        const auto out = m.forward({&step, 1}, cache);
        for (std::size_t i = 0; i < len; ++i)
          worst = std::max(worst, rel_l2(row(out, i, f.V), row(full, pos + i, f.V)));
        pos += len;
      }
      INFO("worst relative L2 error, stepped vs whole: " << worst);
      // GEMV (a few tokens) and cuBLASLt (more) sum in different orders: close, not bitwise.
      CHECK(worst < 1e-4);
    }
  }
}

TEST_CASE("cuda model: a sequence's logits do not depend on its batch", "[gpu][model]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const Fixture f(dir);
      cuda::CudaBackend gpu;
      auto m = f.model(gpu);
      // Every case's prompt in one step, each through its own 8 blocks.
      std::vector<std::vector<std::int32_t>> prompts, tables;
      for (std::size_t c = 0; c < f.cases(); ++c) {
        prompts.push_back(f.ids(c, "prompt_ids"));
        tables.push_back(block_range(static_cast<std::int32_t>(8 * c), 8));
      }
      std::vector<SequenceStep> steps;
      for (std::size_t c = 0; c < prompts.size(); ++c)
        steps.push_back({prompts[c], 0, tables[c], false});
      auto cache = make_cache(gpu, f.config);
      const auto batched_span = m.forward(steps, cache);
      const std::vector<float> batched(batched_span.begin(), batched_span.end());
      double worst = 0;
      for (std::size_t c = 0; c < prompts.size(); ++c) {
        auto alone_cache = make_cache(gpu, f.config);
        const SequenceStep step{prompts[c], 0, tables[0], false};
        worst = std::max(
            worst, rel_l2(row(m.forward({&step, 1}, alone_cache), 0, f.V), row(batched, c, f.V)));
      }
      INFO("worst relative L2 error, alone vs batched: " << worst);
      CHECK(worst < 1e-4);
    }
  }
}

TEST_CASE("cuda model: with batch invariance a decode token's logits are the same bits in any step",
          "[gpu][model]") {
  for (const auto& dir : fixture_dirs()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const Fixture f(dir);
      cuda::CudaBackend gpu;  // batch_invariant, as by default
      auto m = f.model(gpu);
      auto cache = make_cache(gpu, f.config);
      // Each case prefilled alone into its own 16 blocks; then its first greedy token decoded
      // alone, and all of them in one step, with (half-precision weights: the tensor-core kernel
      // takes up to 64 tokens) a 20-token prefill chunk of a fourth sequence beside them.
      std::vector<std::vector<std::int32_t>> prompts, tables, next;
      for (std::size_t c = 0; c < f.cases(); ++c) {
        prompts.push_back(f.ids(c, "prompt_ids"));
        tables.push_back(block_range(static_cast<std::int32_t>(16 * c), 16));
        next.push_back({f.ids(c, "greedy_ids").front()});
        const SequenceStep step{prompts[c], 0, tables[c], false};
        m.forward({&step, 1}, cache);
      }
      auto decode = [&](std::size_t c) {
        return SequenceStep{next[c], static_cast<std::int32_t>(prompts[c].size()), tables[c],
                            false};
      };
      std::vector<std::vector<float>> alone;
      for (std::size_t c = 0; c < f.cases(); ++c) {
        const SequenceStep step = decode(c);
        alone.push_back(row(m.forward({&step, 1}, cache), 0, f.V));
      }
      std::vector<SequenceStep> steps;
      for (std::size_t c = 0; c < f.cases(); ++c) steps.push_back(decode(c));
      const bool half = dir.filename().string().find("bf16") != std::string::npos;
      std::vector<std::int32_t> filler = f.ids(0, "prompt_ids");
      const auto more = f.ids(0, "greedy_ids");
      filler.insert(filler.end(), more.begin(), more.end());
      filler.resize(std::min<std::size_t>(filler.size(), 20));
      const auto filler_table = block_range(48, 16);
      if (half) steps.push_back({filler, 0, filler_table, false});
      const auto out = m.forward(steps, cache);
      for (std::size_t c = 0; c < f.cases(); ++c) {
        const auto batched = row(out, c, f.V);
        INFO("case " << c << ", a step of " << steps.size() << " sequences: relative L2 "
                     << rel_l2(batched, alone[c]));
        CHECK(batched == alone[c]);
      }
    }
  }
}

namespace {
struct Variant {
  const char* name;
  bool graphs, pdl, fuse;
  std::int64_t pdl_max_tokens = cuda::CudaOptions{}.pdl_max_tokens;
  std::int64_t fuse_max_tokens = cuda::CudaOptions{}.fuse_max_tokens;
};
}  // namespace

// The reference runs each call directly, one kernel after another (no graphs, no programmatic
// dependent launch, no fused kernels); every other way of running the same steps must give the
// same logits, bit for bit.
TEST_CASE("cuda model: graphs, dependent launches and fused kernels equal plain calls, bit for bit",
          "[gpu][model]") {
  const Variant variants[] = {
      {"graphs + pdl + fused", true, true, true},
      {"direct + pdl + fused", false, true, true},
      {"graphs + fused", true, false, true},
      {"graphs + pdl", true, true, false},
      {"graphs + pdl and fused at any tokens", true, true, true, 1 << 20, 1 << 20},
      {"direct + pdl at any tokens", false, true, false, 1 << 20}};
  for (const auto& dir : fixture_dirs())
    for (const Variant& v : variants) {
      DYNAMIC_SECTION(dir.filename().string() << ": " << v.name) {
        const Fixture f(dir);
        cuda::CudaOptions plain_opt, opt;
        plain_opt.graphs = plain_opt.pdl = plain_opt.fuse = false;
        opt.graphs = v.graphs;
        opt.pdl = v.pdl;
        opt.fuse = v.fuse;
        opt.pdl_max_tokens = v.pdl_max_tokens;
        opt.fuse_max_tokens = v.fuse_max_tokens;
        cuda::CudaBackend tried(opt), plain(plain_opt);
        auto mg = f.model(tried);
        auto md = f.model(plain);
        // Batch 1, then 3 sequences, each decoding 40 steps from its prompt: the block tables
        // (4 positions a block) double and the attention's key bucket changes on the way, so the
        // graphs are also dropped and captured again.
        for (const std::size_t batch : {std::size_t{1}, std::size_t{3}}) {
          auto cg = make_cache(tried, f.config, 2);
          auto cd = make_cache(plain, f.config, 2);
          std::vector<std::vector<std::int32_t>> seqs, tables;
          const std::int64_t per = cg.num_blocks() / static_cast<std::int64_t>(batch);
          for (std::size_t s = 0; s < batch; ++s) {
            seqs.push_back(f.ids(s % f.cases(), "prompt_ids"));
            tables.push_back(block_range(static_cast<std::int32_t>(s * per), per));
          }
          auto step_both = [&](std::vector<SequenceStep>& steps) {
            const auto g = mg.forward(steps, cg);
            const std::vector<float> gv(g.begin(), g.end());
            const auto d = md.forward(steps, cd);
            return gv == std::vector<float>(d.begin(), d.end());
          };
          std::vector<SequenceStep> steps;
          for (std::size_t s = 0; s < batch; ++s) steps.push_back({seqs[s], 0, tables[s], false});
          CHECK(step_both(steps));
          std::vector<std::int32_t> next(batch);
          int differing = 0;
          for (int i = 0; i < 40; ++i) {
            steps.clear();
            for (std::size_t s = 0; s < batch; ++s) {
              next[s] = static_cast<std::int32_t>((7 * i + 13 * s + 1) % f.config.vocab_size);
              const auto pos = static_cast<std::int32_t>(seqs[s].size()) + i;
              if (pos + 1 >= per * 2) break;  // this sequence's blocks are full
              steps.push_back({std::span(next).subspan(s, 1), pos, tables[s], false});
            }
            if (steps.size() < batch) break;
            if (!step_both(steps)) ++differing;
          }
          INFO("batch " << batch);
          CHECK(differing == 0);
        }
        const cuda::GraphStats st = tried.graph_stats();
        INFO("graphs: " << st.captures << " captured, " << st.replays << " replays, " << st.direct
                        << " direct, " << st.mismatches << " mismatches, " << st.aborts
                        << " aborts");
        if (v.graphs) {
          CHECK(st.captures >= 2);
          CHECK(st.replays >= 20);
          CHECK(st.aborts == 0);
        } else {
          CHECK(st.replays == 0);
        }
        CHECK(plain.graph_stats().replays == 0);
      }
    }
}
