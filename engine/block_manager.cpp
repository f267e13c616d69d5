#include "engine/block_manager.h"

#include <stdexcept>
#include <string>

namespace saker {

BlockManager::BlockManager(std::int32_t num_blocks, std::int32_t block_size)
    : block_size_(block_size) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("a KV pool needs a positive number of blocks and block size, got " +
                                std::to_string(num_blocks) + " blocks of " +
                                std::to_string(block_size));
  refs_.assign(static_cast<std::size_t>(num_blocks), 0);
  free_.reserve(static_cast<std::size_t>(num_blocks));
  // Block 0 on top: a fresh pool hands out blocks in order.
  for (std::int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::int32_t BlockManager::ref_count(std::int32_t block) const {
  return refs_.at(static_cast<std::size_t>(block));
}

std::int32_t BlockManager::blocks_for(std::int64_t tokens) const {
  return static_cast<std::int32_t>((tokens + block_size_ - 1) / block_size_);
}

bool BlockManager::ensure(BlockTable& table, std::int64_t tokens) {
  const std::int32_t need = blocks_for(tokens) - static_cast<std::int32_t>(table.size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (std::int32_t i = 0; i < need; ++i) {
    const std::int32_t b = free_.back();
    free_.pop_back();
    refs_[static_cast<std::size_t>(b)] = 1;
    table.push_back(b);
  }
  return true;
}

void BlockManager::release(BlockTable& table) {
  for (const std::int32_t b : table) {
    std::int32_t& r = refs_.at(static_cast<std::size_t>(b));
    if (r <= 0) throw std::logic_error("KV block " + std::to_string(b) + " released while free");
    if (--r == 0) free_.push_back(b);
  }
  table.clear();
}

void BlockManager::share_prefix(const BlockTable& src, std::int32_t n, BlockTable& dst) {
  if (n < 0 || n > static_cast<std::int32_t>(src.size()))
    throw std::out_of_range("cannot share " + std::to_string(n) + " blocks of a table of " +
                            std::to_string(src.size()));
  if (!dst.empty()) throw std::logic_error("a shared prefix must start an empty block table");
  for (std::int32_t i = 0; i < n; ++i) {
    ++refs_.at(static_cast<std::size_t>(src[static_cast<std::size_t>(i)]));
    dst.push_back(src[static_cast<std::size_t>(i)]);
  }
}

}  // namespace saker
