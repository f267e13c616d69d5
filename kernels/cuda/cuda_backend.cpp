#include "kernels/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/quantize.h"

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

}  // namespace

using detail::Mode;

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
  if (quant != WeightQuant::kNone) return upload_quantized(host, quant);
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

// --dtype int8|fp8: quantized on the host by the CPU backend's quantizer (kernels/quantize.h: the
// same codes and scales), then the codes (row-major, a byte each) and the scales copied over.
Weight CudaBackend::upload_quantized(const Weight& host, WeightQuant quant) {
  if (impl_->options.synthetic_weights)
    throw std::invalid_argument("random weights (benchmarks) are not made for --dtype int8|fp8");
  if (quant == WeightQuant::kW8A8)
    throw std::invalid_argument("--dtype w8a8 (int8 activations) runs on the CPU backend only");
  const DType code = quant == WeightQuant::kInt8 ? DType::I8 : DType::F8E4M3;
  const auto rows = static_cast<std::size_t>(host.rows), cols = static_cast<std::size_t>(host.cols);
  std::vector<std::uint8_t> codes(rows * cols);
  std::vector<float> scales(rows);
  const auto* src = static_cast<const std::byte*>(host.data);
  for (std::size_t r = 0; r < rows; ++r)
    scales[r] = quantize_row(host.dtype, src + r * cols * dtype_size(host.dtype), host.cols, code,
                             static_cast<std::int64_t>(r), codes.data() + r * cols);
  DeviceMemory mem(codes.size()), scale_mem(scales.size() * sizeof(float));
  cudaStream_t s = impl_->stream.get();
  if (!codes.empty())
    SAKER_CUDA_CHECK(
        cudaMemcpyAsync(mem.get(), codes.data(), codes.size(), cudaMemcpyHostToDevice, s));
  if (!scales.empty())
    SAKER_CUDA_CHECK(cudaMemcpyAsync(scale_mem.get(), scales.data(), scales.size() * sizeof(float),
                                     cudaMemcpyHostToDevice, s));
  SAKER_CUDA_CHECK(cudaStreamSynchronize(s));  // the host vectors go out of scope
  Weight w{code, mem.get(), host.rows, host.cols};
  w.scales = scale_mem.as<float>();
  impl_->weights.push_back(std::move(mem));
  impl_->weights.push_back(std::move(scale_mem));
  impl_->after_kernel = false;
  return w;
}

void CudaBackend::fill_random(void* data, std::int64_t count, DType dtype, std::uint64_t seed,
                              float scale) {
  launch_fill_random(data, count, dtype, seed, scale, impl_->stream.get());
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
