// How far `--dtype int8` (or `fp8`, or `w8a8`: int8 activations too, or `bf16`: `--cpu-matmul
// bf16`'s bf16 matmul inputs) moves a model from its stored precision computed with fp32 inputs:
// loads one checkpoint twice (as stored, and as asked) and compares them on seeded random
// prompts.
//
//   saker_int8_accuracy --model DIR [--dtype int8|fp8|w8a8|bf16] [--prompts 8] [--prompt-len 16]
//                       [--new-tokens 32]
//
// Teacher-forced: the stored model's greedy continuation is fed to both; at every position the
// int8 logits are compared with the stored ones (relative L2 error, largest absolute error) and
// their argmaxes. Free-running: each model decodes greedily on its own; reported is how many of
// the new tokens agree before the first difference. When DIR holds a transformers reference
// (tests/fixtures/*/reference.json) both are also compared with transformers' fp32 logits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/model/falcon/falcon.h"
#include "kernels/cpu/cpu_backend.h"
#include "parallel/communicator.h"

namespace {

using namespace saker;
namespace fs = std::filesystem;

struct Loaded {
  FalconConfig config;
  Checkpoint checkpoint;
  CpuBackend backend;
  FalconModel model;
  Loaded(const fs::path& dir, WeightQuant quant, std::int64_t max_tokens, bool bf16_dot = false)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        backend(0, config.max_positions, 1 << 16, bf16_dot),
        model(config, checkpoint, backend,
              ModelOptions{max_tokens, max_tokens, config.max_positions, quant}) {}

  KvCache cache(std::int64_t tokens) {
    const std::int64_t block = 16;
    return KvCache(backend, model.kv_shape(), (tokens + block - 1) / block + 1, block);
  }

  // Logits of every position of `ids`, [ids.size()][vocab].
  std::vector<float> all_logits(const std::vector<std::int32_t>& ids) {
    auto kv = cache(static_cast<std::int64_t>(ids.size()));
    std::vector<std::int32_t> table(static_cast<std::size_t>(kv.num_blocks()));
    std::iota(table.begin(), table.end(), 0);
    const SequenceStep step{ids, 0, table, true};
    const auto out = model.forward({&step, 1}, kv);
    return {out.begin(), out.end()};
  }
};

// Free-running greedy continuations of every prompt through the engine, as `saker generate
// --dtype` runs them.
std::vector<std::vector<std::int32_t>> greedy(const fs::path& dir, const std::string& dtype,
                                              const std::vector<std::vector<std::int32_t>>& cases,
                                              std::int64_t n) {
  EngineOptions o;
  o.model_dir = dir.string();
  // bf16: the stored weights with bf16 matmul inputs; every other run keeps them in fp32.
  o.dtype = dtype == "bf16" ? "auto" : dtype;
  o.cpu_matmul = dtype == "bf16" ? "bf16" : "fp32";
  o.text = false;
  o.max_batch_size = 1;  // one at a time: each continuation alone, as in the teacher-forced pass
  o.kv_cache_tokens = 0;
  o.kv_cache_bytes = std::size_t{256} << 20;
  SingleRankCommunicator single;
  Engine engine(o, single);
  std::vector<std::vector<std::int32_t>> out(cases.size());
  for (std::size_t c = 0; c < cases.size(); ++c) {
    BatchRequest r;
    r.id = engine.requests().next_id();
    r.prompt = cases[c];
    r.max_new_tokens = n;
    r.ignore_eos = true;
    engine.submit(std::move(r), [&out, c](RequestEvent&& e) {
      if (e.result) out[c] = e.result->tokens;
    });
  }
  engine.run();
  return out;
}

double rel_l2(const float* a, const float* b, std::size_t n) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::int32_t argmax(const float* p, std::size_t n) {
  return static_cast<std::int32_t>(std::max_element(p, p + n) - p);
}

std::string value_of(int argc, char** argv, const std::string& flag, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) return argv[i + 1];
  return def;
}

// The prompts, with transformers' logits of each prompt position when there is a reference.
struct Cases {
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<std::vector<std::vector<float>>> hf_logits;  // empty without a reference
};

// The fixtures' own prompts when there is a reference, else seeded random ids.
Cases load_cases(const fs::path& dir, int prompts, int prompt_len, std::size_t V) {
  Cases out;
  const fs::path ref_path = dir / "reference.json";
  if (fs::exists(ref_path)) {
    std::ifstream in(ref_path);
    const auto ref = nlohmann::json::parse(in);
    for (const auto& c : ref["cases"]) {
      out.prompts.push_back(c["prompt_ids"].get<std::vector<std::int32_t>>());
      out.hf_logits.push_back(c["logits"].get<std::vector<std::vector<float>>>());
    }
  } else {
    std::mt19937 rng(2026);
    std::uniform_int_distribution<std::int32_t> id(0, static_cast<std::int32_t>(V) - 1);
    for (int p = 0; p < prompts; ++p) {
      out.prompts.emplace_back(static_cast<std::size_t>(prompt_len));
      for (auto& t : out.prompts.back()) t = id(rng);
    }
  }
  return out;
}

// What the comparison of the two models found, summed over the cases.
struct Stats {
  std::vector<double> errs;  // relative L2 error of the int8 logits, per position
  double worst_abs = 0, hf_stored = 0, hf_int8 = 0;
  std::size_t positions = 0, top1_same = 0, agree_total = 0, full_runs = 0;

