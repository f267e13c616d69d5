#include "engine/tokenizer/utf8.h"

namespace saker::utf8 {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

enum class Unit { kValid, kInvalid, kTruncated };

struct Scan {
  Unit kind;
  std::size_t length;  // bytes consumed: the character, or the maximal ill-formed subpart
};

// Allowed range of the second byte after a lead byte (Unicode table 3-7); later bytes are 80..BF.
bool second_byte_ok(unsigned char lead, unsigned char b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

std::size_t expected_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;  // continuation byte, C0, C1, F5..FF: never a lead
}

Scan scan(std::string_view s, std::size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const std::size_t need = expected_length(lead);
  if (need == 1) return {Unit::kValid, 1};
  if (need == 0) return {Unit::kInvalid, 1};
  std::size_t n = 1;
  for (; n < need; ++n) {
    if (i + n >= s.size()) return {Unit::kTruncated, n};
    const auto b = static_cast<unsigned char>(s[i + n]);
    const bool ok = n == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {Unit::kInvalid, n};
  }
  return {Unit::kValid, need};
}

}  // namespace

std::size_t char_length(std::string_view s, std::size_t i) {
  const std::size_t n = expected_length(static_cast<unsigned char>(s[i]));
  return n == 0 || i + n > s.size() ? 1 : n;
}

bool is_valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const Scan u = scan(s, i);
    if (u.kind != Unit::kValid) return false;
    i += u.length;
  }
  return true;
}

void append_lossy(std::string_view s, std::string& out) {
  std::size_t run = 0;  // start of the pending run of valid bytes, copied in one go
  std::size_t i = 0;
  while (i < s.size()) {
    const Scan u = scan(s, i);
    if (u.kind == Unit::kValid) {
      i += u.length;
      continue;
    }
    out.append(s.substr(run, i - run));
    out.append(kReplacement);
    i += u.length;
    run = i;
  }
  out.append(s.substr(run));
}

std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_lossy(s, out);
  return out;
}

std::size_t stable_prefix(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const Scan u = scan(s, i);
    if (u.kind == Unit::kTruncated) return i;
    i += u.length;
  }
  return i;
}

void append_code_point(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace saker::utf8
