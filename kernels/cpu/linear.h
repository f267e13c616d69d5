// Weight-streaming matrix products: y[t, r] = dot(w[r, :], x[t, :]) (+ bias[r]).
//
// Every output element is reduced in one fixed order (16-wide blocks into two 8-lane FMA
// accumulators, then a fixed horizontal sum, then the ragged tail), whatever the number of tokens,
// the rows computed together or the thread that computes them. The AVX2 kernel and the portable
// kernel follow the same order with fused multiply-adds, so they agree bit for bit.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace saker::cpu {

enum class Isa { kPortable, kAvx2 };

// The best kernel this processor runs (AVX2 + FMA + F16C, else portable).
Isa detect_isa();

// Computes output rows [row_begin, row_end) of y [n, w.rows] for all n tokens.
void linear_rows(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                 float* y, std::int64_t row_begin, std::int64_t row_end);

}  // namespace saker::cpu
