// UTF-8 helpers: lossy repair of byte strings, as Rust's String::from_utf8_lossy does it, which is
// what Hugging Face tokenizers applies to decoded bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace saker::utf8 {

// Bytes of the UTF-8 character that starts at s[i] (1 for an invalid or truncated byte: callers
// only use it on valid text).
std::size_t char_length(std::string_view s, std::size_t i);

bool is_valid(std::string_view s);

// Appends s to out with every invalid sequence replaced by U+FFFD: one U+FFFD per maximal
// subpart of an ill-formed sequence (Unicode 15, section 3.9, U+FFFD substitution; what Rust's
// from_utf8_lossy and Python's errors="replace" do). A truncated sequence at the end of s also
// becomes one U+FFFD.
void append_lossy(std::string_view s, std::string& out);
std::string lossy(std::string_view s);

// The length of the longest prefix of s that append_lossy can convert without knowing what comes
// next: everything except a trailing sequence that is incomplete but could still become valid.
std::size_t stable_prefix(std::string_view s);

void append_code_point(char32_t cp, std::string& out);

}  // namespace saker::utf8
