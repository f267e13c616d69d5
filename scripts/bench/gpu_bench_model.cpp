// saker_gpu_bench's model steps: a Falcon-7B-shaped model built through the same FalconModel code
// path as `saker generate`, from a sparse safetensors checkpoint (only the LayerNorm weights are
// written; nothing of the 14 GB is stored) whose weights the backend fills with random values on
// the device; then prefill, decode at each batch size, and the batch-1 stages.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <iostream>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>

#include "engine/model/checkpoint.h"
#include "engine/model/falcon/config.h"
#include "engine/model/falcon/falcon.h"
#include "engine/model/kv_cache.h"
#include "kernels/logit_summary.h"
#include "scripts/bench/gpu_bench.h"

namespace saker::gpu_bench {
namespace {

// Falcon-7B's config.json (tiiuae/falcon-7b), the fields saker reads.
constexpr const char* kFalcon7bConfig = R"({
  "alibi": false, "bias": false, "bos_token_id": 11, "eos_token_id": 11,
  "hidden_size": 4544, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
  "multi_query": true, "new_decoder_architecture": false, "num_attention_heads": 71,
  "num_hidden_layers": 32, "parallel_attn": true, "torch_dtype": "bfloat16",
  "vocab_size": 65024, "max_position_embeddings": 2048
})";

// The model's config.json: --config FILE (e.g. ../shared/models/falcon-40b/config.json), else
// Falcon-7B's; `max_positions` > 0: the same shape with a longer context (newer Falcon configs
// have one).
json model_config_json(const Args& args) {
  json j;
  if (args.config.empty()) {
    j = json::parse(kFalcon7bConfig);
  } else {
    std::ifstream in(args.config);
    if (!in) throw std::runtime_error("cannot read --config " + args.config.string());
    j = json::parse(in);
  }
  if (args.max_positions > 0) j["max_position_embeddings"] = args.max_positions;
  return j;
}

// Writes the safetensors file of a sparse checkpoint: the header, the LayerNorm weights (`ones`:
// offset and elements of each) and a length covering every tensor, the rest left as a hole.
void write_sparse_file(const fs::path& file, const std::string& header, std::uint64_t data_bytes,
                       const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ones) {
  const int fd = ::open(file.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + file.string());
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(header.size() >> (8 * i));
  const std::uint64_t data_start = 8 + header.size();
  bool ok = ::pwrite(fd, len, 8, 0) == 8 &&
            ::pwrite(fd, header.data(), header.size(), 8) == static_cast<ssize_t>(header.size()) &&
            ::ftruncate(fd, static_cast<off_t>(data_start + data_bytes)) == 0;
  for (const auto& [at, n] : ones) {
    const std::vector<std::uint16_t> one(n, 0x3f80);  // bf16 1.0
    ok = ok && ::pwrite(fd, one.data(), 2 * n, static_cast<off_t>(data_start + at)) ==
                   static_cast<ssize_t>(2 * n);
  }
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + file.string());
}

