// The vectorised attention and GELU kernels: every ISA gives the portable path's bits, a token's
// output does not depend on its batch, the threads or how heads are grouped, and both stay close
// to double-precision references.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/model/positions.h"
#include "kernel_reference.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"

using namespace saker;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Shape {
  std::int64_t heads, kv_heads, hd, block;
  bool alibi;
};

// Several sequences in one paged KV cache over shuffled blocks, and a step's tokens: the last
// position of every sequence (decode) plus a run of prompt positions of one of them (prefill).
// Slots no token may read hold NaN, so a read past a sequence's end shows in the output.
struct AttentionRig {
  Shape sh;
  AttentionShape shape;
  std::vector<std::int64_t> lengths;
  std::vector<float> k, v, qkv, slopes;
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<TokenPlace> places;
  std::vector<std::int64_t> token_seq;

  AttentionRig(const Shape& s, std::vector<std::int64_t> lens, std::mt19937& rng)
      : sh(s), shape{s.heads, s.kv_heads, s.hd, nullptr}, lengths(std::move(lens)) {
    std::int64_t blocks = 0;
    for (auto n : lengths) blocks += (n + s.block - 1) / s.block;
    blocks += 3;  // spare blocks nobody owns
    const std::int64_t row = s.kv_heads * s.hd;
    k.assign(static_cast<std::size_t>(blocks * s.block * row), NAN);
    v = k;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::size_t next = 0;
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (auto n : lengths) {
      std::vector<std::int32_t> table;
      for (std::int64_t b = 0; b < (n + s.block - 1) / s.block; ++b) table.push_back(ids[next++]);
      for (std::int64_t pos = 0; pos < n; ++pos) {
        const std::int64_t slot = table[pos / s.block] * s.block + pos % s.block;
        for (std::int64_t i = 0; i < row; ++i) {
          k[slot * row + i] = d(rng);
          v[slot * row + i] = d(rng);
        }
      }
      tables.push_back(std::move(table));
    }
    for (std::size_t q = 0; q < lengths.size(); ++q) add_token(q, lengths[q] - 1);
    const std::size_t longest = static_cast<std::size_t>(
        std::max_element(lengths.begin(), lengths.end()) - lengths.begin());
    for (std::int64_t pos = std::max<std::int64_t>(0, lengths[longest] - 7);
         pos < lengths[longest] - 1; ++pos)
      add_token(longest, pos);
    const cpu::QkvLayout L(shape);
    qkv = ref::random_floats(places.size() * static_cast<std::size_t>(s.kv_heads * L.group_stride),
                             rng);
    slopes = alibi_slopes(s.heads);
    if (s.alibi) shape.alibi_slopes = slopes.data();
  }
  void add_token(std::size_t seq, std::int64_t pos) {
    places.push_back({static_cast<std::int32_t>(pos), tables[seq].data()});
    token_seq.push_back(static_cast<std::int64_t>(seq));
  }
  KvLayer kv() { return {k.data(), v.data(), sh.kv_heads, sh.hd, sh.block}; }
  std::int64_t tokens() const { return static_cast<std::int64_t>(places.size()); }
  std::int64_t qkv_stride() const { return sh.kv_heads * cpu::QkvLayout(shape).group_stride; }

  std::vector<float> run(CpuBackend& backend, cpu::Isa isa) {
    backend.force_isa(isa);
    std::vector<float> out(static_cast<std::size_t>(tokens() * sh.heads * sh.hd), NAN);
    backend.attention(qkv.data(), places, shape, kv(), out.data());
    return out;
  }

