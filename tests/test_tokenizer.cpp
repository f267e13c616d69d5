// The tokenizer against Hugging Face tokenizers: every corpus line, ids and text exactly.
#include <atomic>
#include <catch2/catch.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "engine/tokenizer/utf8.h"
#include "tests/tokenizer_fixtures.h"

using saker::Tokenizer;
using saker::test::ReferenceCase;
using Ids = std::vector<std::int32_t>;

namespace {

std::string join(const Ids& ids) {
  std::ostringstream s;
  for (std::size_t i = 0; i < ids.size() && i < 40; ++i) s << (i ? " " : "") << ids[i];
  if (ids.size() > 40) s << " ... (" << ids.size() << " ids)";
  return s.str();
}

// Checks every case and reports the first few that differ, each with its line.
void check_exact(const Tokenizer& tok, const std::vector<ReferenceCase>& cases) {
  int wrong_ids = 0, wrong_text = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const ReferenceCase& c = cases[i];
    const Ids got = tok.encode(c.text);
    if (got != c.ids && ++wrong_ids <= 5)
      FAIL_CHECK("line " << i + 1 << " (" << c.kind << ") " << saker::test::describe(c.text)
                         << "\n  got  " << join(got) << "\n  want " << join(c.ids));
    const bool text_ok = tok.decode(c.ids, false) == c.decoded &&
                         tok.decode(c.ids, true) == c.decoded_skip_special &&
                         tok.decode(got, false) == c.decoded;
    if (!text_ok && ++wrong_text <= 5)
      FAIL_CHECK("line " << i + 1 << " (" << c.kind << "): decode differs for "
                         << saker::test::describe(c.text));
  }
  INFO(cases.size() << " cases");
  CHECK(wrong_ids == 0);
  CHECK(wrong_text == 0);
}

}  // namespace

TEST_CASE("Falcon tokenizer: the examples of docs/falcon.md", "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  CHECK(tok.encode("Hello world") == Ids{9856, 1079});
  CHECK(tok.encode(" Hello") == Ids{23090});
  CHECK(tok.encode("3333") == Ids{22287, 30});
  // Punctuation splits the apostrophe off first, so GPT-2's contraction rules never fire.
  CHECK(tok.encode("it's") == Ids{256, 18, 94});
  CHECK(tok.encode("1234567") == Ids{10963, 27681, 34});  // digits in threes
  CHECK(tok.encode("") == Ids{});
  CHECK(tok.id_limit() == 65024);
  CHECK(tok.id_to_token(11) == "<|endoftext|>");
  CHECK(tok.token_to_id(">>TITLE<<") == 0);
}

TEST_CASE("the longest token's bytes bound every token's, and some token reaches it",
          "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  std::size_t longest = 0;
  std::string bytes;
  for (std::int32_t id = 0; id < tok.id_limit(); ++id) {
    bytes.clear();
    tok.append_token_bytes(id, false, bytes);
    longest = std::max(longest, bytes.size());
  }
  CHECK(tok.max_token_bytes() == longest);
  CHECK(longest > 1);
}

TEST_CASE("Falcon tokenizer: characters whose bytes are not in the vocabulary are dropped",
          "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  CHECK(tok.encode("x\x03y") == Ids{99, 100});  // byte 03 has no symbol
  CHECK(tok.decode(tok.encode("x\x03y")) == "xy");
  CHECK(tok.encode("\x0b").empty());
}

TEST_CASE("Falcon tokenizer: every corpus line as Hugging Face tokenizers does it", "[tokenizer]") {
  check_exact(saker::test::falcon_tokenizer(),
              saker::test::corpus_reference("falcon_reference.jsonl"));
}

TEST_CASE("GPT-2-style tokenizer: every corpus line as Hugging Face tokenizers does it",
          "[tokenizer]") {
  const Tokenizer tok =
      Tokenizer::load(saker::test::kTokenizerFixtures / "gpt2style/tokenizer.json");
  check_exact(tok, saker::test::corpus_reference("gpt2style_reference.jsonl"));
}

TEST_CASE("Other pre-tokenizer configurations and added-token flags", "[tokenizer]") {
  const auto dir = saker::test::kTokenizerFixtures / "variants";
  for (const char* name : {"prefix_space_added_tokens", "split_behaviors",
                           "removed_and_empty_matches", "merged_with_next_invert"}) {
    SECTION(name) {
      const Tokenizer tok = Tokenizer::load(dir / (std::string(name) + ".json"));
      std::vector<ReferenceCase> cases;
      for (const auto& r : saker::test::read_jsonl(dir / (std::string(name) + "_reference.jsonl")))
        cases.push_back(saker::test::reference_case(name, r["text"], r));
      check_exact(tok, cases);
    }
  }
}

TEST_CASE("Falcon tokenizer: encodes from several threads agree with the reference",
          "[tokenizer]") {
  // A fresh tokenizer, so that the threads fill its word cache while they race for it.
  const Tokenizer tok = Tokenizer::load(saker::test::kFalconTokenizer);
  const auto cases = saker::test::corpus_reference("falcon_reference.jsonl");
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < cases.size(); ++i) {
        const ReferenceCase& c = cases[(i + t * 101) % cases.size()];
        if (c.text.size() < 4096 && tok.encode(c.text) != c.ids) ++wrong;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

TEST_CASE("Falcon tokenizer: decode can skip special tokens", "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  const Ids ids{0, 9856, 11, 1079};
  CHECK(tok.decode(ids) == ">>TITLE<<Hello<|endoftext|> world");
  CHECK(tok.decode(ids, true) == "Hello world");
  // Unknown ids are ignored, as tokenizers does.
  CHECK(tok.decode(Ids{9856, 65024, -1, 1 << 30}) == "Hello");
}

TEST_CASE("Invalid UTF-8 is repaired with U+FFFD before encoding", "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  int checked = 0;
  for (const auto& r :
       saker::test::read_jsonl(saker::test::kTokenizerFixtures / "invalid_utf8.jsonl")) {
    const std::string hex = r["hex"];
    std::string bytes;
    for (std::size_t i = 0; i < hex.size(); i += 2)
      bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    INFO("bytes " << hex);
    CHECK(saker::utf8::lossy(bytes) == r["repaired"].get<std::string>());
    CHECK(tok.encode(bytes) == r["falcon_ids"].get<Ids>());
    ++checked;
  }
  CHECK(checked >= 60);
  CHECK(tok.encode("\xE2\x82"
                   "A") == tok.encode("\xEF\xBF\xBD"
                                      "A"));  // one U+FFFD
}

TEST_CASE("Random bytes and random ids never break encode or decode", "[tokenizer]") {
  const Tokenizer& tok = saker::test::falcon_tokenizer();
  std::mt19937 rng(7);
  for (int n = 0; n < 300; ++n) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 256);
    const Ids ids = tok.encode(bytes);
    for (const auto id : ids) REQUIRE((id >= 0 && id < tok.id_limit()));
    CHECK(saker::utf8::is_valid(tok.decode(ids)));
    Ids random_ids(rng() % 32);
    for (auto& id : random_ids) id = static_cast<std::int32_t>(rng() % 70000) - 1000;
    CHECK(saker::utf8::is_valid(tok.decode(random_ids)));
  }
}
