// The KV block manager's invariants under random workloads: every block is either free or
// referenced, never both; failed allocations change nothing; everything returns when released.
#include <algorithm>
#include <random>

#include <catch2/catch.hpp>

#include "engine/block_manager.h"

using namespace saker;

namespace {

// Recounts references from the live tables and checks them against the manager.
void check_consistent(const BlockManager& m, const std::vector<BlockTable>& tables) {
  std::vector<std::int32_t> refs(static_cast<std::size_t>(m.num_blocks()), 0);
  for (const auto& t : tables)
    for (auto b : t) ++refs[static_cast<std::size_t>(b)];
  std::int32_t used = 0;
  for (std::int32_t b = 0; b < m.num_blocks(); ++b) {
    REQUIRE(m.ref_count(b) == refs[static_cast<std::size_t>(b)]);
    used += refs[static_cast<std::size_t>(b)] > 0;
  }
  REQUIRE(m.used_blocks() == used);
  REQUIRE(m.free_blocks() + m.used_blocks() == m.num_blocks());
}

}  // namespace

TEST_CASE("blocks are handed out in order and cover the positions asked for", "[blocks]") {
  BlockManager m(8, 16);
  BlockTable t;
  REQUIRE(m.ensure(t, 1));
  CHECK(t == BlockTable{0});
  REQUIRE(m.ensure(t, 16));  // still one block
  CHECK(t.size() == 1);
  REQUIRE(m.ensure(t, 17));
  CHECK(t == BlockTable{0, 1});
  CHECK(m.blocks_for(0) == 0);
  CHECK(m.blocks_for(33) == 3);
  m.release(t);
  CHECK(t.empty());
  CHECK(m.free_blocks() == 8);
}

TEST_CASE("an allocation the pool cannot meet changes nothing", "[blocks]") {
  BlockManager m(4, 4);
  BlockTable a, b;
  REQUIRE(m.ensure(a, 12));  // 3 blocks
  const BlockTable before = b;
  CHECK_FALSE(m.ensure(b, 8));  // needs 2, 1 free
  CHECK(b == before);
  CHECK(m.free_blocks() == 1);
  CHECK(m.ensure(b, 4));
  CHECK(m.free_blocks() == 0);
}

TEST_CASE("shared prefixes are counted and freed with their last reference", "[blocks]") {
  BlockManager m(6, 2);
  BlockTable a, b;
  REQUIRE(m.ensure(a, 6));  // blocks 0, 1, 2
  m.share_prefix(a, 2, b);
  CHECK(m.ref_count(0) == 2);
  CHECK(m.ref_count(2) == 1);
  REQUIRE(m.ensure(b, 6));  // b's own third block
  CHECK(b[2] != a[2]);
  m.release(a);
  CHECK(m.ref_count(0) == 1);
  CHECK(m.free_blocks() == 6 - 3);  // b still holds 0, 1 and its own
  m.release(b);
  CHECK(m.free_blocks() == 6);
  BlockTable c{0};
  CHECK_THROWS_WITH(m.release(c), Catch::Contains("released while free"));
  CHECK_THROWS_WITH(BlockManager(0, 16), Catch::Contains("0 blocks of 16"));
}

TEST_CASE("random workloads keep the pool consistent and return every block", "[blocks]") {
  std::mt19937 rng(17);
  BlockManager m(64, 4);
  std::vector<BlockTable> tables(12);
  std::vector<std::int64_t> lengths(12, 0);
  for (int step = 0; step < 5000; ++step) {
    const auto i = static_cast<std::size_t>(rng() % tables.size());
    switch (rng() % 4) {
      case 0:
      case 1: {  // grow (decode or a prefill chunk)
        const std::int64_t want = lengths[i] + 1 + static_cast<std::int64_t>(rng() % 9);
        if (m.ensure(tables[i], want)) lengths[i] = want;
        break;
      }
      case 2:  // finish, cancel or preempt
        m.release(tables[i]);
        lengths[i] = 0;
        break;
      case 3: {  // start as a fork of another sequence's full blocks
        const auto j = static_cast<std::size_t>(rng() % tables.size());
        if (i == j || !tables[i].empty()) break;
        const auto full = static_cast<std::int32_t>(lengths[j] / m.block_size());
        m.share_prefix(tables[j], full, tables[i]);
        lengths[i] = static_cast<std::int64_t>(full) * m.block_size();
        break;
      }
    }
    check_consistent(m, tables);
  }
  for (auto& t : tables) m.release(t);
  CHECK(m.free_blocks() == m.num_blocks());
}