  // Double precision, with the kernel's ALiBi term: bf16(slope * j) / sqrt(head_dim).
  std::vector<double> reference(std::int64_t t, std::int64_t head) const {
    const cpu::QkvLayout L(shape);
    const float* q = qkv.data() + t * qkv_stride() + L.q(head);
    const std::int64_t g = head / L.group_size, n = places[t].pos + 1, row = sh.kv_heads * sh.hd;
    const double root = std::sqrt(static_cast<double>(sh.hd));
    std::vector<double> s(static_cast<std::size_t>(n));
    double mx = -INFINITY;
    for (std::int64_t j = 0; j < n; ++j) {
      const float* key = k.data() + cpu::kv_slot(places[t], j, sh.block) * row + g * sh.hd;
      double dot = 0;
      for (std::int64_t d = 0; d < sh.hd; ++d) dot += double(q[d]) * key[d];
      s[j] = dot / root;
      if (sh.alibi) s[j] += round_to_bf16(slopes[head] * static_cast<float>(j)) / root;
      mx = std::max(mx, s[j]);
    }
    double z = 0;
    for (auto& x : s) z += (x = std::exp(x - mx));
    std::vector<double> out(static_cast<std::size_t>(sh.hd), 0.0);
    for (std::int64_t j = 0; j < n; ++j) {
      const float* val = v.data() + cpu::kv_slot(places[t], j, sh.block) * row + g * sh.hd;
      for (std::int64_t d = 0; d < sh.hd; ++d) out[d] += s[j] / z * val[d];
    }
    return out;
  }
};

// MQA, GQA (including the ~1B model's 32 / 8 x 64), MHA, ALiBi, ragged head_dim, block sizes
// that do and do not divide 16, a group wider than one call takes.
const Shape kShapes[] = {{8, 1, 64, 16, false},  {7, 1, 20, 4, false},  {12, 3, 72, 16, false},
                         {32, 8, 64, 16, false}, {6, 6, 80, 16, true},  {4, 4, 8, 3, true},
                         {9, 3, 20, 5, true},    {10, 1, 80, 8, false}, {4, 2, 16, 16, true},
                         {3, 1, 33, 7, false}};

const std::vector<std::int64_t> kLengths = {1, 16, 17, 40, 100, 33};

std::string describe(const Shape& s) {
  return "heads " + std::to_string(s.heads) + " kv " + std::to_string(s.kv_heads) + " hd " +
         std::to_string(s.hd) + " block " + std::to_string(s.block) + (s.alibi ? " alibi" : "");
}

float gelu_ulps(float got, double want) {
  if (want == 0) return got == 0 ? 0.0f : INFINITY;
  int e = 0;
  std::frexp(want, &e);
  return static_cast<float>(std::fabs(got - want) / std::ldexp(1.0, std::max(e - 24, -149)));
}

}  // namespace

