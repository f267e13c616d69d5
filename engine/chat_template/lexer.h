// Splits a template into text and tag tokens, applying whitespace control the way transformers'
// jinja2 environment does: trim_blocks, lstrip_blocks, `-` on either side of a tag, and one
// trailing newline of the source dropped (keep_trailing_newline=False).
#pragma once

#include <string>
#include <vector>

namespace saker::jinja {

enum class Tok {
  Text,      // literal output
  ExprOpen,  // {{
  StmtOpen,  // {%
  Close,     // }} or %}
  Name,
  String,  // text holds the unescaped value
  Int,
  Float,
  Op,  // punctuation and operators
  Eof,
};

struct Token {
  Tok kind;
  std::string text;
  int line = 1, col = 1;
};

// Throws ChatTemplateError naming line and column on an unterminated tag or a stray character.
std::vector<Token> lex(const std::string& source);

}  // namespace saker::jinja