// A safetensors file with every tensor the config expects, in bf16, as a sparse file: only the
// header and the LayerNorm weights (ones) are written; everything else reads as zeros.
void write_sparse_checkpoint(const fs::path& dir, const json& config_json, const FalconConfig& c) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config_json.dump(2);
  const auto tensors = expected_tensors(c, false);
  json header = json::object();
  std::uint64_t offset = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ones;  // (offset, elements) of LN weights
  for (const ExpectedTensor& t : tensors) {
    std::uint64_t n = 1;
    for (const auto d : t.shape) n *= static_cast<std::uint64_t>(d);
    header[t.name] = {
        {"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 2 * n}}};
    const bool is_norm_weight = t.shape.size() == 1 && t.name.ends_with(".weight");
    if (is_norm_weight) ones.emplace_back(offset, n);
    offset += 2 * n;
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  write_sparse_file(dir / "model.safetensors", text, offset, ones);
}

KvShape kv_shape_of(const FalconModel& model, DType dtype) {
  KvShape s = model.kv_shape();
  s.dtype = dtype;
  return s;
}

// What a timed decode step does with the logits once they are ready.
enum class Handoff { kNone, kRowsArgmax, kRowsSummary, kSummary };

// The KV cache, block tables and token source of the prefill and decode steps. Each timed run
// decodes from position `context` again (the same KV slots rewritten), so that every setting sees
// the same context.
class StepBench {
 public:
  StepBench(const Args& args, const FalconConfig& config, cuda::CudaBackend& backend,
            FalconModel& model, std::int64_t max_batch, std::int64_t max_tokens)
      : args_(args),
        config_(config),
        backend_(backend),
        model_(model),
        max_tokens_(max_tokens),
        seq_blocks_(
            (std::max(args.context + args.steps + 3 + 4, args.prefill_tokens) + kBlock - 1) /
            kBlock),
        cache_(backend, kv_shape_of(model, args.kv_dtype), seq_blocks_ * max_batch, kBlock),
        token_(0, static_cast<std::int32_t>(config.vocab_size - 1)),
        tables_(static_cast<std::size_t>(max_batch)) {
    for (std::int64_t s = 0; s < max_batch; ++s)
      for (std::int64_t b = 0; b < seq_blocks_; ++b)
        tables_[s].push_back(static_cast<std::int32_t>(s * seq_blocks_ + b));
  }

  PrefillReport prefill();
  DecodeRow decode(std::int64_t batch, double floor_s);

  KvCache& cache() { return cache_; }
  const std::vector<std::int32_t>& first_table() const { return tables_[0]; }

 private:
  static constexpr std::int64_t kBlock = 16;

  std::vector<std::int32_t> random_tokens(std::int64_t n) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = token_(rng_);
    return t;
  }
  void fill_context(std::int64_t batch);
  double time_steps(std::span<const std::int32_t> next, bool graphs, Handoff h);
  std::array<double, 6> time_settings(std::span<const std::int32_t> next);

  const Args& args_;
  const FalconConfig& config_;
  cuda::CudaBackend& backend_;
  FalconModel& model_;
  const std::int64_t max_tokens_;
  const std::int64_t seq_blocks_;
  KvCache cache_;
  std::mt19937 rng_{1};
  std::uniform_int_distribution<std::int32_t> token_;
  std::vector<std::vector<std::int32_t>> tables_;
  // The host hand-off's scratch, and a sink that keeps its work from being optimised away.
  std::vector<std::int32_t> order_;
  LogitSummary host_summary_;
  volatile std::int64_t sink_ = 0;
};

// One prompt, the last token's logits.
PrefillReport StepBench::prefill() {
  const auto prompt = random_tokens(args_.prefill_tokens);
  const SequenceStep step{prompt, 0, tables_[0], false};
  std::vector<double> times;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = Clock::now();
    model_.forward({&step, 1}, cache_);
    if (i > 0) times.push_back(seconds_since(t0));  // the first run picks GEMM algorithms
  }
  return PrefillReport{args_.prefill_tokens, median(times)};
}

// Fills each sequence's cache with `context` tokens, a few sequences per step (a context longer
// than a step's tokens: one sequence a chunk at a time).
void StepBench::fill_context(std::int64_t batch) {
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t s = 0; s < batch; ++s) prompts.push_back(random_tokens(args_.context));
  for (std::int64_t s = 0; s < batch;) {
    if (args_.context > max_tokens_) {
      for (std::int64_t at = 0; at < args_.context; at += max_tokens_) {
        const std::int64_t len = std::min(max_tokens_, args_.context - at);
        const SequenceStep step{
            std::span<const std::int32_t>(prompts[s])
                .subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(len)),
            static_cast<std::int32_t>(at), tables_[s], false};
        model_.forward({&step, 1}, cache_);
      }
      ++s;
      continue;
    }
    std::vector<SequenceStep> steps;
    std::int64_t used = 0;
    for (; s < batch && used + args_.context <= max_tokens_; ++s, used += args_.context)
      steps.push_back({prompts[s], 0, tables_[s], false});
    model_.forward(steps, cache_);
  }
}