TEST_CASE("attention gives the portable path's bits on every ISA", "[kernels][attention]") {
  std::mt19937 rng(21);
  CpuBackend backend(2, 128, 1);
  for (const Shape& sh : kShapes) {
    AttentionRig rig(sh, kLengths, rng);
    const auto want = rig.run(backend, cpu::Isa::kPortable);
    for (cpu::Isa isa : cpu::supported_isas()) {
      INFO(describe(sh) << " isa " << cpu::isa_name(isa));
      CHECK(same_bits(rig.run(backend, isa), want));
    }
  }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("attention matches the double reference on every ISA", "[kernels][attention]") {
  std::mt19937 rng(22);
  CpuBackend backend(2, 128, 1);
  for (const Shape& sh : kShapes) {
    AttentionRig rig(sh, kLengths, rng);
    for (cpu::Isa isa : cpu::supported_isas()) {
      const auto out = rig.run(backend, isa);
      for (std::int64_t t = 0; t < rig.tokens(); ++t)
        for (std::int64_t h = 0; h < sh.heads; ++h) {
          const auto want = rig.reference(t, h);
          for (std::int64_t d = 0; d < sh.hd; ++d) {
            INFO(describe(sh) << " isa " << cpu::isa_name(isa) << " token " << t << " head " << h);
            REQUIRE(out[(t * sh.heads + h) * sh.hd + d] == Approx(want[d]).margin(1e-5));
          }
        }
    }
  }
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("attention output does not depend on batch, threads or head grouping",
          "[kernels][attention]") {
  std::mt19937 rng(23);
  CpuBackend one(1, 128), two(2, 128, 1);
  for (const Shape& sh : kShapes) {
    AttentionRig rig(sh, kLengths, rng);
    for (cpu::Isa isa : cpu::supported_isas()) {
      INFO(describe(sh) << " isa " << cpu::isa_name(isa));
      const auto batched = rig.run(two, isa);
      REQUIRE(same_bits(rig.run(one, isa), batched));
      // Each token alone, on both backends (alone, the two-thread backend splits groups finer).
      const std::int64_t width = sh.heads * sh.hd;
      for (std::int64_t t = 0; t < rig.tokens(); ++t) {
        const std::vector<TokenPlace> place{rig.places[t]};
        for (CpuBackend* b : {&one, &two}) {
          b->force_isa(isa);
          std::vector<float> alone(static_cast<std::size_t>(width), NAN);
          b->attention(rig.qkv.data() + t * rig.qkv_stride(), place, rig.shape, rig.kv(),
                       alone.data());
          INFO("token " << t);
          REQUIRE(std::memcmp(alone.data(), batched.data() + t * width,
                              static_cast<std::size_t>(width) * sizeof(float)) == 0);
        }
      }
      // One head per call, and a group's heads (at most kAttentionMaxHeads) in one call.
      const cpu::QkvLayout L(rig.shape);
      std::vector<float> scratch(static_cast<std::size_t>(cpu::attention_scratch_floats(128)));
      std::vector<float> single(batched.size(), NAN), grouped(batched.size(), NAN);
      for (std::int64_t t = 0; t < rig.tokens(); ++t)
        for (std::int64_t h0 = 0; h0 < sh.heads; h0 += L.group_size) {
          for (std::int64_t h = h0; h < h0 + L.group_size; ++h)
            cpu::attention_heads(isa, rig.qkv.data(), rig.places, rig.shape, rig.kv(), t, h, h + 1,
                                 scratch.data(), single.data());
          for (std::int64_t h = h0; h < h0 + L.group_size; h += cpu::kAttentionMaxHeads)
            cpu::attention_heads(isa, rig.qkv.data(), rig.places, rig.shape, rig.kv(), t, h,
                                 std::min(h + cpu::kAttentionMaxHeads, h0 + L.group_size),
                                 scratch.data(), grouped.data());
        }
      REQUIRE(same_bits(single, batched));
      REQUIRE(same_bits(grouped, batched));
    }
  }
}

TEST_CASE("attention softmax survives large score ranges", "[kernels][attention]") {
  // Scores hundreds apart: most weights underflow to exactly 0 and one key dominates.
  std::mt19937 rng(24);
  CpuBackend backend(2, 128, 1);
  AttentionRig rig({4, 2, 24, 16, false}, {70, 5}, rng);
  for (auto& x : rig.qkv) x *= 30.0f;
  const auto want = rig.run(backend, cpu::Isa::kPortable);
  for (std::int64_t t = 0; t < rig.tokens(); ++t)
    for (std::int64_t h = 0; h < 4; ++h) {
      const auto ref = rig.reference(t, h);
      for (std::int64_t d = 0; d < 24; ++d)
        REQUIRE(want[(t * 4 + h) * 24 + d] == Approx(ref[d]).margin(1e-4));
    }
  for (cpu::Isa isa : cpu::supported_isas()) CHECK(same_bits(rig.run(backend, isa), want));
  backend.force_isa(cpu::detect_isa());
}

TEST_CASE("gelu gives the portable path's bits on every ISA, for any range", "[kernels][gelu]") {
  std::mt19937 rng(31);
  std::vector<float> x;
  for (float scale : {0.5f, 1.0f, 4.0f, 30.0f}) {
    const auto v = ref::random_floats(2000, rng, scale);
    x.insert(x.end(), v.begin(), v.end());
  }
  // Any bit pattern: subnormals, huge values, infinities, NaNs with payloads.
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 4000; ++i) x.push_back(std::bit_cast<float>(bits(rng)));
  for (float s : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 0.75f, -0.75f, 16.0f, -16.0f,
                  std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max()})
    x.push_back(s);
  std::vector<float> want = x;
  cpu::gelu_range(want.data(), 0, static_cast<std::int64_t>(want.size()), cpu::Isa::kPortable);
  for (cpu::Isa isa : cpu::supported_isas()) {
    INFO("isa " << cpu::isa_name(isa));
    std::vector<float> y = x;
    cpu::gelu_range(y.data(), 0, static_cast<std::int64_t>(y.size()), isa);
    CHECK(same_bits(y, want));
    // Ragged ranges at any alignment touch exactly [begin, end).
    for (std::int64_t begin : {0, 1, 3, 8, 13})
      for (std::int64_t len : {0, 1, 5, 7, 8, 9, 15, 16, 17, 31, 33}) {
        std::vector<float> r = x;
        cpu::gelu_range(r.data(), begin, begin + len, isa);
        for (std::int64_t i = 0; i < 64; ++i) {
          const bool inside = i >= begin && i < begin + len;
          const float expect = inside ? want[i] : x[i];
          INFO("begin " << begin << " len " << len << " i " << i);
          REQUIRE(std::bit_cast<std::uint32_t>(r[i]) == std::bit_cast<std::uint32_t>(expect));
        }
      }
  }
}

