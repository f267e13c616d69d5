// Which part of every weight each tensor-parallel rank owns (docs/falcon.md section 3). The one
// place where shard arithmetic lives: the loader, the KV pool and `saker info --tp` all read it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/falcon/config.h"

namespace saker {

// A half-open range [begin, end).
struct Range {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

struct RankShard {
  int rank = 0;
  Range heads;      // global query heads, contiguous
  Range kv_groups;  // global KV heads (groups) this rank holds; replicated when kv < tp
  Range ffn;        // rows of dense_h_to_4h = columns of dense_4h_to_h
  Range vocab;      // rows of the embedding table and of lm_head
  // Rows of the fused query_key_value weight this rank reads, in its local order
  // (per local group: its query heads, then the group's key, then its value).
  std::vector<Range> qkv_rows;
  bool adds_row_parallel_bias = false;  // dense / dense_4h_to_h biases are added by one rank

  std::int64_t local_heads() const { return heads.size(); }
  std::int64_t local_kv_heads() const { return kv_groups.size(); }
};

class ShardPlan {
 public:
  // Throws ConfigError, naming the numbers, when the model cannot be split over tp ranks.
  ShardPlan(const FalconConfig& c, int tp);

  int tp() const { return tp_; }
  const RankShard& rank(int r) const { return ranks_.at(static_cast<std::size_t>(r)); }
  const std::vector<RankShard>& ranks() const { return ranks_; }
  bool kv_replicated() const { return kv_replicated_; }

  // Elements of the checkpoint tensor `name` (shape `shape`) that rank r reads.
  std::int64_t elements(int r, const std::string& name,
                        const std::vector<std::int64_t>& shape) const;

 private:
  const FalconConfig& config_;
  int tp_;
  bool kv_replicated_ = false;
  std::vector<RankShard> ranks_;
};

// Splits [0, n) into `parts` contiguous ranges whose sizes differ by at most one (larger first).
Range even_split(std::int64_t n, int parts, int index);

}  // namespace saker
