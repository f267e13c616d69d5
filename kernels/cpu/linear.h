// Weight-streaming matrix products on packed weights: y[t, r] = dot(w[r, :], x[t, :]) (+ bias[r]).
//
// Packed form (WeightLayout::kPanels16): rows are grouped in panels of 16 (the last one padded
// with zero rows), and panels in groups of 4 (the last group may hold fewer). A group stores its
// elements k-major, [cols][panels in the group][16], so one vector load holds one column of 16
// rows and decode reads each group as one sequential stream (64 rows, 128 bytes of bf16 per k).
// bf16 interleaves the panels of a group two by two (first panel's row i, then the second's), so
// that widening to fp32 takes a shift and a mask rather than shuffles (linear.cpp).
// The same code does decode (a few tokens: bandwidth-bound) and prefill (many: FMA-bound,
// tokens blocked in registers so each loaded weight feeds up to 12 tokens).
//
// Every output is one fp32 accumulator taking x[t, k] * w[r, k] by fused multiply-add for
// k = 0, 1, ..., cols - 1 in order, then times the row's int8 scale, then plus the bias. That is
// the order whatever the number of tokens, their blocking, the cache blocking of k, the thread
// or the instruction set, so batches are bit-identical to single tokens (batch invariance) and
// the AVX-512, AVX2 and portable paths agree bit for bit. A row-major weight gets the same
// arithmetic from a scalar loop (tests and callers that never uploaded the weight).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

namespace saker::cpu {

constexpr std::int64_t kPanelRows = 16;

constexpr std::int64_t kGroupPanels = 4;
constexpr std::int64_t kGroupRows = kPanelRows * kGroupPanels;

inline std::int64_t panel_count(std::int64_t rows) {
  return (rows + kPanelRows - 1) / kPanelRows;
}
inline std::int64_t group_count(std::int64_t rows) {
  return (rows + kGroupRows - 1) / kGroupRows;
}

// Bytes of the packed form of [rows, cols] in `dtype` (padded rows included).
inline std::size_t packed_bytes(DType dtype, std::int64_t rows, std::int64_t cols) {
  return static_cast<std::size_t>(panel_count(rows) * kPanelRows * cols) * dtype_size(dtype);
}

// Packs groups [group_begin, group_end) of the row-major `host` into `dst` (packed_bytes of
// `dtype`). `dtype` is host.dtype, or I8 to quantize: each row's scale is max |w| / 127 and
// q = round-to-nearest-even(w / scale); `scales` then receives panel_count * 16 floats.
void pack_panels(const Weight& host, DType dtype, void* dst, float* scales,
                 std::int64_t group_begin, std::int64_t group_end);

// Output rows of groups [group_begin, group_end) of y [n, w.rows] for all n tokens. `prefetch`
// adds software prefetches of the weights, for weights on 4 KiB pages (huge_pages_available).
void linear_panels(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y, std::int64_t group_begin, std::int64_t group_end, bool prefetch);

// Output rows [row_begin, row_end) of a row-major weight: the same arithmetic, scalar.
void linear_rows_scalar(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y, std::int64_t row_begin, std::int64_t row_end);

// Element (r, k) of a weight in any layout, as fp32 (dequantized for I8).
float weight_element(const Weight& w, std::int64_t r, std::int64_t k);

}  // namespace saker::cpu
