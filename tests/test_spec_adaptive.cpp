// The adaptive rule of speculative decoding (engine/speculative/adaptive.h), on simulated
// machines: it measures what rows and proposals cost, proposes where the expected tokens are
// worth more than that, and holds back the sequences whose proposals are not accepted.
#include <functional>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/speculative/adaptive.h"

using namespace saker;

namespace {

// A machine: an iteration of `rows` rows, `proposing` of them proposing k tokens each, takes
// seconds(rows, proposing * k, k); a row's proposals are accepted at the rate `acceptance(id)`
// (the counts carry their rounding over, so each row's share is exact in the long run).
struct Sim {
  std::function<double(std::int64_t rows, std::int64_t positions, int k)> seconds;
  std::function<double(std::uint64_t id)> acceptance = [](std::uint64_t) { return 0.6; };
};

// `steps` decode-only iterations of `ids`; how often each k ran, and proposals per row.
std::vector<int> drive(SpecController& c, const Sim& sim, const std::vector<std::uint64_t>& ids,
                       int steps, std::vector<int>* proposals = nullptr) {
  std::vector<int> ran(17, 0), k;
  std::vector<double> owed(ids.size(), 0.5);
  if (proposals) proposals->assign(ids.size(), 0);
  for (int s = 0; s < steps; ++s) {
    c.plan(ids, true, k);
    int most = 0;
    std::int64_t positions = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      most = std::max(most, k[i]);
      positions += k[i];
      owed[i] += k[i] * sim.acceptance(ids[i]);
      const int accepted = std::min(static_cast<int>(owed[i]), k[i]);
      owed[i] -= accepted;
      c.observe_acceptance(ids[i], k[i], accepted);
      if (proposals) (*proposals)[i] += k[i];
    }
    ++ran[static_cast<std::size_t>(most)];
    c.observe_iteration(true, sim.seconds(static_cast<std::int64_t>(ids.size()), positions, most));
  }
  return ran;
}

std::vector<std::uint64_t> ids(std::uint64_t first, int n) {
  std::vector<std::uint64_t> v;
  for (int i = 0; i < n; ++i) v.push_back(first + static_cast<std::uint64_t>(i));
  return v;
}

}  // namespace

TEST_CASE("bandwidth-bound steps: proposals pay and run", "[speculative][adaptive]") {
  SpecController c(3);
  std::vector<int> k;
  c.plan(ids(1, 1), false, k);  // nothing measured yet: no proposals in an unmeasured step
  CHECK(k == std::vector<int>{0});
  c.observe_iteration(false, 1.0);
  // A step costs its weight read (1); a position 2 % of it; a draft step 3 %.
  const Sim sim{[](std::int64_t rows, std::int64_t positions, int k) {
    return 1.0 + 0.02 * double(rows + positions) + 0.03 * k;
  }};
  const auto ran = drive(c, sim, ids(1, 1), 400);
  CHECK(ran[3] > 340);  // K = 3: 2 of 3 accepted, for 15 % more time
  CHECK(ran[0] >= 4);   // the plain cost is measured, and again now and then
  CHECK(c.row_seconds(1) == Approx(1.02).epsilon(0.01));
  CHECK(c.proposal_seconds(1, 3) == Approx(0.15).epsilon(0.01));
}

TEST_CASE("compute-bound steps (a large batch): speculation is off", "[speculative][adaptive]") {
  SpecController c(3);
  // Every position costs what a row does: a proposal costs a token, and brings 0.6 of one.
  const Sim sim{[](std::int64_t rows, std::int64_t positions, int) {
    return 0.1 * double(rows + positions);
  }};
  const auto ran = drive(c, sim, ids(1, 16), 400);
  CHECK(ran[0] > 380);
  CHECK(ran[2] + ran[3] <= 8);  // larger k are not even tried once k = 1 measures no gain
}

TEST_CASE("batch sizes are measured apart: on for two rows, off for sixteen",
          "[speculative][adaptive]") {
  SpecController c(2);
  // The weights cost 1 per step, a position 0.1: for two rows a proposal is cheap, for sixteen
  // the positions dominate.
  const Sim sim{[](std::int64_t rows, std::int64_t positions, int k) {
    return 1.0 + 0.1 * double(rows + positions) + 0.01 * k;
  }};
  for (int round = 0; round < 4; ++round) {
    drive(c, sim, ids(1, 2), 100);
    drive(c, sim, ids(10, 16), 100);
  }
  std::vector<int> k;
  c.plan(ids(1, 2), false, k);  // a prompt chunk runs too: what measured a gain, nothing tried
  CHECK(k == std::vector<int>{2, 2});
  c.observe_iteration(false, 5.0);  // not measured
  CHECK(drive(c, sim, ids(1, 2), 50)[2] > 45);
  CHECK(drive(c, sim, ids(10, 16), 50)[0] > 45);
}

TEST_CASE("a sequence whose proposals fail is held back, and probed again",
          "[speculative][adaptive]") {
  SpecController c(3);
  // Row 2's proposals are never accepted; row 1's always are.
  Sim sim{[](std::int64_t rows, std::int64_t positions, int k) {
            return 1.0 + 0.1 * double(rows + positions) + 0.01 * k;
          },
          [](std::uint64_t id) { return id == 1 ? 1.0 : 0.0; }};
  std::vector<int> proposals;
  drive(c, sim, ids(1, 2), 300, &proposals);
  CHECK(c.acceptance(1) > 0.8);
  CHECK(c.acceptance(2) < 0.3);
  CHECK(proposals[0] > 700);
  CHECK(proposals[1] > 0);    // probed now and then
  CHECK(proposals[1] < 150);  // but mostly held back
  // Its proposals start being accepted: it proposes again.
  sim.acceptance = [](std::uint64_t) { return 1.0; };
  drive(c, sim, ids(1, 2), 100, &proposals);
  CHECK(proposals[1] > 200);
}
