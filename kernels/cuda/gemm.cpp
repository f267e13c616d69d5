#include "kernels/cuda/gemm.h"

#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.h"

namespace saker::cuda {
namespace {

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    case DType::I8:
    case DType::F8E4M3:
      break;  // never uploaded: upload_weight refuses int8, and no weight is fp8
  }
  return CUDA_R_32F;
}

// The largest power of two (up to 256) dividing the address.
int alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % static_cast<std::uintptr_t>(align) != 0) align /= 2;
  return align;
}

}  // namespace

// One shape's descriptors and chosen algorithm (destroyed with the plan).
struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

LtGemm::LtGemm(std::size_t workspace_bytes) : workspace_(workspace_bytes) {
  SAKER_CUDA_CHECK(cublasLtCreate(&handle_));
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

const LtGemm::Plan* LtGemm::plan(const Key& key) {
  if (const auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  const auto [dt, N, m, K, align_a, align_b, align_d] = key;
  const cudaDataType_t type = cuda_type(static_cast<DType>(dt));
  auto p = std::make_unique<Plan>();
  // Column-major view: D^T [N, m] = A [K, N]^T x B^T [K, m]; A is the row-major weight read as
  // a column-major K x N matrix, B the row-major activations read as K x m.
  SAKER_CUDA_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  SAKER_CUDA_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans));
  SAKER_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans,
                                                  sizeof no_trans));
  SAKER_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->a, type, static_cast<std::uint64_t>(K),
                                              static_cast<std::uint64_t>(N), K));
  SAKER_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->b, type, static_cast<std::uint64_t>(K),
                                              static_cast<std::uint64_t>(m), K));
  SAKER_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, static_cast<std::uint64_t>(N),
                                              static_cast<std::uint64_t>(m), N));

  cublasLtMatmulPreference_t pref = nullptr;
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                        decltype(&cublasLtMatmulPreferenceDestroy)>
      pref_owner(pref, &cublasLtMatmulPreferenceDestroy);
  const std::uint64_t ws = workspace_.bytes();
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  const std::uint32_t aa = align_a, ab = align_b, ad = align_d;
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa));
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab));
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof ad));
  SAKER_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof ad));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  SAKER_CUDA_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->d, p->d, pref, 1,
                                                  &result, &found));
  if (found == 0)
    p.reset();  // remembered too, so the heuristic is asked once per shape
  else
    p->algo = result.algo;
  return plans_.emplace(key, std::move(p)).first->second.get();
}

bool LtGemm::run(DType dtype, const void* a, const void* b, float* d, std::int64_t N,
                 std::int64_t m, std::int64_t K, cudaStream_t stream) {
  if (N == 0 || m == 0) return true;
  const Plan* p =
      plan(Key{static_cast<int>(dtype), N, m, K, alignment(a), alignment(b), alignment(d)});
  if (!p) return false;
  const float alpha = 1.0f, beta = 0.0f;
  SAKER_CUDA_CHECK(cublasLtMatmul(handle_, p->op, &alpha, a, p->a, b, p->b, &beta, d, p->d, d, p->d,
                                  &p->algo, workspace_.get(), workspace_.bytes(), stream));
  return true;
}

}  // namespace saker::cuda
