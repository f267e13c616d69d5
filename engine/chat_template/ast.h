// The parsed template: expressions and statements of the supported Jinja2 subset.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat_template/value.h"

namespace saker::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // value
    Name,     // name
    List,     // args
    Dict,     // args: key, value, key, value...
    Attr,     // args[0].name
    Item,     // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]], any of 1..3 may be null
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..])
    Unary,    // name: "-", "+" or "not"; args[0]
    Binary,   // name: the operator; args[0], args[1]
    Cond,     // args[1] if args[0] else args[2] (args[2] may be null)
  };
  Kind kind;
  int line = 0, col = 0;
  Value value;
  std::string name;
  bool negated = false;
  int height = 1;  // of the tree below and with this node (the parser bounds it: kMaxNesting)
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt {
  enum class Kind { Text, Output, If, For, Set, SetAttr, Break, Continue };
  explicit Stmt(Kind k, int l = 0, int c = 0) : kind(k), line(l), col(c) {}
  Kind kind;
  int line = 0, col = 0;
  std::string text;                  // Text
  ExprPtr expr;                      // Output; Set/SetAttr value; For iterable
  std::vector<std::string> targets;  // For loop variables; Set name; SetAttr object, attribute
  ExprPtr cond;                      // For's `if` filter
  // If: one (condition, body) per if/elif, then else with a null condition.
  std::vector<std::pair<ExprPtr, std::vector<Stmt>>> branches;
  std::vector<Stmt> body, else_body;  // For
};

}  // namespace saker::jinja
