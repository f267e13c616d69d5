// The tokenizer (engine/tokenizer) on Falcon's real tokenizer.json (../shared, else the
// GPT-2-style fixture). The first byte picks the mode:
//   even: the rest is text. encode, then decode; for valid UTF-8 whose bytes all have a symbol
//         in the vocabulary (Falcon lacks 28, docs/tokenizer.md), decode(encode(s)) == s.
//   odd:  the rest is ids (2 bytes each, some unknown or negative): decode, with and without
//         special tokens, and the streaming detokenizer, whose pieces must be valid UTF-8 and
//         add up to the decode (its documented contract).
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

using namespace saker;

namespace {

struct Rig {
  Tokenizer tok = load();
  std::array<bool, 256> has_symbol{};

  Rig() {
    for (int b = 0; b < 256; ++b)
      has_symbol[b] = tok.token_to_id(byte_level::symbol(static_cast<std::uint8_t>(b))).has_value();
  }
  static Tokenizer load() {
    const std::filesystem::path falcon =
        std::filesystem::path(SAKER_SHARED_DIR) / "models/falcon-tokenizer/tokenizer.json";
    if (std::filesystem::exists(falcon)) return Tokenizer::load(falcon);
    return Tokenizer::load(std::string(SAKER_FIXTURES_DIR) +
                           "/tokenizers/gpt2style/tokenizer.json");
  }
};

const Rig& rig() {
  static const Rig r;
  return r;
}

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), written here
// rather than taken from the tokenizer so that the property does not trust what it tests.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

[[noreturn]] void fail(const char* what, std::string_view a, std::string_view b) {
  std::fprintf(stderr, "%s\n  got:  ", what);
  for (unsigned char c : a) std::fprintf(stderr, "%02x ", c);
  std::fprintf(stderr, "\n  want: ");
  for (unsigned char c : b) std::fprintf(stderr, "%02x ", c);
  std::fprintf(stderr, "\n");
  std::abort();
}

void check_stream(const Tokenizer& tok, const std::vector<std::int32_t>& ids, bool skip) {
  StreamingDetokenizer stream(tok, skip);
  std::string all;
  for (const std::int32_t id : ids) {
    const std::string piece = stream.push(id);
    if (!valid_utf8(piece)) fail("a streamed piece is not valid UTF-8", piece, "");
    all += piece;
  }
  const std::string rest = stream.flush();
  if (!valid_utf8(rest)) fail("the flushed rest is not valid UTF-8", rest, "");
  all += rest;
  const std::string whole = tok.decode(ids, skip);
  if (all != whole) fail("streamed pieces differ from decode", all, whole);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const Rig& r = rig();
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    const std::vector<std::int32_t> ids = r.tok.encode(rest);
    for (const std::int32_t id : ids)
      if (id < 0 || id >= r.tok.id_limit()) std::abort();
    const std::string text = r.tok.decode(ids);
    if (!valid_utf8(text)) fail("decode is not valid UTF-8", text, "");
    bool representable = valid_utf8(rest);
    for (const unsigned char c : rest) representable = representable && r.has_symbol[c];
    if (representable && text != rest) fail("decode(encode(s)) != s", text, rest);
    check_stream(r.tok, ids, data[0] & 2);
  } else {
    std::vector<std::int32_t> ids;
    const std::int32_t span = r.tok.id_limit() + 16;
    for (std::size_t i = 0; i + 1 < rest.size(); i += 2) {
      const auto v = static_cast<std::uint16_t>(static_cast<unsigned char>(rest[i]) |
                                                static_cast<unsigned char>(rest[i + 1]) << 8);
      ids.push_back(static_cast<std::int32_t>(v % span) - 8);  // a few unknown ones each side
    }
    for (const bool skip : {false, true}) {
      const std::string text = r.tok.decode(ids, skip);
      if (!valid_utf8(text)) fail("decode is not valid UTF-8", text, "");
      check_stream(r.tok, ids, skip);
    }
  }
  return 0;
}
