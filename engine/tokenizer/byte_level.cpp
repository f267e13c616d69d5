#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace saker::byte_level {
namespace {

constexpr char32_t kSymbolLimit = 0x100 + 68;  // the 68 non-printable bytes go to U+0100..U+0143

struct Table {
  std::array<std::string, 256> symbols;
  std::array<int, kSymbolLimit> byte_of{};  // code point -> byte, -1 when not a symbol

  Table() {
    byte_of.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      utf8::append_code_point(cp, symbols[static_cast<std::size_t>(b)]);
      byte_of[cp] = b;
    }
  }
};

const Table& table() {
  static const Table t;
  return t;
}

}  // namespace

std::string_view symbol(std::uint8_t b) {
  return table().symbols[b];
}

void append_symbols(std::string_view bytes, std::string& out) {
  const Table& t = table();
  for (const char c : bytes) out += t.symbols[static_cast<unsigned char>(c)];
}

bool append_bytes(std::string_view token, std::string& out) {
  const Table& t = table();
  const std::size_t size = out.size();
  for (std::size_t i = 0; i < token.size();) {
    const auto lead = static_cast<unsigned char>(token[i]);
    // Symbols are U+0021..U+0143: one byte, or two bytes with lead C2..C5.
    char32_t cp = kSymbolLimit;
    if (lead < 0x80) {
      cp = lead;
      i += 1;
    } else if (lead >= 0xC2 && lead <= 0xC5 && i + 1 < token.size()) {
      cp = static_cast<char32_t>(((lead & 0x1F) << 6) | (token[i + 1] & 0x3F));
      i += 2;
    }
    if (cp >= kSymbolLimit || t.byte_of[cp] < 0) {
      out.resize(size);
      return false;
    }
    out += static_cast<char>(t.byte_of[cp]);
  }
  return true;
}

}  // namespace saker::byte_level