TEST_CASE("gelu is within a few ulps of exact erf GELU", "[kernels][gelu]") {
  // Every 997th float in [-20, 20]: c = 1 + erf(x / sqrt 2) is accurate to a few ulps, including
  // far out on the negative side where 1 + erf would cancel.
  std::vector<float> x;
  for (std::uint32_t b = 0; b < 0x41a00000u; b += 997) {
    x.push_back(std::bit_cast<float>(b));
    x.push_back(-std::bit_cast<float>(b));
  }
  std::vector<float> y = x;
  cpu::gelu_range(y.data(), 0, static_cast<std::int64_t>(y.size()), cpu::detect_isa());
  float worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = 0.5 * x[i] * std::erfc(-static_cast<double>(x[i]) / std::sqrt(2.0));
    if (std::fabs(want) < 1e-36) {  // where the result is subnormal, flushed or 0
      REQUIRE(std::fabs(y[i] - want) <= 1e-36);
      continue;
    }
    const float u = gelu_ulps(y[i], want);
    INFO("x " << x[i] << " got " << y[i] << " want " << want);
    REQUIRE(u <= 8.0f);
    worst = std::max(worst, u);
  }
  CHECK(worst <= 7.0f);

  std::vector<float> special{INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1e30f, -1e30f};
  cpu::gelu_range(special.data(), 0, static_cast<std::int64_t>(special.size()));
  CHECK(special[0] == INFINITY);
  CHECK(special[1] == 0.0f);
  CHECK(std::isnan(special[2]));
  CHECK(special[3] == 0.0f);
  CHECK(special[4] == 0.0f);
  CHECK(special[5] == 1e30f);
  CHECK(special[6] == 0.0f);
}

TEST_CASE("backend gelu matches the double reference on every ISA", "[kernels][gelu]") {
  std::mt19937 rng(32);
  CpuBackend backend(2, 16);
  auto x = ref::random_floats(20000, rng, 4.0f);
  for (cpu::Isa isa : cpu::supported_isas()) {
    backend.force_isa(isa);
    auto y = x;
    backend.gelu(y.data(), static_cast<std::int64_t>(y.size()));
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double want = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
      INFO("isa " << cpu::isa_name(isa) << " x " << x[i]);
      REQUIRE(y[i] == Approx(want).margin(1e-6).epsilon(1e-6));
    }
  }
  backend.force_isa(cpu::detect_isa());
}
