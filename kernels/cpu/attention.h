// Causal attention for one (token, query head) pair over the paged KV cache.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/backend.h"

namespace saker::cpu {

// Computes the output of query head `head` for token `t` into out[t, head]; `scores` holds at
// least places[t].pos + 1 floats of scratch.
void attention_one(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                   const KvLayer& kv, std::int64_t t, std::int64_t head, float* scores, float* out);

}  // namespace saker::cpu
