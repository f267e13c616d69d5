#include "kernels/cpu/attention.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/ops.h"

namespace saker::cpu {

void attention_one(const float* qkv, std::span<const TokenPlace> places, const AttentionShape& s,
                   const KvLayer& kv, std::int64_t t, std::int64_t head, float* scores,
                   float* out) {
  const QkvLayout L(s);
  const std::int64_t hd = s.head_dim;
  const std::int64_t group = head / L.group_size;
  const float* q = qkv + t * s.kv_heads * L.group_stride + L.q(head);
  const TokenPlace& place = places[t];
  const std::int64_t n_keys = static_cast<std::int64_t>(place.pos) + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float slope = s.alibi_slopes ? s.alibi_slopes[head] : 0.0f;

  float max_score = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < n_keys; ++j) {
    const float* k = kv.k + (kv_slot(place, j, kv.block_size) * kv.kv_heads + group) * hd;
    float dot = 0.0f;
    for (std::int64_t d = 0; d < hd; ++d) dot += q[d] * k[d];
    float score = dot * scale;
    // transformers adds bf16(bf16(slope) * key position) / sqrt(head_dim) to the scaled scores.
    if (s.alibi_slopes) score += round_to_bf16(slope * static_cast<float>(j)) * scale;
    scores[j] = score;
    max_score = std::max(max_score, score);
  }
  float denom = 0.0f;
  for (std::int64_t j = 0; j < n_keys; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    denom += scores[j];
  }
  const float inv = 1.0f / denom;
  float* o = out + (t * s.heads + head) * hd;
  for (std::int64_t d = 0; d < hd; ++d) o[d] = 0.0f;
  for (std::int64_t j = 0; j < n_keys; ++j) {
    const float p = scores[j] * inv;
    const float* v = kv.v + (kv_slot(place, j, kv.block_size) * kv.kv_heads + group) * hd;
    for (std::int64_t d = 0; d < hd; ++d) o[d] += p * v[d];
  }
}

}  // namespace saker::cpu
