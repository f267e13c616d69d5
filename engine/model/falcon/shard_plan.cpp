#include "engine/model/falcon/shard_plan.h"

namespace saker {

Range even_split(std::int64_t n, int parts, int index) {
  const std::int64_t base = n / parts, extra = n % parts;
  const std::int64_t begin = index * base + std::min<std::int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

ShardPlan::ShardPlan(const FalconConfig& c, int tp) : config_(c), tp_(tp) {
  if (tp < 1)
    throw ConfigError("tensor-parallel degree must be at least 1, got " + std::to_string(tp));
  const std::int64_t kv = c.kv_heads, r = c.group_size(), hd = c.head_dim;
  const std::string what = "cannot split " + std::to_string(c.heads) + " query heads over " +
                           std::to_string(kv) + " KV heads across tp = " + std::to_string(tp) +
                           ": ";
  // More KV heads than ranks: each rank takes whole groups, as evenly as they split (rw-style
  // models with 6 heads run at tp 4 as 2 + 2 + 1 + 1). Fewer: each group is replicated over an
  // equal number of ranks.
  if (kv < tp && tp % kv != 0)
    throw ConfigError(what + "tp must be a multiple of the KV heads when it exceeds them");
  kv_replicated_ = kv < tp;
  // With replicated KV heads, the ranks sharing a group split its query heads as evenly as they
  // can (falcon-7b at tp 2: 36 + 35), which each rank needs at least one of.
  const int ranks_per_group = kv_replicated_ ? static_cast<int>(tp / kv) : 1;
  if (r < ranks_per_group)
    throw ConfigError(what + "each of the " + std::to_string(ranks_per_group) +
                      " ranks sharing a KV head needs at least one of its " + std::to_string(r) +
                      " query heads");
  if (c.ffn < tp || c.vocab_size < tp)
    throw ConfigError("cannot split ffn " + std::to_string(c.ffn) + " and vocabulary " +
                      std::to_string(c.vocab_size) + " across tp = " + std::to_string(tp));

  for (int t = 0; t < tp; ++t) {
    RankShard s;
    s.rank = t;
    if (kv_replicated_) {
      const std::int64_t g = t / ranks_per_group;
      const Range within = even_split(r, ranks_per_group, t % ranks_per_group);
      s.kv_groups = {g, g + 1};
      s.heads = {g * r + within.begin, g * r + within.end};
    } else {
      s.kv_groups = even_split(kv, tp, t);
      s.heads = {s.kv_groups.begin * r, s.kv_groups.end * r};
    }
    // Fused rows: group g occupies rows [g (r + 2) hd, (g + 1)(r + 2) hd): r query heads, k, v.
    for (std::int64_t g = s.kv_groups.begin; g < s.kv_groups.end; ++g) {
      const std::int64_t base = g * (r + 2) * hd;
      const std::int64_t q0 = std::max(s.heads.begin, g * r) - g * r;
      const std::int64_t q1 = std::min(s.heads.end, (g + 1) * r) - g * r;
      s.qkv_rows.push_back({base + q0 * hd, base + q1 * hd});
      s.qkv_rows.push_back({base + r * hd, base + (r + 2) * hd});
    }
    s.ffn = even_split(c.ffn, tp, t);
    s.vocab = even_split(c.vocab_size, tp, t);
    s.adds_row_parallel_bias = t == 0;
    ranks_.push_back(std::move(s));
  }
}

std::int64_t ShardPlan::elements(int r, const std::string& name,
                                 const std::vector<std::int64_t>& shape) const {
  const RankShard& s = rank(r);
  std::int64_t total = 1;
  for (auto d : shape) total *= d;
  const auto ends_with = [&](const char* suffix) {
    const std::string sfx = suffix;
    return name.size() >= sfx.size() &&
           name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0;
  };
  const std::int64_t cols = shape.size() == 2 ? shape[1] : 1;
  if (ends_with("query_key_value.weight") || ends_with("query_key_value.bias")) {
    std::int64_t rows = 0;
    for (const Range& q : s.qkv_rows) rows += q.size();
    return rows * cols;
  }
  if (ends_with("dense_h_to_4h.weight") || ends_with("dense_h_to_4h.bias"))
    return s.ffn.size() * cols;
  if (ends_with("dense_4h_to_h.weight")) return shape[0] * s.ffn.size();
  if (ends_with("self_attention.dense.weight")) return shape[0] * s.heads.size() * config_.head_dim;
  if (ends_with("dense_4h_to_h.bias") || ends_with("self_attention.dense.bias"))
    return s.adds_row_parallel_bias ? total : 0;
  if (name == "transformer.word_embeddings.weight" || name == "lm_head.weight")
    return s.vocab.size() * cols;
  return total;  // LayerNorms: replicated
}

}  // namespace saker
