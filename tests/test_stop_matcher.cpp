// Stop strings over streamed text: cut exactly, across token boundaries, never emitted.
#include <catch2/catch.hpp>

#include "engine/stop_matcher.h"

using saker::StopMatcher;

namespace {

// Feeds pieces; returns everything released and whether a stop matched.
std::pair<std::string, bool> feed(StopMatcher m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    out += m.push(p);
    if (m.matched()) return {out, true};
  }
  out += m.flush();
  return {out, false};
}

}  // namespace

TEST_CASE("a stop string split over pieces is cut exactly and not emitted", "[stop]") {
  const auto [text, hit] = feed(StopMatcher({"\nUser:"}), {"Hello", " there\nU", "se", "r: more"});
  CHECK(hit);
  CHECK(text == "Hello there");
}

TEST_CASE("text that only looks like a stop string's start is held, then released", "[stop]") {
  StopMatcher m({"abc"});
  CHECK(m.push("xxa") == "xx");  // "a" may begin "abc"
  CHECK(m.push("b") == "");      // "ab" too
  CHECK(m.push("d") == "abd");   // no longer
  CHECK_FALSE(m.matched());
  CHECK(m.push("ab") == "");
  CHECK(m.flush() == "ab");  // the sequence ended for another reason
}

TEST_CASE("the earliest of several stop strings wins, and one piece may hold a match", "[stop]") {
  CHECK(feed(StopMatcher({"world", "lo"}), {"hello world"}) ==
        std::pair<std::string, bool>("hel", true));
  CHECK(feed(StopMatcher({"zz"}), {"no match here"}) ==
        std::pair<std::string, bool>("no match here", false));
  CHECK(feed(StopMatcher({"é!"}), {"caf", "é", "!", "x"}) ==
        std::pair<std::string, bool>("caf", true));
}

TEST_CASE("before min_new_tokens, text passes unchecked and releases what was held", "[stop]") {
  StopMatcher m({"ab"});
  CHECK(m.push("xa") == "x");
  CHECK(m.push_unchecked("b") == "ab");  // would have matched; not yet allowed to
  CHECK_FALSE(m.matched());
  CHECK(m.push("ab") == "");
  CHECK(m.matched());
  CHECK(m.push("more") == "");  // nothing after a match
}
