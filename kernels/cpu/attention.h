// Causal attention for one token over the paged KV cache, for query heads that share a KV head.
//
// Every ISA computes each (token, head) in one fixed order, so all give the same bits and a
// head's output does not depend on which other heads, tokens or threads share the call:
// - q.k: 16 lane sums over d mod 16 (the last 16 zero-padded), each an FMA chain in d order,
//   then the tree 16->8->4->2->1 (lane l += lane l + w for w = 8, 4, 2, 1);
// - softmax: max and denominator over 16 lanes of j mod 16, each in j order, then the same
//   tree; exp is vm::exp_nonpos;
// - p.V: for each d, an FMA chain over keys in order.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

namespace saker::cpu {

// The most query heads one call takes (its scratch holds a score row per head).
inline constexpr std::int64_t kAttentionMaxHeads = 8;

// Floats of scratch attention_heads needs for positions below max_context.
std::int64_t attention_scratch_floats(std::int64_t max_context);

// Computes out[t, h] for query heads h in [head_begin, head_end), at most kAttentionMaxHeads of
// one KV group, reading each of their keys and values once.
void attention_heads(Isa isa, const float* qkv, std::span<const TokenPlace> places,
                     const AttentionShape& s, const KvLayer& kv, std::int64_t t,
                     std::int64_t head_begin, std::int64_t head_end, float* scratch, float* out);

}  // namespace saker::cpu
