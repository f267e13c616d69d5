// Tokens to statements. Anything outside the subset fails here, at parse time, with its position.
#pragma once

#include <vector>

#include "engine/chat_template/ast.h"
#include "engine/chat_template/lexer.h"

namespace saker::jinja {

std::vector<Stmt> parse(const std::vector<Token>& tokens);

}  // namespace saker::jinja
