// The transformers reference fixtures (tests/fixtures/*/reference.json) and how logits are
// compared with them.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

namespace saker::test {

inline const std::filesystem::path kFixtures = SAKER_FIXTURES_DIR;

// Every fixture model directory, in name order.
inline std::vector<std::filesystem::path> fixture_dirs() {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(kFixtures))
    if (std::filesystem::exists(e.path() / "reference.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

inline nlohmann::json read_reference(const std::filesystem::path& dir) {
  std::ifstream in(dir / "reference.json");
  return nlohmann::json::parse(in);
}

// ||a - b|| / ||b|| over one row of logits.
inline double rel_l2(std::span<const float> a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace saker::test
