// saker_gpu_bench: the CUDA backend's benchmark (run by scripts/bench/gpu.sh).
//
// Measures the GPU's memory bandwidth and cuBLASLt bf16 GEMM rate, then builds a Falcon-7B-shaped
// model (hidden 4544, 71 heads, multi-query, 32 layers, vocab 65024, bf16) through the same
// FalconModel code path as `saker generate`: its checkpoint is a sparse safetensors file (only the
// LayerNorm weights are written; nothing of the 14 GB is stored) and the backend fills every weight
// with random values on the device. It times prefill and decode steps at several batch sizes and
// compares decode with the floor: the bytes of weights a step streams over the measured read
// bandwidth. Prints a table last and writes it as JSON and markdown to --out.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model/checkpoint.h"
#include "engine/model/falcon/config.h"
#include "engine/model/falcon/falcon.h"
#include "engine/model/kv_cache.h"
#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace saker;

namespace {

// Falcon-7B's config.json (tiiuae/falcon-7b), the fields saker reads.
constexpr const char* kFalcon7bConfig = R"({
  "alibi": false, "bias": false, "bos_token_id": 11, "eos_token_id": 11,
  "hidden_size": 4544, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
  "multi_query": true, "new_decoder_architecture": false, "num_attention_heads": 71,
  "num_hidden_layers": 32, "parallel_attn": true, "torch_dtype": "bfloat16",
  "vocab_size": 65024, "max_position_embeddings": 2048
})";

struct Args {
  fs::path out = "gpu-bench-results";
  fs::path workdir = fs::temp_directory_path() / "saker-falcon7b-sparse";
  std::vector<std::int64_t> batches = {1, 2, 4, 8, 32, 64};
  std::int64_t context = 128;  // tokens already in each sequence's cache when decode is timed
  std::int64_t steps = 16;     // decode steps timed per batch size
  std::int64_t prefill_tokens = 512;  // one prompt of this many tokens
  bool skip_model = false;
  bool checkpoint_only = false;  // write and validate the sparse checkpoint, nothing else (no GPU)
};

std::vector<std::int64_t> parse_list(const std::string& s) {
  std::vector<std::int64_t> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) v.push_back(std::stoll(item));
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      return argv[++i];
    };
    if (k == "--out")
      a.out = value();
    else if (k == "--workdir")
      a.workdir = value();
    else if (k == "--batches")
      a.batches = parse_list(value());
    else if (k == "--context")
      a.context = std::stoll(value());
    else if (k == "--steps")
      a.steps = std::stoll(value());
    else if (k == "--prefill-tokens")
      a.prefill_tokens = std::stoll(value());
    else if (k == "--skip-model")
      a.skip_model = true;
    else if (k == "--checkpoint-only")
      a.checkpoint_only = true;
    else
      throw std::invalid_argument("unknown argument " + k +
                                  " (--out DIR --workdir DIR --batches 1,2,4,8,32,64 --context N "
                                  "--steps N --prefill-tokens N --skip-model)");
  }
  return a;
}

// A safetensors file with every tensor the config expects, in bf16, as a sparse file: only the
// header and the LayerNorm weights (ones) are written; everything else reads as zeros.
void write_sparse_checkpoint(const fs::path& dir, const FalconConfig& c) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << kFalcon7bConfig;
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
  const fs::path file = dir / "model.safetensors";
  const int fd = ::open(file.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + file.string());
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(text.size() >> (8 * i));
  const std::uint64_t data_start = 8 + text.size();
  bool ok = ::pwrite(fd, len, 8, 0) == 8 &&
            ::pwrite(fd, text.data(), text.size(), 8) == static_cast<ssize_t>(text.size()) &&
            ::ftruncate(fd, static_cast<off_t>(data_start + offset)) == 0;
  for (const auto& [at, n] : ones) {
    const std::vector<std::uint16_t> one(n, 0x3f80);  // bf16 1.0
    ok = ok && ::pwrite(fd, one.data(), 2 * n, static_cast<off_t>(data_start + at)) ==
                   static_cast<ssize_t>(2 * n);
  }
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + file.string());
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// cuBLASLt bf16 x bf16 -> fp32 (fp32 accumulation), m = n = k = size; TFLOP/s.
double gemm_tflops(std::int64_t size) {
  cuda::LtGemm gemm;
  const auto elems = size * size;
  cuda::DeviceMemory a(static_cast<std::size_t>(elems) * 2), b(static_cast<std::size_t>(elems) * 2),
      d(static_cast<std::size_t>(elems) * 4);
  cuda::CudaBackend filler;
  filler.fill_random(a.get(), elems, DType::BF16, 1, 1.0f);
  filler.fill_random(b.get(), elems, DType::BF16, 2, 1.0f);
  filler.synchronize();
  auto run = [&] {
    if (!gemm.run(DType::BF16, a.get(), b.get(), d.as<float>(), size, size, size, nullptr))
      throw std::runtime_error("cuBLASLt has no bf16 algorithm for 8192^3");
  };
  run();
  SAKER_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> times;
  for (int i = 0; i < 10; ++i) {
    const auto t0 = Clock::now();
    run();
    SAKER_CUDA_CHECK(cudaDeviceSynchronize());
    times.push_back(seconds_since(t0));
  }
  return 2.0 * static_cast<double>(size) * size * size / median(times) * 1e-12;
}