// The median time of a decode step of next.size() sequences, graphs on or off; the first `warm`
// steps of the run are not timed (with graphs: the key's first step runs directly, the second is
// captured).
double StepBench::time_steps(std::span<const std::int32_t> next, bool graphs, Handoff h) {
  const auto B = static_cast<std::int64_t>(next.size());
  auto pos = static_cast<std::int32_t>(args_.context);
  backend_.set_graphs(graphs);
  const std::int64_t warm = graphs ? 3 : 2;
  const auto V = static_cast<std::size_t>(config_.vocab_size);
  std::vector<double> times;
  for (std::int64_t i = 0; i < args_.steps + warm; ++i, ++pos) {
    std::vector<SequenceStep> steps;
    for (std::int64_t s = 0; s < B; ++s)
      steps.push_back({next.subspan(static_cast<std::size_t>(s), 1), pos, tables_[s], false});
    const auto t0 = Clock::now();
    if (h == Handoff::kSummary) {
      model_.forward(steps, cache_, LogitsMode::kSummary);
      for (const LogitSummary& su : model_.summaries()) sink_ = sink_ + su.argmax;
    } else {
      // Returns once the logits are on the host.
      const auto logits = model_.forward(steps, cache_);
      for (std::int64_t s = 0; s < B && h != Handoff::kNone; ++s) {
        const auto row = logits.subspan(static_cast<std::size_t>(s) * V, V);
        if (h == Handoff::kRowsArgmax) {
          sink_ = sink_ + (std::max_element(row.begin(), row.end()) - row.begin());
        } else {
          summarize_logits(row, host_summary_, order_);
          sink_ = sink_ + host_summary_.argmax;
        }
      }
    }
    if (i >= warm) times.push_back(seconds_since(t0));
  }
  return median(times);
}

// Graphs with PDL (at any number of tokens) and fused kernels off, each alone, both, the
// default settings, and the defaults without batch invariance, in turns, the best of two turns
// each, so that a drift of the clock hits them alike. Index k < 4: pdl = k % 2, fuse = k / 2; 4:
// the defaults; 5: batch_invariant off. Leaves the defaults set.
std::array<double, 6> StepBench::time_settings(std::span<const std::int32_t> next) {
  const cuda::CudaOptions defaults;
  std::array<double, 6> by_setting = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30};
  for (int turn = 0; turn < 2; ++turn)
    for (int k = 0; k < 6; ++k) {
      backend_.set_pdl(k < 4 ? k % 2 == 1 : defaults.pdl);
      backend_.set_pdl_max_tokens(k < 4 ? std::int64_t{1} << 40 : defaults.pdl_max_tokens);
      backend_.set_fuse(k < 4 ? k / 2 == 1 : defaults.fuse,
                        k < 4 ? std::int64_t{1} << 40 : defaults.fuse_max_tokens);
      backend_.set_batch_invariant(k == 5 ? false : defaults.batch_invariant);
      by_setting[k] = std::min(by_setting[k], time_steps(next, true, Handoff::kNone));
    }
  backend_.set_pdl(defaults.pdl);
  backend_.set_pdl_max_tokens(defaults.pdl_max_tokens);
  backend_.set_fuse(defaults.fuse, defaults.fuse_max_tokens);
  backend_.set_batch_invariant(defaults.batch_invariant);
  return by_setting;
}

// Decode at `batch` sequences: without graphs, by backend setting, and with each logits hand-off.
DecodeRow StepBench::decode(std::int64_t batch, double floor_s) {
  const std::int64_t B = batch;
  fill_context(B);
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));
  for (auto& t : next) t = token_(rng_);
  if (args_.quick) {  // the default and not batch-invariant, best of two turns each
    double invariant = 1e30, tuned = 1e30;
    for (int turn = 0; turn < 2; ++turn) {
      backend_.set_batch_invariant(true);
      invariant = std::min(invariant, time_steps(next, true, Handoff::kNone));
      backend_.set_batch_invariant(false);
      tuned = std::min(tuned, time_steps(next, true, Handoff::kNone));
    }
    backend_.set_batch_invariant(true);
    DecodeRow row{B,
                  invariant * 1e3,
                  static_cast<double>(B) / invariant,
                  floor_s * 1e3,
                  100.0 * floor_s / invariant,
                  0};
    row.tuned_ms = tuned * 1e3;
    return row;
  }
  const double direct = time_steps(next, false, Handoff::kNone);
  const auto by_setting = time_settings(next);
  const double step = by_setting[4];
  DecodeRow row{
      B,           step * 1e3, static_cast<double>(B) / step, floor_s * 1e3, 100.0 * floor_s / step,
      direct * 1e3};
  row.plain_ms = by_setting[0] * 1e3;
  row.tuned_ms = by_setting[5] * 1e3;
  row.pdl_only_ms = by_setting[1] * 1e3;
  row.fuse_only_ms = by_setting[2] * 1e3;
  row.both_ms = by_setting[3] * 1e3;
  row.rows_argmax_ms = time_steps(next, true, Handoff::kRowsArgmax) * 1e3;
  row.rows_summary_ms = time_steps(next, true, Handoff::kRowsSummary) * 1e3;
  row.summary_ms = time_steps(next, true, Handoff::kSummary) * 1e3;
  return row;
}

}  // namespace

