// The streaming detokenizer: whole characters only, and everything it emits is the full decode.
#include <catch2/catch.hpp>
#include <random>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/tokenizer_fixtures.h"

using saker::StreamingDetokenizer;
using saker::Tokenizer;
using Ids = std::vector<std::int32_t>;

namespace {

// The id of the token that is exactly byte b, if the vocabulary has one.
std::int32_t byte_id(const Tokenizer& tok, std::uint8_t b) {
  return tok.token_to_id(saker::byte_level::symbol(b)).value_or(-1);
}

// Random ids mixing whole tokens, special tokens, single bytes of multi-byte characters (which
// split characters across tokens) and whole characters spelled byte by byte.
Ids random_ids(const Tokenizer& tok, std::mt19937& rng) {
  static const std::vector<std::string> chars = {"é", "€", "😀", "中", "ก", "👨‍👩‍👧",
                                                 "ש"};
  Ids ids;
  const int n = static_cast<int>(rng() % 40) + 1;
  for (int i = 0; i < n; ++i) {
    const unsigned kind = rng() % 10;
    if (kind < 4) {
      ids.push_back(static_cast<std::int32_t>(rng() % static_cast<unsigned>(tok.id_limit())));
    } else if (kind < 7) {
      const std::int32_t id = byte_id(tok, static_cast<std::uint8_t>(0x80 + rng() % 0x80));
      if (id >= 0) ids.push_back(id);
    } else if (kind < 8) {
      ids.push_back(static_cast<std::int32_t>(rng() % 12));  // >>TITLE<< .. <|endoftext|>
    } else {
      for (const char c : chars[rng() % chars.size()]) {
        const std::int32_t id = byte_id(tok, static_cast<std::uint8_t>(c));
        if (id >= 0) ids.push_back(id);
      }
    }
  }
  return ids;
}

}  // namespace

TEST_CASE("Streaming detokenizer: chunks are valid UTF-8 and add up to the full decode",
          "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  std::mt19937 rng(12345);
  int held_back = 0;
  for (int round = 0; round < 500; ++round) {
    const Ids ids = random_ids(tok, rng);
    for (const bool skip : {false, true}) {
      const std::string full = tok.decode(ids, skip);
      StreamingDetokenizer stream(tok, skip);
      std::string emitted;
      for (const std::int32_t id : ids) {
        const std::string chunk = stream.push(id);
        INFO("round " << round << ", id " << id);
        REQUIRE(saker::utf8::is_valid(chunk));
        emitted += chunk;
        REQUIRE(full.compare(0, emitted.size(), emitted) == 0);  // a prefix of the full decode
      }
      const std::string rest = stream.flush();
      REQUIRE(saker::utf8::is_valid(rest));
      held_back += !rest.empty();
      REQUIRE(emitted + rest == full);
    }
  }
  CHECK(held_back > 10);  // the sequences did end inside characters
}

TEST_CASE("Streaming detokenizer: a character split across tokens waits for its last byte",
          "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  StreamingDetokenizer stream(tok, false);
  CHECK(stream.push(20589).empty());  // "ðŁĺ": the first three bytes of 😀
  CHECK(stream.push(206) == "😀");
  CHECK(stream.push(9856) == "Hello");
  CHECK(stream.push(byte_id(tok, 0xE2)).empty());
  CHECK(stream.push(byte_id(tok, 0x82)).empty());
  // 'A' cannot continue E2 82: the two bytes become one U+FFFD, as in the full decode.
  CHECK(stream.push(tok.token_to_id("A").value()) ==
        "\xEF\xBF\xBD"
        "A");
  CHECK(stream.push(byte_id(tok, 0xF0)).empty());
  CHECK(stream.flush() == "\xEF\xBF\xBD");
  CHECK(stream.flush().empty());
}

TEST_CASE("Streaming detokenizer: special tokens are skipped on request", "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  StreamingDetokenizer keep(tok, false), skip(tok, true);
  CHECK(keep.push(11) == "<|endoftext|>");
  CHECK(skip.push(11).empty());
}
