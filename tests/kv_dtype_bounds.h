// How far prefill logits may move when the KV cache is narrowed from fp32 (the worst relative L2
// error over a fixture's prompts): about twice the worst measured on the fixtures
// (docs/numerics.md, "KV cache dtype"). The CPU tests hold each dtype to it against the fp32
// cache and against transformers; the CUDA tests hold the GPU to it against the CPU backend at the
// same dtype.
#pragma once

#include "kernels/dtype.h"

namespace saker::test {

constexpr double kv_logit_bound(DType t) {
  switch (t) {
    case DType::BF16:
      return 1.5e-2;
    case DType::F16:
      return 1.5e-3;  // 3 more mantissa bits than bf16: about 8x less error
    case DType::I8:
      return 3e-2;
    case DType::F8E4M3:
      return 2e-1;
    case DType::F32:
      break;
  }
  return 2e-4;  // fp32: the exactness bound against transformers
}

}  // namespace saker::test
