// saker_gpu_bench: the CUDA backend's benchmark (run by scripts/bench/gpu.sh).
//
// Measures the GPU's memory bandwidth and cuBLASLt bf16 GEMM rate, then builds a Falcon-7B-shaped
// model (hidden 4544, 71 heads, multi-query, 32 layers, vocab 65024, bf16) through the same
// FalconModel code path as `saker generate`: its checkpoint is a sparse safetensors file (only the
// LayerNorm weights are written; nothing of the 14 GB is stored) and the backend fills every weight
// with random values on the device. It times prefill and decode steps at several batch sizes and
// compares decode with the floor: the bytes of weights a step streams over the measured read
// bandwidth. Prints a table last and writes it as JSON and markdown to --out.
//
// The steps and their reports: gpu_bench.h; the model's steps: gpu_bench_model.cpp; the batch-1
// stages: gpu_bench_stages.cpp; the printed text and JSON: gpu_bench_report.cpp.
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/memory.h"
#include "scripts/bench/gpu_bench.h"

using namespace saker;
using namespace saker::gpu_bench;

namespace {

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
    else if (k == "--kv-cache-dtype") {
      const std::string d = value();
      const auto t = kv_dtype_from_option(d);
      if (!t)
        throw std::invalid_argument("--kv-cache-dtype " + d +
                                    ": must be fp32, bf16, fp16, fp8_e4m3 or int8");
      a.kv_dtype = *t;
    } else if (k == "--skip-model")
      a.skip_model = true;
    else if (k == "--checkpoint-only")
      a.checkpoint_only = true;
    else if (k == "--max-positions")
      a.max_positions = std::stoll(value());
    else if (k == "--quick")
      a.quick = true;
    else if (k == "--config")
      a.config = value();
    else
      throw std::invalid_argument("unknown argument " + k +
                                  " (--out DIR --workdir DIR --batches 1,2,4,8,32,64 --context N "
                                  "--steps N --prefill-tokens N --kv-cache-dtype T --skip-model "
                                  "--max-positions N --quick --checkpoint-only --config FILE)");
  }
  return a;
}

BandwidthReport measure_bandwidth() {
  const std::size_t probe = std::size_t{1} << 30;
  BandwidthReport r;
  r.read_gbs = cuda::measure_read_bandwidth(probe, 10);
  r.copy_gbs = cuda::measure_copy_bandwidth(probe, 10);
  r.h2d_gbs = cuda::measure_host_to_device_bandwidth(std::size_t{256} << 20, 5);
  return r;
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

// The table last (printed and written as gpu_bench.md), with gpu_bench.json.
void write_results(const BenchReport& report, const fs::path& out) {
  const std::string md = report.markdown();
  fs::create_directories(out);
  std::ofstream(out / "gpu_bench.json") << report.to_json().dump(2) << "\n";
  std::ofstream(out / "gpu_bench.md") << md;
  std::cout << "\n"
            << md << "\nwritten to " << (out / "gpu_bench.md").string() << " and gpu_bench.json\n";
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  if (args.checkpoint_only) {
    check_sparse_checkpoint(args);
    return 0;
  }
  if (cuda::device_count() == 0) {
    std::cerr << "saker_gpu_bench: no CUDA device is visible\n";
    return 1;
  }
  BenchReport report;
  report.device = {cuda::device_description(0)};
  report.device.print(std::cout);
  report.bandwidth = measure_bandwidth();
  report.bandwidth.print(std::cout);
  report.gemm = {gemm_tflops(8192)};
  report.gemm.print(std::cout);
  if (!args.skip_model)
    report.model = run_model_bench(args, report.bandwidth.read_gbs, report.gemm.tflops);
  write_results(report, args.out);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "saker_gpu_bench: " << e.what() << "\n";
  return 1;
}
