// AMX (Sapphire Rapids and newer) for bf16 dot products on kPanels16Pairs weights: calls of 16
// tokens or more when batch invariance is off (linear_amx.cpp says why).
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/linear.h"

namespace saker::cpu {

// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel grants this process the tile state.
bool amx_available();

// Output rows of groups [group_begin, group_end) of y [n, w.rows], as linear_panels for a
// kPanels16Pairs weight (x: to_bf16_pairs of the input, row-major), with AMX tiles: the same
// products, summed in the tiles' order. Only where amx_available().
void linear_pairs_amx(const float* x, std::int64_t n, const Weight& w, const float* bias, float* y,
                      std::int64_t group_begin, std::int64_t group_end);

}  // namespace saker::cpu
