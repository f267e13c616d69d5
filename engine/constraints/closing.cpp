#include "engine/constraints/closing.h"

#include <xgrammar/xgrammar.h>

#include <algorithm>
#include <array>
#include <limits>

namespace saker {

Speller::Speller(const std::vector<std::string>& decoded) {
  ids_.reserve(decoded.size());
  for (std::size_t id = 0; id < decoded.size(); ++id) {
    const std::string& b = decoded[id];
    if (b.empty()) continue;
    ids_.emplace(b, static_cast<std::int32_t>(id));  // the first id of duplicate spellings
    longest_ = std::max(longest_, b.size());
  }
}

std::optional<std::vector<std::int32_t>> Speller::spell(std::string_view bytes) const {
  // fewest[i]: the fewest tokens that spell bytes[i..]; take[i]: the first of them.
  const std::size_t n = bytes.size();
  constexpr std::int32_t kNone = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> fewest(n + 1, kNone), take(n + 1, -1);
  std::vector<std::size_t> len(n + 1, 0);
  fewest[n] = 0;
  std::string key;
  for (std::size_t i = n; i-- > 0;) {
    for (std::size_t l = 1; l <= std::min(longest_, n - i); ++l) {
      if (fewest[i + l] == kNone || fewest[i + l] + 1 >= fewest[i]) continue;
      key.assign(bytes.substr(i, l));
      const auto it = ids_.find(key);
      if (it == ids_.end()) continue;
      fewest[i] = fewest[i + l] + 1;
      take[i] = it->second;
      len[i] = l;
    }
  }
  if (fewest[0] == kNone) return std::nullopt;
  std::vector<std::int32_t> out;
  for (std::size_t i = 0; i < n; i += len[i]) out.push_back(take[i]);
  return out;
}

namespace {

// Closing bytes first, then what values start with, then every other byte: the first accepted
// byte is kept, so the search ends structures rather than opening new ones.
std::array<char, 256> byte_order() {
  std::array<char, 256> order{};
  std::array<bool, 256> used{};
  std::size_t n = 0;
  const auto add = [&](unsigned char c) {
    if (!used[c]) {
      used[c] = true;
      order[n++] = static_cast<char>(c);
    }
  };
  for (const char c : std::string_view("\"}])0,:1[{a-.eEtrufalsn "))
    add(static_cast<unsigned char>(c));
  for (int c = 0x21; c < 0x7f; ++c) add(static_cast<unsigned char>(c));
  for (int c = 0; c < 256; ++c) add(static_cast<unsigned char>(c));
  return order;
}

}  // namespace

namespace {

const std::array<char, 256>& order() {
  static const std::array<char, 256> kOrder = byte_order();
  return kOrder;
}

// One step of a closing: a byte chosen from the order (its index there), or a forced stretch.
struct Piece {
  std::string bytes;
  int index;  // in order(); kForced for a forced stretch
};
constexpr int kForced = 256;

std::size_t length(const std::vector<Piece>& path) {
  std::size_t n = 0;
  for (const Piece& p : path) n += p.bytes.size();
  return n;
}

// Depth-first: at each state the first accepted byte of the order (a forced stretch whole),
// backtracking from dead ends; the first closing of fewer than `bound` bytes wins. The matcher
// ends where it started; `steps` counts the matcher calls left.
std::optional<std::vector<Piece>> greedy(xgrammar::GrammarMatcher& m, int& steps,
                                         std::size_t bound) {
  std::vector<Piece> stack;
  std::size_t len = 0;
  std::optional<std::vector<Piece>> found;
  int next = 0;  // where the search resumes in the current state's byte order
  bool fresh = true;
  while (steps > 0) {
    if (fresh) {
      fresh = false;
      next = 0;
      if (m.IsCompleted()) {
        found = stack;
        break;
      }
      if (len + 1 >= bound) {
        next = 256;  // one more byte reaches the bound: a dead end
      } else {
        std::string forced = m.FindJumpForwardString();
        --steps;
        if (!forced.empty() && len + forced.size() < bound && m.AcceptString(forced)) {
          len += forced.size();
          stack.push_back({std::move(forced), kForced});
          fresh = true;
          continue;
        }
        if (!forced.empty()) next = 256;  // every closing starts with it: too long here
      }
    }
    bool advanced = false;
    for (; next < 256 && steps > 0; ++next) {
      --steps;
      const char b = order()[static_cast<std::size_t>(next)];
      if (m.AcceptString(std::string(1, b))) {
        ++len;
        stack.push_back({std::string(1, b), next});
        advanced = true;
        break;
      }
    }
    if (advanced) {
      fresh = true;
      continue;
    }
    if (stack.empty()) break;  // nothing more here: back to the previous state, its next byte
    next = stack.back().index + 1;
    len -= stack.back().bytes.size();
    stack.pop_back();
    m.Rollback(1);
  }
  if (!stack.empty()) m.Rollback(static_cast<int>(stack.size()));
  return found;
}

// One pass of improvement: along the path, each choice replaced by a later byte among the first
// `alternatives` of the order, then completed greedily; the first shorter closing is returned.
std::optional<std::vector<Piece>> shorten(xgrammar::GrammarMatcher& m, int& steps,
                                          const std::vector<Piece>& path, int alternatives) {
  const std::size_t best = length(path);
  std::size_t prefix = 0;
  std::optional<std::vector<Piece>> better;
  std::size_t i = 0;
  for (; i < path.size() && !better && steps > 0; ++i) {
    const Piece& p = path[i];
    for (int j = p.index + 1; j < alternatives && p.index != kForced && prefix + 1 < best; ++j) {
      --steps;
      const char b = order()[static_cast<std::size_t>(j)];
      if (!m.AcceptString(std::string(1, b))) continue;
      // A few tries per byte of the rest: a completion that is no shorter fails fast.
      int local = std::min(steps, 64 + 8 * static_cast<int>(best));
      steps -= local;
      auto rest = greedy(m, local, best - prefix - 1);
      steps += local;
      m.Rollback(1);
      if (rest) {
        better.emplace(path.begin(), path.begin() + static_cast<std::ptrdiff_t>(i));
        better->push_back({std::string(1, b), j});
        better->insert(better->end(), rest->begin(), rest->end());
        break;
      }
      if (steps <= 0) break;
    }
    if (better) break;
    m.AcceptString(p.bytes);  // on along the path
    prefix += p.bytes.size();
  }
  if (i > 0) m.Rollback(static_cast<int>(i));
  return better;
}

}  // namespace

std::optional<std::string> find_closing(xgrammar::GrammarMatcher& m, int max_steps,
                                        std::size_t max_bytes, bool shortest) {
  int steps = max_steps;
  auto path = greedy(m, steps, max_bytes + 1);
  if (!path) return std::nullopt;
  // Shallow choices first (a closing bracket where the first search opened a string, say):
  // depth-first backtracking would spend its steps deep down the path.
  constexpr int kAlternatives = 256;
  while (shortest && steps > 0) {
    auto better = shorten(m, steps, *path, kAlternatives);
    if (!better) break;
    path = std::move(better);
  }
  std::string out;
  for (const Piece& p : *path) out += p.bytes;
  return out;
}

}  // namespace saker
