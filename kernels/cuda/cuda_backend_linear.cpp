// Linear layers on the CUDA backend: which path a call takes (GEMV, the skinny tensor-core kernel
// or cuBLASLt; CudaOptions::batch_invariant), the tuner that times them when invariance is off,
// and each path's launches with the bias, GELU and residual-add epilogue.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace saker::cuda {

const char* linear_path_name(LinearPath p) {
  switch (p) {
    case LinearPath::kGemv:
      return "gemv";
    case LinearPath::kMma:
      return "mma";
    case LinearPath::kLt:
      return "cublaslt";
    case LinearPath::kAuto:
      break;
  }
  return "auto";
}

void CudaBackend::set_batch_invariant(bool on) {
  impl_->options.batch_invariant = on;
}

void CudaBackend::set_linear_path(LinearPath path) {
  impl_->options.linear_path = path;
}

std::vector<LinearChoice> CudaBackend::linear_choices() const {
  return impl_->choices;
}

namespace {

bool mma_takes(const Weight& w, const float* x, std::int64_t n) {
  return n <= kMmaMaxTokens && mma_supported(w, x);
}

bool eight_bit(const Weight& w) {
  return w.dtype == DType::I8 || w.dtype == DType::F8E4M3;
}

// The path without measurements: tensor cores where they take the call, else GEMV for a few
// tokens and cuBLASLt for more.
LinearPath rule(const Weight& w, const float* x, std::int64_t n) {
  if (eight_bit(w)) return LinearPath::kGemv;  // codes and scales: the GEMV takes them alone
  if (mma_takes(w, x, n)) return LinearPath::kMma;
  return n <= kGemvMaxTokens ? LinearPath::kGemv : LinearPath::kLt;
}

}  // namespace

LinearPath CudaBackend::choose_linear(const float* x, std::int64_t n, const Weight& w) {
  Impl& m = *impl_;
  switch (m.options.linear_path) {
    case LinearPath::kGemv:
    case LinearPath::kLt:
      return m.options.linear_path;
    case LinearPath::kMma:
      return mma_takes(w, x, n) ? LinearPath::kMma : rule(w, x, n);
    case LinearPath::kAuto:
      break;
  }
  if (m.options.batch_invariant || n > kMmaMaxTokens || eight_bit(w)) return rule(w, x, n);
  const auto key = std::make_tuple(static_cast<int>(w.dtype), w.rows, w.cols, n);
  if (const auto it = m.tuned.find(key); it != m.tuned.end()) return m.choices[it->second].path;
  // Timing needs the host to wait for the stream: never inside a capture (nor when only staging).
  if (m.mode != detail::Mode::kDirect) return rule(w, x, n);
  return tune_linear(x, n, w);
}

LinearPath CudaBackend::tune_linear(const float* x, std::int64_t n, const Weight& w) {
  Impl& m = *impl_;
  LinearChoice c;
  c.dtype = w.dtype;
  c.rows = w.rows;
  c.cols = w.cols;
  c.tokens = n;
  // Into scratch, without the epilogue (a residual add must happen once), outside the step's
  // signature.
  m.ensure_scratch(m.tune_out, static_cast<std::size_t>(n * w.rows) * sizeof(float));
  float* out = m.tune_out.as<float>();
  const bool in_step = std::exchange(m.in_step, false);
  constexpr int kReps = 5;
  auto time = [&](LinearPath p) {
    return 1e6 * median_seconds(kReps, m.stream.get(), [&] {
             linear_on(p, x, n, w, nullptr, false, nullptr, nullptr, out);
           });
  };
  if (n <= kGemvMaxTokens || eight_bit(w)) c.us_gemv = time(LinearPath::kGemv);
  if (mma_takes(w, x, n)) c.us_mma = time(LinearPath::kMma);
  if (n > 1 && !eight_bit(w)) c.us_lt = time(LinearPath::kLt);  // one token: never faster
  m.in_step = in_step;
  m.after_kernel = false;
  double best = std::numeric_limits<double>::infinity();
  for (const auto& [path, us] :
       {std::pair{LinearPath::kGemv, c.us_gemv}, std::pair{LinearPath::kMma, c.us_mma},
        std::pair{LinearPath::kLt, c.us_lt}})
    if (us >= 0 && us < best) {
      best = us;
      c.path = path;
    }
  if (c.path == LinearPath::kAuto) c.path = rule(w, x, n);
  m.tuned.emplace(std::make_tuple(static_cast<int>(w.dtype), w.rows, w.cols, n), m.choices.size());
  m.choices.push_back(c);
  return c.path;
}

void CudaBackend::linear_impl(const float* x, std::int64_t n, const Weight& w, const float* bias,
                              bool gelu, const float* add, float* residual, float* y) {
  if (n <= 0 || w.rows == 0) return;
  Impl& m = *impl_;
  m.record(1, x, n, static_cast<int>(w.dtype), w.data, w.rows, w.cols, bias, gelu, add, residual,
           y);
  // Staging only (a graph's replay) never tunes: it takes the path the capture took, as far as
  // the host knows it.
  const LinearPath path = choose_linear(x, n, w);
  m.record(static_cast<int>(path));
  linear_on(path, x, n, w, bias, gelu, add, residual, y);
}

void CudaBackend::linear_on(LinearPath path, const float* x, std::int64_t n, const Weight& w,
                            const float* bias, bool gelu, const float* add, float* residual,
                            float* y) {
  Impl& m = *impl_;
  cudaStream_t s = m.stream.get();
  // GEMV, a chunk of tokens at a time (any count; also for shapes the other paths cannot take).
  auto gemv_chunks = [&] {
    for (std::int64_t t = 0; t < n; t += kGemvMaxTokens) {
      const std::int64_t o = t * w.rows;
      launch_gemv(x + t * w.cols, std::min(kGemvMaxTokens, n - t), w, bias, gelu,
                  add ? add + o : nullptr, residual ? residual + o : nullptr, y + o,
                  m.options.gemv_threads, m.next_kernel(n));
    }
  };
  if (path == LinearPath::kMma && mma_takes(w, x, n)) {
    if (m.launching()) launch_skinny_mma(x, n, w, {bias, gelu, add, residual}, y, m.next_kernel(n));
    return;
  }
  if (path != LinearPath::kLt || eight_bit(w)) {
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

}  // namespace saker::cuda