struct DecodeRow {
  std::int64_t batch;
  double step_ms, tokens_per_s, floor_ms, pct_of_floor;
  double direct_ms;  // the same steps without graphs (call by call)
  // With graphs, the logits hand-off included: full rows to the host and a host argmax over
  // each; full rows and a host summary of each (what log-probabilities and top-k need); device
  // summaries (LogitsMode::kSummary) and their argmax.
  double rows_argmax_ms = 0, rows_summary_ms = 0, summary_ms = 0;
  // Graphs on, by CudaOptions: neither programmatic dependent launch (PDL) nor fused kernels
  // (the backend before them); PDL at any number of tokens; fused kernels; both. step_ms is the
  // default's (PDL up to pdl_max_tokens tokens, fused kernels).
  double plain_ms = 0, pdl_only_ms = 0, fuse_only_ms = 0, both_ms = 0;
  double gemv_threads_ms[4] = {0, 0, 0, 0};  // the defaults, GEMVs of 96 / 160 / 192 / 256
};

// One stage of the batch-1 breakdown: the mean time of one call, issued back to back.
struct Stage {
  std::string name;
  double us = 0;
  double bytes = 0;     // weight bytes the call streams (0: not a weight-streaming call)
  double per_step = 0;  // calls per decode step
};

std::string fmt(double v, int prec) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(prec) << v;
  return o.str();
}

