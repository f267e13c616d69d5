// The iteration plan's wire format (parallel/iteration_plan.cpp), which every rank > 0 decodes
// each step. The first byte picks the mode:
//   even: the rest is a message. decode_plan either throws PlanError or returns a plan whose
//         encoding is exactly those bytes (the format has one encoding per plan).
//   odd:  the rest describes a plan; decode(encode(plan)) must be the plan.
// Both also decode with small limits, and into a reused plan as the workers do.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "parallel/iteration_plan.h"

using namespace saker;

namespace {

// Reads values off the input, zeros once it runs out.
class Source {
 public:
  Source(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  template <typename T>
  T get() {
    T v{};
    const std::size_t k = std::min(sizeof(T), n_ - at_);
    std::memcpy(&v, d_ + at_, k);
    at_ += k;
    return v;
  }
  bool empty() const { return at_ == n_; }

 private:
  const std::uint8_t* d_;
  std::size_t n_, at_ = 0;
};

IterationPlan make_plan(Source& in) {
  IterationPlan p;
  const auto flags = in.get<std::uint8_t>();
  p.stop = flags & 1;
  p.draft = flags & 2;
  p.heartbeat = flags & 4;
  p.iteration = in.get<std::uint64_t>();
  for (int n = in.get<std::uint8_t>() % 8; n > 0 && !in.empty(); --n) {
    PlanSequence s;
    s.id = in.get<std::uint64_t>();
    s.start_pos = in.get<std::int32_t>() & 0x7FFFFFFF;
    s.all_logits = in.get<std::uint8_t>() & 1;
    for (int t = in.get<std::uint8_t>() % 32; t > 0; --t)
      s.tokens.push_back(in.get<std::int32_t>());
    for (int b = in.get<std::uint8_t>() % 16; b > 0; --b)
      s.block_table.push_back(in.get<std::int32_t>());
    p.sequences.push_back(std::move(s));
  }
  for (int n = in.get<std::uint8_t>() % 8; n > 0; --n) p.freed.push_back(in.get<std::uint64_t>());
  return p;
}

// Decoding with small limits agrees with the default ones or refuses.
void decode_small(std::span<const std::byte> bytes, const IterationPlan& want) {
  static IterationPlan reused;  // keeps its capacity, and whatever a failed decode left
  try {
    decode_plan(bytes, reused, PlanLimits{4, 16, 8});
    if (!(reused == want)) std::abort();
  } catch (const PlanError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::vector<std::byte> bytes;
  if (data[0] % 2 == 0) {
    const std::span<const std::byte> msg(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    IterationPlan plan;
    try {
      plan = decode_plan(msg);
    } catch (const PlanError&) {
      return 0;
    }
    encode_plan(plan, bytes);
    if (bytes.size() != msg.size() || std::memcmp(bytes.data(), msg.data(), msg.size()) != 0)
      std::abort();
    decode_small(msg, plan);
  } else {
    Source in(data + 1, size - 1);
    const IterationPlan plan = make_plan(in);
    encode_plan(plan, bytes);
    if (!(decode_plan(bytes) == plan)) std::abort();
    decode_small(bytes, plan);
  }
  return 0;
}
