// The adaptive rule of speculative decoding (engine/speculative/adaptive.h), driven by simulated
// iterations: it settles on the number of proposals that measures fastest for the batch size,
// keeps trying the others rarely, and holds back sequences whose proposals are not accepted.
#include <functional>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/speculative/adaptive.h"

using namespace saker;

namespace {

// A machine: a step of `rows` rows proposing k each takes seconds(rows, k) and yields, per row,
// 1 + k * accepted_share tokens (rows that were told to propose 0 yield 1).
struct Sim {
  std::function<double(std::int64_t rows, int k)> seconds;
  double accepted_share = 0.6;
};

// Runs `steps` decode-only iterations of `ids`; returns how often each k was chosen (by the
// first row) and the proposals made by each row.
std::vector<int> drive(SpecController& c, const Sim& sim, std::vector<std::uint64_t> ids, int steps,
                       std::vector<int>* proposals = nullptr) {
  std::vector<int> chosen(17, 0), k;
  if (proposals) proposals->assign(ids.size(), 0);
  for (int s = 0; s < steps; ++s) {
    c.plan(ids, true, k);
    int most = 0;
    double tokens = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      most = std::max(most, k[i]);
      const int accepted = static_cast<int>(k[i] * sim.accepted_share + 0.5);
      tokens += 1 + k[i] * sim.accepted_share;
      c.observe_acceptance(ids[i], k[i], accepted);
      if (proposals) (*proposals)[i] += k[i];
    }
    ++chosen[static_cast<std::size_t>(most)];
    c.observe_iteration(true, static_cast<std::int64_t>(tokens + 0.5),
                        sim.seconds(static_cast<std::int64_t>(ids.size()), most));
  }
  return chosen;
}

}  // namespace

TEST_CASE("bandwidth-bound steps: speculation is chosen, the others tried rarely",
          "[speculative][adaptive]") {
  SpecController c(3);
  std::vector<int> k;
  c.plan(std::vector<std::uint64_t>{1}, false,
         k);  // nothing measured yet: no trial in a mixed step
  CHECK(k == std::vector<int>{0});
  // A step costs its weight read; each position adds 2 %; 60 % of proposals are accepted.
  const Sim sim{[](std::int64_t rows, int k) { return 1.0 + 0.02 * double(rows * (1 + k)); }};
  const auto chosen = drive(c, sim, {1}, 400);
  CHECK(chosen[3] > 340);  // K = 3 measures fastest (2 of 3 accepted)
  CHECK(chosen[0] >= 3);   // still measured now and then
  CHECK(c.rate(1, 3) > 2 * c.rate(1, 0));
}

TEST_CASE("compute-bound steps (a large batch): speculation turns off", "[speculative][adaptive]") {
  SpecController c(3);
  // Every position costs the same: proposals cost what they bring, and more when rejected.
  const Sim sim{[](std::int64_t rows, int k) { return 0.1 * double(rows * (1 + k)); }};
  std::vector<std::uint64_t> ids;
  for (std::uint64_t id = 1; id <= 16; ++id) ids.push_back(id);
  const auto chosen = drive(c, sim, ids, 400);
  CHECK(chosen[0] > 350);
  // The slower a choice measured, the less often it is tried again.
  CHECK(chosen[3] <= chosen[1]);
}

TEST_CASE("batch sizes are measured apart: on for two rows, off for sixteen",
          "[speculative][adaptive]") {
  SpecController c(2);
  // The weights cost 0.5 per step; a position 0.1 (so 16 rows are compute-bound); half of the
  // proposals are accepted.
  const Sim sim{[](std::int64_t rows, int k) { return 0.5 + 0.1 * double(rows * (1 + k)); }, 0.5};
  std::vector<std::uint64_t> many;
  for (std::uint64_t id = 10; id < 26; ++id) many.push_back(id);
  for (int round = 0; round < 4; ++round) {
    drive(c, sim, {1, 2}, 100);
    drive(c, sim, many, 100);
  }
  CHECK(c.rate(2, 2) > c.rate(2, 0));
  CHECK(c.rate(16, 0) > c.rate(16, 2));
  std::vector<int> k;
  c.plan(std::vector<std::uint64_t>{1, 2}, false, k);  // a prompt chunk runs too: the best k
  CHECK(k == std::vector<int>{2, 2});
  c.observe_iteration(false, 0, 0);  // not measured
  const auto two = drive(c, sim, {1, 2}, 50);
  const auto sixteen = drive(c, sim, many, 50);
  CHECK(two[2] > 40);
  CHECK(sixteen[0] > 40);
}

TEST_CASE("a sequence whose proposals fail is held back, and probed again",
          "[speculative][adaptive]") {
  SpecController c(3);
  const Sim sim{[](std::int64_t rows, int k) { return 1.0 + 0.1 * double(rows * (1 + k)); }};
  // Warm up with good acceptance, two rows.
  drive(c, sim, {1, 2}, 60);
  // Row 2 now never has a proposal accepted; row 1 always.
  std::vector<int> k, proposals(2, 0);
  for (int s = 0; s < 200; ++s) {
    c.plan(std::vector<std::uint64_t>{1, 2}, true, k);
    c.observe_acceptance(1, k[0], k[0]);
    c.observe_acceptance(2, k[1], 0);
    proposals[0] += k[0];
    proposals[1] += k[1];
    c.observe_iteration(true, 2 + k[0], sim.seconds(2, std::max(k[0], k[1])));
  }
  CHECK(c.acceptance(1) > 0.8);
  CHECK(c.acceptance(2) < 0.3);
  CHECK(proposals[0] > 400);
  CHECK(proposals[1] > 0);    // probed now and then
  CHECK(proposals[1] < 100);  // but mostly held back
}
