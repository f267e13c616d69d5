// The GPT-2 byte-level alphabet: each of the 256 byte values stands for one printable character
// (printable Latin-1 bytes for themselves, the others for U+0100.. in byte order), so that any
// byte string becomes text a BPE vocabulary can hold ("Ġ" is the space byte).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace saker::byte_level {

// UTF-8 of the character that stands for byte b.
std::string_view symbol(std::uint8_t b);

// Appends the symbols of every byte of `bytes`.
void append_symbols(std::string_view bytes, std::string& out);

// Appends the bytes that the characters of `token` stand for. Returns false, leaving `out` as it
// was, when one of them is not a byte symbol.
bool append_bytes(std::string_view token, std::string& out);

}  // namespace saker::byte_level
