#include "parallel/iteration_plan.h"

#include <bit>
#include <cstring>
#include <string>
#include <type_traits>

namespace saker {
namespace {

static_assert(std::endian::native == std::endian::little, "the plan format is little-endian");

constexpr char kMagic[4] = {'S', 'K', 'P', 'L'};
constexpr std::size_t kHeaderBytes = 4 + 2 + 2 + 4 + 8;

template <typename T>
void put(std::vector<std::byte>& out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

template <typename T>
void put_array(std::vector<std::byte>& out, const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const std::byte*>(v.data());
  out.insert(out.end(), p, p + v.size() * sizeof(T));
}

// Reads fields off the front of a byte span, each read checked against what is left.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> b) : b_(b) {}
  template <typename T>
  T get(const char* field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, b_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  template <typename T>
  void get_array(std::vector<T>& v, std::uint32_t n, const char* field) {
    need(static_cast<std::size_t>(n) * sizeof(T), field);
    v.resize(n);
    // An empty vector's data() may be null, which memcpy must not get even for 0 bytes.
    if (n) std::memcpy(v.data(), b_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
  }
  std::size_t left() const { return b_.size() - at_; }

 private:
  void need(std::size_t n, const char* field) const {
    if (left() < n)
      throw PlanError("iteration plan truncated: " + std::string(field) + " needs " +
                      std::to_string(n) + " bytes at offset " + std::to_string(at_) + ", " +
                      std::to_string(left()) + " left");
  }
  std::span<const std::byte> b_;
  std::size_t at_ = 0;
};

void check_limit(std::uint32_t n, std::uint32_t limit, const char* what) {
  if (n > limit)
    throw PlanError("iteration plan has " + std::to_string(n) + " " + what +
                    ", over the limit of " + std::to_string(limit));
}

}  // namespace

void encode_plan(const IterationPlan& plan, std::vector<std::byte>& out) {
  out.clear();
  for (char c : kMagic) out.push_back(static_cast<std::byte>(c));
  put<std::uint16_t>(out, kPlanVersion);
  put<std::uint16_t>(out, static_cast<std::uint16_t>((plan.stop ? 1 : 0) | (plan.draft ? 2 : 0) |
                                                     (plan.heartbeat ? 4 : 0)));
  put<std::uint32_t>(out, 0);  // payload length, patched below
  put<std::uint64_t>(out, plan.iteration);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(plan.sequences.size()));
  for (const PlanSequence& s : plan.sequences) {
    put<std::uint64_t>(out, s.id);
    put<std::int32_t>(out, s.start_pos);
    put<std::uint32_t>(out, s.all_logits ? 1 : 0);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(s.tokens.size()));
    put<std::uint32_t>(out, static_cast<std::uint32_t>(s.block_table.size()));
    put_array(out, s.tokens);
    put_array(out, s.block_table);
  }
  put<std::uint32_t>(out, static_cast<std::uint32_t>(plan.freed.size()));
  put_array(out, plan.freed);
  const auto payload = static_cast<std::uint32_t>(out.size() - kHeaderBytes);
  std::memcpy(out.data() + 8, &payload, sizeof payload);
}

IterationPlan decode_plan(std::span<const std::byte> bytes, const PlanLimits& limits) {
  IterationPlan plan;
  decode_plan(bytes, plan, limits);
  return plan;
}

void decode_plan(std::span<const std::byte> bytes, IterationPlan& plan, const PlanLimits& limits) {
  if (bytes.size() < kHeaderBytes)
    throw PlanError("iteration plan truncated: " + std::to_string(bytes.size()) +
                    " bytes, shorter than its " + std::to_string(kHeaderBytes) + "-byte header");
  Reader in(bytes);
  char magic[4];
  for (char& c : magic) c = static_cast<char>(in.get<std::uint8_t>("magic"));
  if (std::memcmp(magic, kMagic, 4) != 0) throw PlanError("not an iteration plan (bad magic)");
  const auto version = in.get<std::uint16_t>("version");
  if (version != kPlanVersion)
    throw PlanError("iteration plan version " + std::to_string(version) +
                    " is not supported (this build speaks " + std::to_string(kPlanVersion) + ")");
  const auto flags = in.get<std::uint16_t>("flags");
  if (flags & ~7u) throw PlanError("iteration plan has unknown flags " + std::to_string(flags));
  const auto payload = in.get<std::uint32_t>("payload length");
  if (payload != bytes.size() - kHeaderBytes)
    throw PlanError("iteration plan says " + std::to_string(payload) +
                    " payload bytes but carries " + std::to_string(bytes.size() - kHeaderBytes));
  plan.stop = flags & 1u;
  plan.draft = (flags & 2u) != 0;
  plan.heartbeat = (flags & 4u) != 0;
  plan.iteration = in.get<std::uint64_t>("iteration");
  const auto n = in.get<std::uint32_t>("sequence count");
  check_limit(n, limits.max_sequences, "sequences");
  plan.sequences.resize(n);
  for (PlanSequence& s : plan.sequences) {
    s.id = in.get<std::uint64_t>("sequence id");
    s.start_pos = in.get<std::int32_t>("start position");
    if (s.start_pos < 0)
      throw PlanError("sequence " + std::to_string(s.id) + " has a negative start position");
    const auto sflags = in.get<std::uint32_t>("sequence flags");
    if (sflags & ~1u) throw PlanError("sequence " + std::to_string(s.id) + " has unknown flags");
    s.all_logits = sflags & 1u;
    const auto n_tokens = in.get<std::uint32_t>("token count");
    const auto n_blocks = in.get<std::uint32_t>("block count");
    check_limit(n_tokens, limits.max_tokens, "tokens in one sequence");
    check_limit(n_blocks, limits.max_blocks, "blocks in one sequence");
    in.get_array(s.tokens, n_tokens, "tokens");
    in.get_array(s.block_table, n_blocks, "block table");
  }
  const auto n_freed = in.get<std::uint32_t>("freed count");
  check_limit(n_freed, limits.max_sequences, "freed sequences");
  in.get_array(plan.freed, n_freed, "freed ids");
  if (in.left() != 0)
    throw PlanError("iteration plan has " + std::to_string(in.left()) + " trailing bytes");
}

}  // namespace saker
