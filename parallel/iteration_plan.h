// The one message rank 0 sends every rank each iteration: what to run, where its KV lives, and
// when to stop. Ranks > 0 hold no scheduling state; everything they do comes from this.
//
// Wire format (little-endian), version 1:
//   header   : magic "SKPL" | u16 version | u16 flags (bit 0: stop, bit 1: a draft-model step,
//              bit 2: a heartbeat)
//              | u32 payload bytes | u64 iteration
//   sequences: u32 count, then per sequence:
//              u64 id | i32 start_pos | u32 flags (bit 0: all logits) | u32 n_tokens | u32 n_blocks
//              | i32 tokens[n_tokens] | i32 blocks[n_blocks]
//   freed    : u32 count | u64 ids[count]
// Decoding checks every length against the bytes left and the limits below, and rejects trailing
// bytes: a malformed plan is an error with a message, never undefined behaviour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

namespace saker {

class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PlanSequence {
  std::uint64_t id = 0;
  std::int32_t start_pos = 0;
  bool all_logits = false;
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> block_table;
  bool operator==(const PlanSequence&) const = default;
};

struct IterationPlan {
  std::uint64_t iteration = 0;
  bool stop = false;
  // Speculative decoding: the step runs the draft model (and its KV pool), not the target.
  bool draft = false;
  // A no-op plan rank 0 sends while serving and idle: every rank answers with a barrier, so a lost
  // peer is noticed in seconds on both sides (docs/parallel.md).
  bool heartbeat = false;
  std::vector<PlanSequence> sequences;
  std::vector<std::uint64_t> freed;  // sequences whose KV blocks are released
  bool operator==(const IterationPlan&) const = default;
};

struct PlanLimits {
  std::uint32_t max_sequences = 1 << 16;
  std::uint32_t max_tokens = 1 << 20;  // per sequence
  std::uint32_t max_blocks = 1 << 20;  // per sequence
};

constexpr std::uint16_t kPlanVersion = 1;

// Appends nothing: `out` is cleared and refilled (its capacity is reused between iterations).
void encode_plan(const IterationPlan& plan, std::vector<std::byte>& out);
IterationPlan decode_plan(std::span<const std::byte> bytes, const PlanLimits& limits = {});
// The same into `out`, reusing its vectors' capacity (a worker decodes one plan per step).
void decode_plan(std::span<const std::byte> bytes, IterationPlan& out,
                 const PlanLimits& limits = {});

}  // namespace saker
