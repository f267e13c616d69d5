// What one render of a chat template may build and do. Templates come from a model's directory,
// but they walk request data (messages, tools), so every recursion and every growth is bounded;
// past a bound a render fails with a ChatTemplateError naming it, never a crash or a hang.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/chat_template/error.h"

namespace saker::jinja {

// Bytes of one string a template builds, and of its whole output. jinja2's sandbox (which
// transformers renders in) bounds range() only; these go further, so that no render can take all
// memory.
inline constexpr std::int64_t kMaxBuiltBytes = std::int64_t{1} << 24;
// Items of one list a template builds (split, a string iterated by code point, list + list).
inline constexpr std::int64_t kMaxBuiltItems = std::int64_t{1} << 20;
// Loop iterations in one render: nested loops must not run for hours (each costs ~1-2 us, and a
// real template loops over the messages a few times).
inline constexpr std::int64_t kMaxLoopIterations = std::int64_t{1} << 18;
// Nesting of the parsed template (expressions within expressions, blocks within blocks): the
// parser, the evaluator and the tree's destructor recurse this deep.
inline constexpr int kMaxNesting = 100;
// Nesting of a value (lists and dicts within each other): printing, comparing, tojson and the
// destructor recurse this deep. Request data arrives at most 64 deep (the JSON ingress bound).
inline constexpr int kMaxValueDepth = 128;

inline void check_built_bytes(std::size_t n, const char* what) {
  if (static_cast<std::int64_t>(n) > kMaxBuiltBytes)
    throw ChatTemplateError(std::string("chat template: ") + what + " would be longer than " +
                            std::to_string(kMaxBuiltBytes) + " bytes");
}

inline void check_built_items(std::size_t n, const char* what) {
  if (static_cast<std::int64_t>(n) > kMaxBuiltItems)
    throw ChatTemplateError(std::string("chat template: ") + what + " would have more than " +
                            std::to_string(kMaxBuiltItems) + " items");
}

}  // namespace saker::jinja
