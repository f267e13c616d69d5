// Renders parsed statements against a set of global variables.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/chat_template/ast.h"

namespace saker::jinja {

class Evaluator {
 public:
  explicit Evaluator(std::map<std::string, Value> globals) {
    scopes_.push_back(std::move(globals));
  }
  std::string render(const std::vector<Stmt>& body);

 private:
  enum class Flow { Normal, Break, Continue };
  Flow exec(const std::vector<Stmt>& body, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  Value eval(const Expr& e);
  Value eval_dict(const Expr& e);
  Value eval_attr(const Expr& e);
  Value eval_item(const Expr& e);
  Value eval_slice(const Expr& e);
  Value eval_filter_or_test(const Expr& e);
  Value eval_unary(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_call(const Expr& e);
  Value lookup(const std::string& name) const;
  bool defined(const std::string& name) const;

  // One scope per loop iteration, as jinja2 has: `set` inside a loop does not leak out of it.
  std::vector<std::map<std::string, Value>> scopes_;
  std::int64_t iterations_ = 0;  // loop iterations so far in this render (kMaxLoopIterations)
};

}  // namespace saker::jinja