  // One case: its free-running continuations by both models, then both teacher-forced on the
  // stored model's path.
  void add_case(Loaded& stored, Loaded& int8, std::size_t V,
                const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& g_stored,
                const std::vector<std::int32_t>& g_int8,
                const std::vector<std::vector<float>>* hf) {
    std::size_t agree = 0;
    while (agree < g_stored.size() && g_stored[agree] == g_int8[agree]) ++agree;
    agree_total += agree;
    full_runs += agree == g_stored.size();
    std::vector<std::int32_t> seq = prompt;
    seq.insert(seq.end(), g_stored.begin(), g_stored.end() - (g_stored.empty() ? 0 : 1));
    const auto a = stored.all_logits(seq);
    const auto b = int8.all_logits(seq);
    for (std::size_t p = 0; p < seq.size(); ++p) {
      const float* ra = a.data() + p * V;
      const float* rb = b.data() + p * V;
      errs.push_back(rel_l2(rb, ra, V));
      for (std::size_t i = 0; i < V; ++i)
        worst_abs = std::max(worst_abs, std::fabs(double(rb[i]) - ra[i]));
      top1_same += argmax(ra, V) == argmax(rb, V);
      ++positions;
    }
    if (hf)
      for (std::size_t p = 0; p < prompt.size(); ++p) {
        hf_stored = std::max(hf_stored, rel_l2(a.data() + p * V, (*hf)[p].data(), V));
        hf_int8 = std::max(hf_int8, rel_l2(b.data() + p * V, (*hf)[p].data(), V));
      }
  }

  void print(std::size_t cases, int new_tokens, bool with_hf, const char* quantized) {
    std::sort(errs.begin(), errs.end());
    const double mean = std::accumulate(errs.begin(), errs.end(), 0.0) / errs.size();
    std::printf(
        "teacher-forced over %zu positions: logit relative L2 error mean %.4f, p50 %.4f, max "
        "%.4f; largest |logit difference| %.4f; same argmax at %.1f%% of positions\n",
        positions, mean, errs[errs.size() / 2], errs.back(), worst_abs,
        100.0 * top1_same / positions);
    std::printf(
        "free-running greedy, %zu prompts x %d new tokens: %.1f tokens agree before the first "
        "difference on average; %zu of %zu continuations identical\n",
        cases, new_tokens, double(agree_total) / cases, full_runs, cases);
    if (with_hf)
      std::printf(
          "against transformers (fp32), prompt logits, worst relative L2: as stored %.2e, %s "
          "%.2e\n",
          hf_stored, quantized, hf_int8);
  }
};

}  // namespace

int main(int argc, char** argv) try {
  const fs::path dir = value_of(argc, argv, "--model", "");
  if (dir.empty()) {
    std::fprintf(
        stderr,
        "usage: saker_int8_accuracy --model DIR [--dtype int8|fp8|w8a8|bf16] [--prompts N] "
        "[--prompt-len L] [--new-tokens T]\n");
    return 2;
  }
  const int prompts = std::stoi(value_of(argc, argv, "--prompts", "8"));
  const int prompt_len = std::stoi(value_of(argc, argv, "--prompt-len", "16"));
  const int new_tokens = std::stoi(value_of(argc, argv, "--new-tokens", "32"));
  const std::int64_t max_tokens = prompt_len + new_tokens;
  const std::string dtype = value_of(argc, argv, "--dtype", "int8");
  if (dtype != "int8" && dtype != "fp8" && dtype != "w8a8" && dtype != "bf16")
    throw std::invalid_argument("--dtype must be int8, fp8, w8a8 or bf16 (bf16 matmul inputs)");

  Loaded stored(dir, WeightQuant::kNone, max_tokens);
  Loaded int8(dir,
              dtype == "fp8"    ? WeightQuant::kFp8
              : dtype == "w8a8" ? WeightQuant::kW8A8
              : dtype == "bf16" ? WeightQuant::kNone
                                : WeightQuant::kInt8,
              max_tokens, dtype == "bf16");
  const auto V = static_cast<std::size_t>(stored.config.vocab_size);
  std::printf("model %s: %s, weights streamed per step %.1f MB as stored, %.1f MB %s\n",
              dir.string().c_str(), stored.config.variant().c_str(),
              stored.model.step_weight_bytes() / 1e6, int8.model.step_weight_bytes() / 1e6,
              dtype.c_str());

  const Cases cases = load_cases(dir, prompts, prompt_len, V);
  const bool with_hf = !cases.hf_logits.empty();
  // Free-running greedy, each model on its own.
  const auto free_stored = greedy(dir, "auto", cases.prompts, new_tokens);  // fp32 inputs
  const auto free_int8 = greedy(dir, dtype, cases.prompts, new_tokens);
  Stats stats;
  for (std::size_t c = 0; c < cases.prompts.size(); ++c)
    stats.add_case(stored, int8, V, cases.prompts[c], free_stored[c], free_int8[c],
                   with_hf ? &cases.hf_logits[c] : nullptr);
  stats.print(cases.prompts.size(), new_tokens, with_hf, dtype.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "saker_int8_accuracy: %s\n", e.what());
  return 1;
}
