// Weight-streaming matrix products on packed weights: y[t, r] = dot(w[r, :], x[t, :]) (+ bias[r]).
//
// Packed form (WeightLayout::kPanels16): rows are grouped in panels of 16 (the last one padded
// with zero rows), and panels in groups of 4 (the last group may hold fewer). A group stores its
// elements k-major, [cols][panels in the group][16], so one vector load holds one column of 16
// rows and decode reads each group as one sequential stream (64 rows, 128 bytes of bf16 per k).
// bf16 interleaves the panels of a group two by two (first panel's row i, then the second's), so
// that widening to fp32 takes a shift and a mask rather than shuffles (linear.cpp).
// The same code does decode (a few tokens: bandwidth-bound) and prefill (many: FMA-bound,
// tokens blocked in registers so each loaded weight feeds up to 6 tokens).
//
// Every output is one fp32 accumulator taking x[t, k] * w[r, k] by fused multiply-add for
// k = 0, 1, ..., cols - 1 in order, then times the row's int8 scale, then plus the bias. That is
// the order whatever the number of tokens, their blocking, the cache blocking of k, the thread
// or the instruction set, so batches are bit-identical to single tokens (batch invariance) and
// the AVX-512, AVX2 and portable paths agree bit for bit. A row-major weight gets the same
// arithmetic from a scalar loop (tests and callers that never uploaded the weight).
//
// bf16 dot products (WeightLayout::kPanels16Pairs, `--cpu-matmul bf16`): the same panels and
// groups, but a k-row of a panel holds two columns, [cols / 2][16][2], and the inputs are rounded
// to bf16 once per call (to_bf16_pairs) so that vdpbf16ps multiplies 32 pairs per instruction:
// twice the fp32 FMA rate. Each output is one fp32 accumulator taking, for each pair of columns
// in order, fma(w[r, 2i + 1], x[t, 2i + 1]) and then fma(w[r, 2i], x[t, 2i]) (the instruction's
// order, checked against it on Zen 4), with bf16 subnormals read as zero and fp32 subnormal sums
// flushed to zero, as the instruction does. The order again does not depend on the number of
// tokens, so batch invariance holds; the scalar path (tile_bf16_dot_portable) follows it bit for
// bit where the CPU lacks AVX512_BF16.
//
// int8 dot products (WeightLayout::kPanels16Quads, `--dtype w8a8`): int8 weight codes four
// columns to a 32-bit lane, [cols / 4][16][4], and each token's inputs quantized to unsigned
// bytes once per call (to_int8_quads), so that vpdpbusd multiplies 64 pairs per instruction
// (VNNI). The sums are exact 32-bit integers, so their order is free and batch invariance holds
// trivially; partial sums wait in y as integer bits between k blocks. The epilogue
// (sum - 128 * row_sum) * x_scale * w_scale + bias is the same fp32 arithmetic on every path.
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

// Units of k of the kPanels16Pairs form: pairs of columns, the last one padded with a zero.
inline std::int64_t pair_count(std::int64_t cols) {
  return (cols + 1) / 2;
}

// Units of k of the kPanels16Quads form: quads of columns, the last one padded with zeros.
inline std::int64_t quad_count(std::int64_t cols) {
  return (cols + 3) / 4;
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

// Packs groups [group_begin, group_end) of the row-major bf16 `host` into `dst` in the
// kPanels16Pairs form (packed_bytes(BF16, rows, 2 * pair_count(cols)) bytes); subnormal weights
// become zero, as vdpbf16ps would read them.
void pack_bf16_pairs(const Weight& host, void* dst, std::int64_t group_begin,
                     std::int64_t group_end);

// Packs groups [group_begin, group_end) of `host` into `dst` in the kPanels16Quads form
// (packed_bytes(I8, rows, 4 * quad_count(cols)) bytes), quantized as pack_panels quantizes to I8;
// scales and row_sums (panel_count * 16 each) receive each row's scale and sum of codes.
void pack_int8_quads(const Weight& host, void* dst, float* scales, std::int32_t* row_sums,
                     std::int64_t group_begin, std::int64_t group_end);

// x [n, cols] quantized per token for the kPanels16Quads kernels: scale[t] = max |x[t, :]| / 127
// (0 for an all-zero row), code = round-to-nearest-even(x * (127 / max)) + 128, an unsigned byte
// in [1, 255]; out [n, quad_count(cols)] holds four codes per float (column 4i in the low byte),
// the padding codes 128 (zero).
void to_int8_quads(const float* x, std::int64_t n, std::int64_t cols, float* out, float* scale);

// x [n, cols] rounded to bf16 (nearest even; subnormals to zero) in pairs of columns:
// out [n, pair_count(cols)], each float holding two bf16 (column 2i in the low half), the last
// pair padded with zero. The input linear_panels takes for a kPanels16Pairs weight.
void to_bf16_pairs(const float* x, std::int64_t n, std::int64_t cols, float* out);

// Output rows of groups [group_begin, group_end) of y [n, w.rows] for all n tokens. `prefetch`
// adds software prefetches of the weights, for weights on 4 KiB pages (huge_pages_available).
// For a kPanels16Pairs weight, x is to_bf16_pairs of the input; for kPanels16Quads,
// to_int8_quads of it with x_scales its scales (null otherwise).
// x_packed: the inputs as pack_inputs laid them out, or null to copy them here per slice.
void linear_panels(Isa isa, const float* x, std::int64_t n, const Weight& w, const float* bias,
                   float* y, std::int64_t group_begin, std::int64_t group_end, bool prefetch,
                   const float* x_scales = nullptr, const float* x_packed = nullptr);

// More than 4 tokens read their inputs k-major, a block of k at a time (linear.cpp); a call
// copies them so once for all its threads with pack_inputs, k blocks [block_begin, block_end)
// of input_blocks (0 when the call reads x in place), into n * (units of k) floats.
std::int64_t input_blocks(Isa isa, const Weight& w, std::int64_t n);
void pack_inputs(Isa isa, const Weight& w, const float* x, std::int64_t n, float* out,
                 std::int64_t block_begin, std::int64_t block_end);

// Output rows [row_begin, row_end) of a row-major weight: the same arithmetic, scalar.
void linear_rows_scalar(const float* x, std::int64_t n, const Weight& w, const float* bias,
                        float* y, std::int64_t row_begin, std::int64_t row_end);

// Element (r, k) of a weight in any layout, as fp32 (dequantized for I8).
float weight_element(const Weight& w, std::int64_t r, std::int64_t k);

}  // namespace saker::cpu
