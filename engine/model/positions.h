// Position encodings as tables the model uploads once: the rotary (cos, sin) table and the ALiBi
// slopes (docs/falcon.md section 2). Plain host arithmetic, the same for every backend.
#pragma once

#include <cstdint>
#include <vector>

namespace saker {

// Rotary table [positions][head_dim / 2] of (cos, sin), computed as transformers does in fp32:
// inv_freq[d] = 1 / theta^(2d / head_dim), angle = pos * inv_freq[d].
std::vector<float> rotary_table(float theta, std::int64_t head_dim, std::int64_t positions);

// ALiBi slopes of `heads` heads, rounded to bf16 as transformers' build_alibi_tensor does.
std::vector<float> alibi_slopes(std::int64_t heads);

}  // namespace saker
