// Shard arithmetic on the real Falcon configs and the fixtures' odd shapes.
#include <catch2/catch.hpp>

#include "engine/model/falcon/config.h"
#include "engine/model/falcon/shard_plan.h"

using namespace saker;

namespace {

const std::filesystem::path kShared = SAKER_SHARED_DIR;

// Every rank's elements of every tensor, summed, against the tensor's size.
void check_coverage(const FalconConfig& c, int tp) {
  const ShardPlan plan(c, tp);
  for (const auto& t : expected_tensors(c, true)) {
    std::int64_t total = 1, sum = 0;
    for (auto d : t.shape) total *= d;
    for (int r = 0; r < tp; ++r) sum += plan.elements(r, t.name, t.shape);
    INFO(t.name << " at tp " << tp);
    if (t.name.find("layernorm") != std::string::npos || t.name.find("ln_") != std::string::npos) {
      CHECK(sum == total * tp);  // replicated
    } else if (t.name.find("query_key_value") != std::string::npos && plan.kv_replicated()) {
      // Each of the tp / kv ranks of a group reads the group's key and value rows.
      const std::int64_t per_row = t.shape.size() == 2 ? t.shape[1] : 1;
      CHECK(sum == total + (tp - c.kv_heads) * 2 * c.head_dim * per_row);
    } else {
      CHECK(sum == total);  // split exactly once
    }
  }
}

}  // namespace

TEST_CASE("even_split sizes differ by at most one and tile the range", "[shard]") {
  for (std::int64_t n : {1, 7, 71, 65024})
    for (int parts : {1, 2, 3, 4, 8}) {
      if (n < parts) continue;
      std::int64_t next = 0;
      for (int i = 0; i < parts; ++i) {
        const Range r = even_split(n, parts, i);
        CHECK(r.begin == next);
        CHECK((r.size() == n / parts || r.size() == n / parts + 1));
        next = r.end;
      }
      CHECK(next == n);
    }
}

TEST_CASE("falcon-40b at tp 8: one KV group and 16 query heads per rank", "[shard]") {
  const FalconConfig c = load_config(kShared / "models/falcon-40b");
  const ShardPlan plan(c, 8);
  CHECK_FALSE(plan.kv_replicated());
  for (int r = 0; r < 8; ++r) {
    const RankShard& s = plan.rank(r);
    CHECK(s.heads == Range{16 * r, 16 * r + 16});
    CHECK(s.kv_groups == Range{r, r + 1});
    CHECK(s.ffn.size() == 32768 / 8);
    CHECK(s.vocab.size() == 65024 / 8);
    // Group r's rows: 16 query heads then k and v, contiguous.
    REQUIRE(s.qkv_rows.size() == 2);
    CHECK(s.qkv_rows[0] == Range{r * 18 * 64, r * 18 * 64 + 16 * 64});
    CHECK(s.qkv_rows[1] == Range{r * 18 * 64 + 16 * 64, (r + 1) * 18 * 64});
  }
  for (int tp : {1, 2, 4, 8}) check_coverage(c, tp);
}

TEST_CASE("falcon-7b at tp 2 and 4: 71 heads split unevenly, the KV head replicated", "[shard]") {
  const FalconConfig c = load_config(kShared / "models/falcon-7b-instruct");
  const ShardPlan two(c, 2);
  CHECK(two.kv_replicated());
  CHECK(two.rank(0).heads == Range{0, 36});
  CHECK(two.rank(1).heads == Range{36, 71});
  for (int r = 0; r < 2; ++r) CHECK(two.rank(r).kv_groups == Range{0, 1});
  CHECK(two.rank(1).qkv_rows[0] == Range{36 * 64, 71 * 64});
  CHECK(two.rank(1).qkv_rows[1] == Range{71 * 64, 73 * 64});
  const ShardPlan four(c, 4);
  CHECK(four.rank(3).heads.size() == 17);
  CHECK(four.rank(0).heads.size() == 18);
  for (int tp : {1, 2, 4, 8}) check_coverage(c, tp);
}

TEST_CASE("grouped KV heads replicated when tp exceeds them", "[shard]") {
  FalconConfig c;
  c.model_type = "falcon";
  c.vocab_size = 384;
  c.hidden = 64;
  c.layers = 2;
  c.heads = 8;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.ffn = 256;
  c.new_arch = true;
  c.block = BlockKind::kParallelTwoNorm;
  const ShardPlan plan(c, 4);
  CHECK(plan.kv_replicated());
  CHECK(plan.rank(0).kv_groups == Range{0, 1});
  CHECK(plan.rank(1).kv_groups == Range{0, 1});
  CHECK(plan.rank(2).kv_groups == Range{1, 2});
  CHECK(plan.rank(2).heads == Range{4, 6});
  check_coverage(c, 4);
}

TEST_CASE("KV groups that tp does not divide are split as evenly as they go", "[shard]") {
  const FalconConfig c40 = load_config(kShared / "models/falcon-40b");
  const ShardPlan plan(c40, 3);  // 8 groups: 3 + 3 + 2
  CHECK(plan.rank(0).kv_groups == Range{0, 3});
  CHECK(plan.rank(2).kv_groups == Range{6, 8});
  CHECK(plan.rank(2).heads == Range{96, 128});
  check_coverage(c40, 3);
}

TEST_CASE("impossible layouts are refused with the numbers", "[shard]") {
  const FalconConfig c40 = load_config(kShared / "models/falcon-40b");
  CHECK_THROWS_WITH(ShardPlan(c40, 0), Catch::Contains("at least 1"));
  FalconConfig c = c40;
  c.kv_heads = 2;
  CHECK_THROWS_WITH(ShardPlan(c, 3), Catch::Contains("multiple of the KV heads") &&
                                         Catch::Contains("across tp = 3"));
  c.heads = 2;
  c.kv_heads = 1;
  CHECK_THROWS_WITH(ShardPlan(c, 4), Catch::Contains("needs at least one of its 2 query heads"));
}