void check_sparse_checkpoint(const Args& args) {
  const fs::path& workdir = args.workdir;
  const json j = model_config_json(args);
  const FalconConfig config = parse_config(j, "config.json");
  write_sparse_checkpoint(workdir, j, config);
  Checkpoint::open(workdir).validate(expected_tensors(config, false));
  std::cout << "sparse checkpoint in " << workdir.string() << " is valid\n";
}

ModelReport run_model_bench(const Args& args, double read_gbs, double tflops) {
  const json config_json = model_config_json(args);
  const FalconConfig config = parse_config(config_json, "config.json");
  write_sparse_checkpoint(args.workdir, config_json, config);
  const Checkpoint ck = Checkpoint::open(args.workdir);
  cuda::CudaOptions opt;
  const cuda::CudaOptions defaults;
  opt.synthetic_weights = true;
  cuda::CudaBackend backend(opt);
  const std::int64_t max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  const std::int64_t max_tokens = std::max(args.prefill_tokens, max_batch);
  ModelReport report;
  const auto t_load = Clock::now();
  FalconModel model(config, ck, backend, ModelOptions{max_tokens, max_batch, config.max_positions});
  backend.synchronize();
  report.load = {model.weight_bytes(), seconds_since(t_load), model.step_weight_bytes()};
  report.load.print(std::cout);

  StepBench bench(args, config, backend, model, max_batch, max_tokens);
  report.prefill = bench.prefill();
  // Weights: 2 FLOPs per bf16 weight per token; attention: QK^T and PV over the causal half.
  const auto T = static_cast<double>(args.prefill_tokens);
  report.prefill.flops = static_cast<double>(report.load.step_bytes) * T +
                         2.0 * T * T * static_cast<double>(config.heads * config.head_dim) *
                             static_cast<double>(config.layers);
  report.prefill.gemm_tflops = tflops;
  report.prefill.print(std::cout);

  // A step's floor: its weight bytes over the read bandwidth, or its weight FLOPs (2 per bf16
  // weight per token) over cuBLASLt's measured bf16 rate, whichever is longer.
  const double read_floor_s = static_cast<double>(report.load.step_bytes) / (read_gbs * 1e9);
  auto floor_at = [&](std::int64_t batch) {
    const double flops = static_cast<double>(report.load.step_bytes) * static_cast<double>(batch);
    return std::max(read_floor_s, tflops > 0 ? flops / (tflops * 1e12) : 0.0);
  };
  report.decode = {args.context,
                   args.kv_dtype,
                   defaults.pdl_max_tokens,
                   defaults.fuse_max_tokens,
                   args.quick,
                   {}};
  for (const std::int64_t B : args.batches) {
    report.decode.rows.push_back(bench.decode(B, floor_at(B)));
    report.decode.rows.back().print(std::cout);
  }
  report.graphs = {backend.graph_stats()};
  report.graphs.print(std::cout);
  if (args.quick) {
    std::error_code ec;
    fs::remove_all(args.workdir, ec);
    return report;
  }
  const StageShapes shapes{.hidden = config.hidden,
                           .heads = config.heads,
                           .kv_heads = config.kv_heads,
                           .head_dim = config.head_dim,
                           .vocab_size = config.vocab_size,
                           .layers = config.layers,
                           .max_positions = config.max_positions};
  report.stages = stage_breakdown(backend, bench.cache().layer(0), bench.first_table(),
                                  args.context, shapes, read_gbs, tflops);
  std::error_code ec;
  fs::remove_all(args.workdir, ec);
  return report;
}

}  // namespace saker::gpu_bench