// Where a batch-1 decode step's time goes: each of a step's calls on Falcon-7B shapes, timed as
// `reps` calls back to back between two events (so launch gaps count, as in a step without
// graphs). Weights are separate copies made for this, several of each shape in rotation, so that
// no call finds its weights in L2. Then the same GEMVs at 8 tokens (batch 8).
std::vector<Stage> stage_breakdown(cuda::CudaBackend& backend, KvCache& cache,
                                   const std::vector<std::int32_t>& table, std::int64_t context,
                                   const FalconConfig& c, std::vector<Stage>& sweep) {
  constexpr int kCopies = 4, kReps = 40;
  const std::int64_t H = c.hidden, F = 4 * c.hidden, hd = c.head_dim;
  const std::int64_t qkv_rows = (c.heads + 2 * c.kv_heads) * hd;
  auto weights = [&](std::int64_t rows, std::int64_t cols, int copies) {
    std::vector<Weight> w;
    for (int i = 0; i < copies; ++i)
      w.push_back(
          backend.upload_weight(Weight{DType::BF16, nullptr, rows, cols}, WeightQuant::kNone));
    return w;
  };
  const auto wqkv = weights(qkv_rows, H, kCopies), wdense = weights(H, H, kCopies),
             wfc_in = weights(F, H, kCopies), wfc_out = weights(H, F, kCopies),
             wlm = weights(c.vocab_size, H, 2);
  const std::int64_t T = 32;  // tokens at most
  auto x = backend.allocate(static_cast<std::size_t>(T * F));
  auto y = backend.allocate(static_cast<std::size_t>(T * c.vocab_size));
  auto qkv = backend.allocate(static_cast<std::size_t>(T * qkv_rows));
  auto attn = backend.allocate(static_cast<std::size_t>(T * c.heads * hd));
  auto gamma = backend.allocate(static_cast<std::size_t>(H));
  auto beta = backend.allocate(static_cast<std::size_t>(H));
  auto cos_sin = backend.allocate(static_cast<std::size_t>(c.max_positions * hd));
  auto host = backend.allocate_host(static_cast<std::size_t>(c.vocab_size));
  backend.fill_random(x->data(), T * F, DType::F32, 7, 1.0f);
  backend.fill_random(gamma->data(), H, DType::F32, 8, 1.0f);
  backend.synchronize();
  const AttentionShape shape{c.heads, c.kv_heads, hd, nullptr};
  const std::vector<TokenPlace> places = {
      TokenPlace{static_cast<std::int32_t>(context), table.data()}};
  const KvLayer kv = cache.layer(0);
  const std::vector<std::int32_t> ids = {11};
  const std::vector<std::int64_t> rows = {0};

  cudaStream_t st = backend.stream();
  cudaEvent_t e0, e1;
  SAKER_CUDA_CHECK(cudaEventCreate(&e0));
  SAKER_CUDA_CHECK(cudaEventCreate(&e1));
  auto time_us = [&](const auto& op) {
    backend.begin_step();
    op(0);  // warm: stages the places, grows scratch
    backend.synchronize();
    SAKER_CUDA_CHECK(cudaEventRecord(e0, st));
    for (int i = 1; i <= kReps; ++i) op(i);
    SAKER_CUDA_CHECK(cudaEventRecord(e1, st));
    SAKER_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    SAKER_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return 1e3 * static_cast<double>(ms) / kReps;
  };
  auto wbytes = [](const Weight& w) { return static_cast<double>(w.rows * w.cols * 2); };
  const double L = static_cast<double>(c.layers);
  std::vector<Stage> out;
  auto gemv = [&](const std::string& name, const std::vector<Weight>& w, std::int64_t n, bool gelu,
                  double per_step) {
    const double us = time_us([&](int i) {
      const Weight& wi = w[static_cast<std::size_t>(i) % w.size()];
      if (gelu)
        backend.linear_gelu(x->data(), n, wi, nullptr, y->data());
      else
        backend.linear(x->data(), n, wi, nullptr, y->data());
    });
    out.push_back({name, us, wbytes(w[0]), per_step});
  };
  out.push_back(
      {"embedding", time_us([&](int) { backend.embedding(ids, wlm[0], 0, x->data()); }), 0, 1});
  out.push_back({"layer_norm", time_us([&](int) {
                   backend.layer_norm(x->data(), 1, H, gamma->data(), beta->data(), 1e-5f,
                                      y->data());
                 }),
                 0, L});
  gemv("qkv GEMV " + std::to_string(qkv_rows) + "x" + std::to_string(H), wqkv, 1, false, L);
  out.push_back({"rotary",
                 time_us([&](int) { backend.rotary(qkv->data(), places, shape, cos_sin->data()); }),
                 0, L});
  out.push_back(
      {"kv_write", time_us([&](int) { backend.kv_write(qkv->data(), places, shape, kv); }), 0, L});
  out.push_back(
      {"attention (+ combine), " + std::to_string(context + 1) + " keys",
       time_us([&](int) { backend.attention(qkv->data(), places, shape, kv, attn->data()); }), 0,
       L});
  gemv("dense GEMV " + std::to_string(H) + "x" + std::to_string(H), wdense, 1, false, L);
  gemv("fc_in GEMV + GELU " + std::to_string(F) + "x" + std::to_string(H), wfc_in, 1, true, L);
  gemv("fc_out GEMV " + std::to_string(H) + "x" + std::to_string(F), wfc_out, 1, false, L);
  out.push_back({"add", time_us([&](int) { backend.add(x->data(), H, y->data()); }), 0, 2 * L});
  // The fused forms (CudaOptions::fuse), not part of the sum: each replaces rows above.
  out.push_back({"fused: rotary + kv_write", time_us([&](int) {
                   backend.rotary_kv_write(qkv->data(), places, shape, cos_sin->data(), kv);
                 }),
                 0, 0});
  {
    const double us = time_us([&](int i) {
      backend.linear_add(attn->data(), 1, wfc_out[static_cast<std::size_t>(i) % kCopies], nullptr,
                         y->data(), x->data() + H, x->data());
    });
    out.push_back({"fused: fc_out GEMV + both adds", us, wbytes(wfc_out[0]), 0});
  }
  out.push_back({"gather_rows",
                 time_us([&](int) { backend.gather_rows(x->data(), rows, H, y->data()); }), 0, 1});
  out.push_back({"final layer_norm", out[1].us, 0, 1});
  gemv("lm_head GEMV " + std::to_string(c.vocab_size) + "x" + std::to_string(H), wlm, 1, false, 1);
  {
    // The logits' download: 65024 floats into pinned memory, then the host waits.
    backend.synchronize();
    std::vector<double> t;
    for (int i = 0; i < kReps; ++i) {
      const auto t0 = Clock::now();
      backend.download(y->data(), static_cast<std::size_t>(c.vocab_size), host->data());
      t.push_back(seconds_since(t0) * 1e6);
    }
    out.push_back({"logits download + sync (host clock)", median(t), 0, 1});
  }
  // One whole layer's calls back to back, for the launch gaps between different kernels.
  out.push_back({"one layer, all its calls back to back", time_us([&](int i) {
                   const auto k = static_cast<std::size_t>(i) % kCopies;
                   backend.layer_norm(x->data(), 1, H, gamma->data(), beta->data(), 1e-5f,
                                      y->data());
                   backend.linear(x->data(), 1, wqkv[k], nullptr, qkv->data());
                   backend.rotary(qkv->data(), places, shape, cos_sin->data());
                   backend.kv_write(qkv->data(), places, shape, kv);
                   backend.attention(qkv->data(), places, shape, kv, attn->data());
                   backend.linear(attn->data(), 1, wdense[k], nullptr, y->data());
                   backend.linear_gelu(x->data(), 1, wfc_in[k], nullptr, y->data());
                   backend.linear(x->data(), 1, wfc_out[k], nullptr, y->data());
                   backend.add(x->data(), H, y->data());
                   backend.add(x->data(), H, y->data());
                 }),
                 0, 0});
  out.push_back({"one layer, fused calls back to back", time_us([&](int i) {
                   const auto k = static_cast<std::size_t>(i) % kCopies;
                   backend.layer_norm(x->data(), 1, H, gamma->data(), beta->data(), 1e-5f,
                                      y->data());
                   backend.linear(x->data(), 1, wqkv[k], nullptr, qkv->data());
                   backend.rotary_kv_write(qkv->data(), places, shape, cos_sin->data(), kv);
                   backend.attention(qkv->data(), places, shape, kv, attn->data());
                   backend.linear(attn->data(), 1, wdense[k], nullptr, y->data());
                   backend.linear_gelu(x->data(), 1, wfc_in[k], nullptr, y->data());
                   backend.linear_add(x->data(), 1, wfc_out[k], nullptr, y->data(), y->data() + H,
                                      y->data() + 2 * H);
                 }),
                 0, 0});
  // Batch 8: the same GEMVs on 8 tokens (not part of the batch-1 sum).
  gemv("batch 8: qkv GEMV", wqkv, 8, false, 0);
  gemv("batch 8: dense GEMV", wdense, 8, false, 0);
  gemv("batch 8: fc_in GEMV + GELU", wfc_in, 8, true, 0);
  gemv("batch 8: fc_out GEMV", wfc_out, 8, false, 0);
  gemv("batch 8: lm_head GEMV", wlm, 8, false, 0);
  gemv("batch 4: fc_out GEMV", wfc_out, 4, false, 0);
  gemv("batch 2: fc_out GEMV", wfc_out, 2, false, 0);
  {
    // 32 tokens (positions context - 31 .. context of the one sequence): the fused forms against
    // the separate kernels, where GEMMs go to cuBLASLt.
    backend.set_fuse(true, std::int64_t{1} << 40);  // the fused forms at any number of tokens
    std::vector<TokenPlace> many;
    for (std::int64_t t = 0; t < 32; ++t)
      many.push_back(TokenPlace{static_cast<std::int32_t>(context - 31 + t), table.data()});
    out.push_back({"32 tokens: rotary, kv_write (separate)", time_us([&](int) {
                     backend.rotary(qkv->data(), many, shape, cos_sin->data());
                     backend.kv_write(qkv->data(), many, shape, kv);
                   }),
                   0, 0});
    out.push_back({"32 tokens: rotary + kv_write (fused)", time_us([&](int) {
                     backend.rotary_kv_write(qkv->data(), many, shape, cos_sin->data(), kv);
                   }),
                   0, 0});
    out.push_back({"32 tokens: fc_out GEMM, then both adds (separate)", time_us([&](int i) {
                     const auto k = static_cast<std::size_t>(i) % kCopies;
                     backend.linear(x->data(), 32, wfc_out[k], nullptr, y->data());
                     backend.add(y->data() + 32 * H, 32 * H, y->data());
                     backend.add(y->data(), 32 * H, y->data() + 64 * H);
                   }),
                   wbytes(wfc_out[0]), 0});
    out.push_back({"32 tokens: fc_out GEMM with both adds (linear_add)", time_us([&](int i) {
                     const auto k = static_cast<std::size_t>(i) % kCopies;
                     backend.linear_add(x->data(), 32, wfc_out[k], nullptr, y->data() + 32 * H,
                                        y->data(), y->data() + 64 * H);
                   }),
                   wbytes(wfc_out[0]), 0});
    const cuda::CudaOptions defaults;
    backend.set_fuse(defaults.fuse, defaults.fuse_max_tokens);
  }
  // GEMV kernel variants (tuning): every shape, every variant, rotating weights.
  const std::vector<std::pair<std::string, const std::vector<Weight>*>> shapes = {
      {"qkv", &wqkv},
      {"dense", &wdense},
      {"fc_in", &wfc_in},
      {"fc_out", &wfc_out},
      {"lm_head", &wlm}};
  for (const auto& [shape_name, w] : shapes)
    for (int v = 0; v < cuda::gemv_variant_count(); ++v) {
      const double us = time_us([&, w = w](int i) {
        cuda::launch_gemv_variant(v, x->data(), (*w)[static_cast<std::size_t>(i) % w->size()],
                                  y->data(), st);
      });
      sweep.push_back({shape_name + ": " + cuda::gemv_variant_name(v), us, wbytes((*w)[0]), 0});
    }
  SAKER_CUDA_CHECK(cudaEventDestroy(e0));
  SAKER_CUDA_CHECK(cudaEventDestroy(e1));
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  if (args.checkpoint_only) {
    const FalconConfig config = parse_config(json::parse(kFalcon7bConfig), "falcon-7b config");
    write_sparse_checkpoint(args.workdir, config);
    Checkpoint::open(args.workdir).validate(expected_tensors(config, false));
    std::cout << "sparse checkpoint in " << args.workdir.string() << " is valid\n";
    return 0;
  }
  if (cuda::device_count() == 0) {
    std::cerr << "saker_gpu_bench: no CUDA device is visible\n";
    return 1;
  }
  json result;
  const std::string device = cuda::device_description(0);
  result["device"] = device;
  std::cout << "device: " << device << "\n" << std::flush;

  const std::size_t probe = std::size_t{1} << 30;
  const double read_gbs = cuda::measure_read_bandwidth(probe, 10);
  const double copy_gbs = cuda::measure_copy_bandwidth(probe, 10);
  const double h2d_gbs = cuda::measure_host_to_device_bandwidth(std::size_t{256} << 20, 5);
  std::cout << "read bandwidth " << fmt(read_gbs, 0) << " GB/s, device copy " << fmt(copy_gbs, 0)
            << " GB/s (read + write), host to device " << fmt(h2d_gbs, 1) << " GB/s\n"
            << std::flush;
  const double tflops = gemm_tflops(8192);
  std::cout << "cuBLASLt bf16 GEMM 8192^3: " << fmt(tflops, 1) << " TFLOP/s\n" << std::flush;
  result["read_bandwidth_gbs"] = read_gbs;
  result["copy_bandwidth_gbs"] = copy_gbs;
  result["host_to_device_gbs"] = h2d_gbs;
  result["gemm_bf16_tflops"] = tflops;

  std::vector<DecodeRow> rows;
  std::vector<Stage> stages, sweep;
  cuda::GraphStats graphs;
  double prefill_tps = 0;
  std::size_t step_bytes = 0;
  if (!args.skip_model) {
    const FalconConfig config = parse_config(json::parse(kFalcon7bConfig), "falcon-7b config");
    write_sparse_checkpoint(args.workdir, config);
    const Checkpoint ck = Checkpoint::open(args.workdir);
    cuda::CudaOptions opt;
    const cuda::CudaOptions defaults;
    opt.synthetic_weights = true;
    cuda::CudaBackend backend(opt);
    const std::int64_t max_batch = *std::max_element(args.batches.begin(), args.batches.end());
    const std::int64_t max_tokens = std::max(args.prefill_tokens, max_batch);
    const auto t_load = Clock::now();
    FalconModel model(config, ck, backend,
                      ModelOptions{max_tokens, max_batch, config.max_positions});
    backend.synchronize();
    step_bytes = model.step_weight_bytes();
    std::cout << "Falcon-7B-shaped model: " << fmt(model.weight_bytes() / 1e9, 2)
              << " GB of bf16 weights made on the device in " << fmt(seconds_since(t_load), 1)
              << " s; a decode step streams " << fmt(step_bytes / 1e9, 2) << " GB\n"
              << std::flush;

    const std::int64_t block = 16;
    // Each timed run decodes from position `context` again (the same KV slots rewritten), so that
    // every setting sees the same context.
    const std::int64_t per_seq = args.context + args.steps + 3 + 4;
    const std::int64_t seq_blocks = (std::max(per_seq, args.prefill_tokens) + block - 1) / block;
    KvCache cache(backend, model.kv_shape(), seq_blocks * max_batch, block);
    std::mt19937 rng(1);
    std::uniform_int_distribution<std::int32_t> token(
        0, static_cast<std::int32_t>(config.vocab_size - 1));
    auto random_tokens = [&](std::int64_t n) {
      std::vector<std::int32_t> t(static_cast<std::size_t>(n));
      for (auto& x : t) x = token(rng);
      return t;
    };
    std::vector<std::vector<std::int32_t>> tables(static_cast<std::size_t>(max_batch));
    for (std::int64_t s = 0; s < max_batch; ++s)
      for (std::int64_t b = 0; b < seq_blocks; ++b)
        tables[s].push_back(static_cast<std::int32_t>(s * seq_blocks + b));

    // Prefill: one prompt, the last token's logits.
    {
      const auto prompt = random_tokens(args.prefill_tokens);
      const SequenceStep step{prompt, 0, tables[0], false};
      std::vector<double> times;
      for (int i = 0; i < 4; ++i) {
        const auto t0 = Clock::now();
        model.forward({&step, 1}, cache);
        if (i > 0) times.push_back(seconds_since(t0));  // the first run picks GEMM algorithms
      }
      prefill_tps = static_cast<double>(args.prefill_tokens) / median(times);
      std::cout << "prefill of " << args.prefill_tokens
                << " tokens: " << fmt(median(times) * 1e3, 1) << " ms, " << fmt(prefill_tps, 0)
                << " tokens/s\n"
                << std::flush;
    }

    const double floor_s = static_cast<double>(step_bytes) / (read_gbs * 1e9);
    for (const std::int64_t B : args.batches) {
      // Fill each sequence's cache with `context` tokens, a few sequences per step.
      std::vector<std::vector<std::int32_t>> prompts;
      for (std::int64_t s = 0; s < B; ++s) prompts.push_back(random_tokens(args.context));
      for (std::int64_t s = 0; s < B;) {
        std::vector<SequenceStep> steps;
        std::int64_t used = 0;
        for (; s < B && used + args.context <= max_tokens; ++s, used += args.context)
          steps.push_back({prompts[s], 0, tables[s], false});
        if (steps.empty()) throw std::runtime_error("--context exceeds the step's token budget");
        model.forward(steps, cache);
      }
      std::vector<std::int32_t> next(static_cast<std::size_t>(B));
      for (auto& t : next) t = token(rng);
      std::int32_t pos = static_cast<std::int32_t>(args.context);
      // Steps timed with graphs on or off; the first `warm` of each run are not timed (with graphs:
      // the key's first step runs directly, the second is captured).
      enum class Handoff { kNone, kRowsArgmax, kRowsSummary, kSummary };
      std::vector<std::int32_t> order;
      LogitSummary host_summary;
      volatile std::int64_t sink = 0;  // keeps the host's work from being optimised away
      auto run = [&](bool graphs, Handoff h) {
        pos = static_cast<std::int32_t>(args.context);
        backend.set_graphs(graphs);
        const std::int64_t warm = graphs ? 3 : 2;
        const auto V = static_cast<std::size_t>(config.vocab_size);
        std::vector<double> times;
        for (std::int64_t i = 0; i < args.steps + warm; ++i, ++pos) {
          std::vector<SequenceStep> steps;
          for (std::int64_t s = 0; s < B; ++s)
            steps.push_back(
                {std::span(next).subspan(static_cast<std::size_t>(s), 1), pos, tables[s], false});
          const auto t0 = Clock::now();
          if (h == Handoff::kSummary) {
            model.forward(steps, cache, LogitsMode::kSummary);
            for (const LogitSummary& su : model.summaries()) sink = sink + su.argmax;
          } else {
            // Returns once the logits are on the host.
            const auto logits = model.forward(steps, cache);
            for (std::int64_t s = 0; s < B && h != Handoff::kNone; ++s) {
              const auto row = logits.subspan(static_cast<std::size_t>(s) * V, V);
              if (h == Handoff::kRowsArgmax) {
                sink = sink + (std::max_element(row.begin(), row.end()) - row.begin());
              } else {
                summarize_logits(row, host_summary, order);
                sink = sink + host_summary.argmax;
              }
            }
          }
          if (i >= warm) times.push_back(seconds_since(t0));
        }
        return median(times);
      };
      const double direct = run(false, Handoff::kNone);
      // Graphs with PDL (at any number of tokens) and fused kernels off, each alone, both, and
      // the default settings, in turns, the best of two turns each, so that a drift of the clock
      // hits them alike. Index k < 4: pdl = k % 2, fuse = k / 2; 4: the defaults.
      // 5 to 8: the defaults, GEMVs on rows of at most kGemvSmallK with other block sizes.
      constexpr int kThreadsTried[4] = {96, 160, 192, 256};
      double by_setting[9] = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30};
      for (int turn = 0; turn < 2; ++turn)
        for (int k = 0; k < 9; ++k) {
          backend.set_gemv_threads(k >= 5 ? kThreadsTried[k - 5] : defaults.gemv_threads);
          backend.set_pdl(k < 4 ? k % 2 == 1 : defaults.pdl);
          backend.set_pdl_max_tokens(k < 4 ? std::int64_t{1} << 40 : defaults.pdl_max_tokens);
          backend.set_fuse(k < 4 ? k / 2 == 1 : defaults.fuse,
                           k < 4 ? std::int64_t{1} << 40 : defaults.fuse_max_tokens);
          by_setting[k] = std::min(by_setting[k], run(true, Handoff::kNone));
        }
      backend.set_pdl(defaults.pdl);
      backend.set_pdl_max_tokens(defaults.pdl_max_tokens);
      backend.set_fuse(defaults.fuse, defaults.fuse_max_tokens);
      backend.set_gemv_threads(defaults.gemv_threads);
      const double step = by_setting[4];
      DecodeRow row{B,
                    step * 1e3,
                    static_cast<double>(B) / step,
                    floor_s * 1e3,
                    100.0 * floor_s / step,
                    direct * 1e3};
      row.plain_ms = by_setting[0] * 1e3;
      for (int i = 0; i < 4; ++i) row.gemv_threads_ms[i] = by_setting[5 + i] * 1e3;
      row.pdl_only_ms = by_setting[1] * 1e3;
      row.fuse_only_ms = by_setting[2] * 1e3;
      row.both_ms = by_setting[3] * 1e3;
      row.rows_argmax_ms = run(true, Handoff::kRowsArgmax) * 1e3;
      row.rows_summary_ms = run(true, Handoff::kRowsSummary) * 1e3;
      row.summary_ms = run(true, Handoff::kSummary) * 1e3;
      rows.push_back(row);
      std::cout << "decode batch " << B << " with the logits hand-off: full rows + host argmax "
                << fmt(row.rows_argmax_ms, 2) << " ms, full rows + host summary "
                << fmt(row.rows_summary_ms, 2) << " ms, device summary " << fmt(row.summary_ms, 2)
                << " ms\n";
      std::cout << "decode batch " << B << ", graphs: " << fmt(row.plain_ms, 2) << " ms plain, "
                << fmt(row.pdl_only_ms, 2) << " ms with PDL, " << fmt(row.fuse_only_ms, 2)
                << " ms with fused kernels, " << fmt(row.both_ms, 2) << " ms with both, "
                << fmt(row.step_ms, 2)
                << " ms as by default; GEMVs of "
                   "96 / 160 / 192 / 256 threads: "
                << fmt(row.gemv_threads_ms[0], 2) << " / " << fmt(row.gemv_threads_ms[1], 2)
                << " / " << fmt(row.gemv_threads_ms[2], 2) << " / "
                << fmt(row.gemv_threads_ms[3], 2) << " ms\n";
      std::cout << "decode batch " << B << ": " << fmt(step * 1e3, 2) << " ms/step with graphs ("
                << fmt(direct * 1e3, 2) << " without), " << fmt(static_cast<double>(B) / step, 0)
                << " tokens/s, " << fmt(100.0 * floor_s / step, 1) << "% of the floor ("
                << fmt(floor_s * 1e3, 2) << " ms)\n"
                << std::flush;
    }
    graphs = backend.graph_stats();
    std::cout << "graphs: " << graphs.captures << " captured, " << graphs.replays << " replays, "
              << graphs.direct << " direct steps, " << graphs.mismatches << " signature changes, "
              << graphs.aborts << " dropped captures\n";
    stages = stage_breakdown(backend, cache, tables[0], args.context, config, sweep);
    std::error_code ec;
    fs::remove_all(args.workdir, ec);
  }

  // The table, last.
  std::ostringstream md;
  md << "| measure | value |\n|---|---|\n"
     << "| device | " << device << " |\n"
     << "| read bandwidth (streaming kernel) | " << fmt(read_gbs, 0) << " GB/s |\n"
     << "| device-to-device copy (read + write) | " << fmt(copy_gbs, 0) << " GB/s |\n"
     << "| host-to-device copy (pinned) | " << fmt(h2d_gbs, 1) << " GB/s |\n"
     << "| cuBLASLt bf16 GEMM 8192^3, fp32 accumulate | " << fmt(tflops, 1) << " TFLOP/s |\n";
  if (!args.skip_model) {
    md << "| Falcon-7B shape: weight bytes per decode step | " << fmt(step_bytes / 1e9, 2)
       << " GB |\n"
       << "| prefill, " << args.prefill_tokens << " tokens | " << fmt(prefill_tps, 0)
       << " tokens/s |\n\n"
       << "| decode batch | ms/step (graphs) | ms/step (no graphs) | tokens/s | floor ms (weights "
          "/ read bw) | % of floor |\n"
       << "|---|---|---|---|---|---|\n";
    for (const auto& r : rows)
      md << "| " << r.batch << " | " << fmt(r.step_ms, 2) << " | " << fmt(r.direct_ms, 2) << " | "
         << fmt(r.tokens_per_s, 0) << " | " << fmt(r.floor_ms, 2) << " | " << fmt(r.pct_of_floor, 1)
         << " |\n";
    md << "\nDecode step (graphs on) by backend setting: programmatic dependent launch (PDL, "
          "here at any number of tokens) and fused kernels (rotary + KV write, the block's adds in "
          "the fc_out GEMV; here at any number of tokens), best of two "
          "turns each; the default uses PDL up to "
       << cuda::CudaOptions{}.pdl_max_tokens << " tokens and fused kernels up to "
       << cuda::CudaOptions{}.fuse_max_tokens
       << ":\n\n"
          "| decode batch | plain ms | PDL ms | fused ms | both ms | default ms | default, "
          "GEMVs (K <= 8192) of 96 / 160 / 192 / 256 threads ms | default / plain | % of floor: "
          "plain | default |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows)
      md << "| " << r.batch << " | " << fmt(r.plain_ms, 2) << " | " << fmt(r.pdl_only_ms, 2)
         << " | " << fmt(r.fuse_only_ms, 2) << " | " << fmt(r.both_ms, 2) << " | "
         << fmt(r.step_ms, 2) << " | " << fmt(r.gemv_threads_ms[0], 2) << " / "
         << fmt(r.gemv_threads_ms[1], 2) << " / " << fmt(r.gemv_threads_ms[2], 2) << " / "
         << fmt(r.gemv_threads_ms[3], 2) << " | " << fmt(r.step_ms / r.plain_ms, 3) << " | "
         << fmt(100.0 * r.floor_ms / r.plain_ms, 1) << " | " << fmt(r.pct_of_floor, 1) << " |\n";
    md << "\nDecode step with the logits hand-off (graphs on): full rows to the host, then a host "
          "argmax or a host summary (argmax, log-sum-exp, top "
       << kSummaryTopK
       << ") per row; or "
          "the summary made on the device (LogitsMode::kSummary), only it copied back:\n\n"
       << "| decode batch | full rows + host argmax ms | full rows + host summary ms | device "
          "summary ms |\n"
       << "|---|---|---|---|\n";
    for (const auto& r : rows)
      md << "| " << r.batch << " | " << fmt(r.rows_argmax_ms, 2) << " | "
         << fmt(r.rows_summary_ms, 2) << " | " << fmt(r.summary_ms, 2) << " |\n";
    md << "\ngraphs: " << graphs.captures << " captured, " << graphs.replays << " replays, "
       << graphs.direct << " direct steps, " << graphs.mismatches << " signature changes, "
       << graphs.aborts << " dropped captures\n";
    if (!stages.empty()) {
      md << "\nBatch-1 stages (context " << args.context
         << "), each call issued back to back on the stream (launch gaps included); GB/s = weight "
            "bytes / time:\n\n"
         << "| stage | us/call | calls/step | us/step | GB/s | % of read bw "
            "|\n|---|---|---|---|---|---|\n";
      double total = 0;
      for (const auto& st : stages) {
        const double gbs = st.bytes > 0 ? st.bytes / (st.us * 1e-6) / 1e9 : 0;
        total += st.us * st.per_step;
        md << "| " << st.name << " | " << fmt(st.us, 1) << " | " << fmt(st.per_step, 0) << " | "
           << fmt(st.us * st.per_step, 0) << " | " << (st.bytes > 0 ? fmt(gbs, 0) : "") << " | "
           << (st.bytes > 0 ? fmt(100.0 * gbs / read_gbs, 1) : "") << " |\n";
      }
      md << "| sum of the batch-1 stages (calls/step > 0) | | | " << fmt(total, 0) << " | | |\n";
    }
    if (!sweep.empty()) {
      md << "\nGEMV kernel variants (bf16, back to back; R rows per warp, U loads per row per "
            "lane, "
            "W warps per block):\n\n| shape: variant | us/call | GB/s | % of read bw "
            "|\n|---|---|---|---|\n";
      for (const auto& st : sweep) {
        const double gbs = st.bytes / (st.us * 1e-6) / 1e9;
        md << "| " << st.name << " | " << fmt(st.us, 1) << " | " << fmt(gbs, 0) << " | "
           << fmt(100.0 * gbs / read_gbs, 1) << " |\n";
      }
    }
    result["step_weight_bytes"] = step_bytes;
    result["prefill_tokens"] = args.prefill_tokens;
    result["prefill_tokens_per_s"] = prefill_tps;
    result["decode_context"] = args.context;
    result["graphs"] = {{"captures", graphs.captures},
                        {"replays", graphs.replays},
                        {"direct", graphs.direct},
                        {"mismatches", graphs.mismatches},
                        {"aborts", graphs.aborts}};
    for (const auto& st : sweep)
      result["gemv_variants"].push_back({{"name", st.name}, {"us", st.us}, {"bytes", st.bytes}});
    for (const auto& st : stages)
      result["stages"].push_back(
          {{"name", st.name}, {"us", st.us}, {"bytes", st.bytes}, {"per_step", st.per_step}});
    for (const auto& r : rows)
      result["decode"].push_back({{"batch", r.batch},
                                  {"step_ms", r.step_ms},
                                  {"step_ms_without_graphs", r.direct_ms},
                                  {"tokens_per_s", r.tokens_per_s},
                                  {"floor_ms", r.floor_ms},
                                  {"percent_of_floor", r.pct_of_floor},
                                  {"step_ms_rows_host_argmax", r.rows_argmax_ms},
                                  {"step_ms_rows_host_summary", r.rows_summary_ms},
                                  {"step_ms_device_summary", r.summary_ms},
                                  {"step_ms_plain", r.plain_ms},
                                  {"step_ms_pdl_only", r.pdl_only_ms},
                                  {"step_ms_fuse_only", r.fuse_only_ms},
                                  {"step_ms_pdl_fuse", r.both_ms},
                                  {"step_ms_gemv_threads_96", r.gemv_threads_ms[0]},
                                  {"step_ms_gemv_threads_160", r.gemv_threads_ms[1]},
                                  {"step_ms_gemv_threads_192", r.gemv_threads_ms[2]},
                                  {"step_ms_gemv_threads_256", r.gemv_threads_ms[3]}});
  }
  fs::create_directories(args.out);
  std::ofstream(args.out / "gpu_bench.json") << result.dump(2) << "\n";
  std::ofstream(args.out / "gpu_bench.md") << md.str();
  std::cout << "\n"
            << md.str() << "\nwritten to " << (args.out / "gpu_bench.md").string()
            << " and gpu_bench.json\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "saker_gpu_bench: " << e.what() << "\n";
  return 1;
}
