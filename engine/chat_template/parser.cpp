#include "engine/chat_template/parser.h"

#include <algorithm>
#include <set>

#include "engine/chat_template/error.h"
#include "engine/chat_template/limits.h"

namespace saker::jinja {
namespace {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& t) : t_(t) {}

  std::vector<Stmt> run() {
    std::string end;
    auto body = body_until({}, end);
    return body;
  }

 private:
  // Counts the parser's own recursion (parentheses, `not not`, blocks in blocks), so that input
  // nested past kMaxNesting fails before the stack does.
  class Nest {
   public:
    explicit Nest(Parser& p) : p_(p) {
      if (++p_.nesting_ > kMaxNesting)
        fail("nested deeper than " + std::to_string(kMaxNesting) + " levels", p_.peek());
    }
    ~Nest() { --p_.nesting_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser& p_;
  };

  // Sets a finished node's height from its children's. Chains such as a+b+c+... or a.b.c...
  // deepen the tree without the parser recursing; evaluating and freeing it recurse.
  ExprPtr grown(ExprPtr e) {
    int h = 0;
    for (const auto& a : e->args)
      if (a) h = std::max(h, a->height);
    for (const auto& [k, a] : e->kwargs) h = std::max(h, a->height);
    e->height = h + 1;
    if (e->height > kMaxNesting)
      fail("an expression nested deeper than " + std::to_string(kMaxNesting) + " levels", peek());
    return e;
  }

  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  bool is_op(const char* op, size_t k = 0) const {
    return peek(k).kind == Tok::Op && peek(k).text == op;
  }
  bool is_name(const char* n, size_t k = 0) const {
    return peek(k).kind == Tok::Name && peek(k).text == n;
  }

  [[noreturn]] static void fail(const std::string& what, const Token& at) {
    throw ChatTemplateError("chat template: " + what + " at line " + std::to_string(at.line) +
                            ", column " + std::to_string(at.col));
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::Close:
        return "end of tag";
      case Tok::Eof:
        return "end of template";
      case Tok::String:
        return "string '" + t.text + "'";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got " + describe(peek()), peek());
    next();
  }
  void expect_close() {
    if (peek().kind != Tok::Close) fail("expected end of tag, got " + describe(peek()), peek());
    next();
  }
  std::string expect_name() {
    if (peek().kind != Tok::Name) fail("expected a name, got " + describe(peek()), peek());
    return next().text;
  }

  // Statements up to one of `ends` (a block keyword); its keyword is left in `end`, the tag open.
  std::vector<Stmt> body_until(const std::set<std::string>& ends, std::string& end) {
    const Nest nest(*this);
    std::vector<Stmt> out;
    for (;;) {
      const Token& tok = peek();
      if (tok.kind == Tok::Eof) {
        if (!ends.empty()) fail("missing '{% " + *ends.rbegin() + " %}'", tok);
        return out;
      }
      if (tok.kind == Tok::Text) {
        Stmt s{Stmt::Kind::Text};
        s.text = next().text;
        out.push_back(std::move(s));
      } else if (tok.kind == Tok::ExprOpen) {
        next();
        Stmt s{Stmt::Kind::Output, tok.line, tok.col};
        s.expr = expression();
        expect_close();
        out.push_back(std::move(s));
      } else {  // StmtOpen
        next();
        const Token& kw = peek();
        if (kw.kind != Tok::Name) fail("expected a statement keyword, got " + describe(kw), kw);
        if (ends.count(kw.text)) {
          end = next().text;
          return out;
        }
        statement(out);
      }
    }
  }

  void statement(std::vector<Stmt>& out) {
    const Token& kw = next();
    Stmt s{Stmt::Kind::Text, kw.line, kw.col};
    if (kw.text == "if") {
      s.kind = Stmt::Kind::If;
      ExprPtr cond = expression();
      for (;;) {
        expect_close();
        std::string end;
        auto body = body_until({"elif", "else", "endif"}, end);
        s.branches.emplace_back(std::move(cond), std::move(body));
        if (end == "endif") break;
        if (end == "elif") {
          cond = expression();
          continue;
        }
        expect_close();
        auto else_body = body_until({"endif"}, end);
        s.branches.emplace_back(nullptr, std::move(else_body));
        break;
      }
      expect_close();
    } else if (kw.text == "for") {
      s.kind = Stmt::Kind::For;
      s.targets.push_back(expect_name());
      while (is_op(",")) next(), s.targets.push_back(expect_name());
      if (!is_name("in")) fail("expected 'in' in for loop, got " + describe(peek()), peek());
      next();
      s.expr = or_expr();
      if (is_name("if")) next(), s.cond = or_expr();
      if (is_name("recursive")) fail("unsupported recursive for loop", peek());
      expect_close();
      std::string end;
      s.body = body_until({"else", "endfor"}, end);
      if (end == "else") {
        expect_close();
        s.else_body = body_until({"endfor"}, end);
      }
      expect_close();
    } else if (kw.text == "set") {
      s.kind = Stmt::Kind::Set;
      s.targets.push_back(expect_name());
      if (is_op(".")) {
        next();
        s.kind = Stmt::Kind::SetAttr;
        s.targets.push_back(expect_name());
      }
      if (is_op(",")) fail("unsupported multiple assignment in set", peek());
      if (peek().kind == Tok::Close)
        fail("unsupported block set ({% set x %}...{% endset %})", peek());
      expect_op("=");
      s.expr = expression();
      expect_close();
    } else if (kw.text == "break" || kw.text == "continue") {
      s.kind = kw.text == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue;
      expect_close();
    } else if (kw.text == "generation" || kw.text == "endgeneration") {
      // transformers' assistant-mask marker: renders as its body alone.
      expect_close();
      return;
    } else {
      fail("unsupported statement '" + kw.text + "'", kw);
    }
    out.push_back(std::move(s));
  }

  ExprPtr make(Expr::Kind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line, e->col = at.col;
    return e;
  }
  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, const Token& at) {
    auto e = make(Expr::Kind::Binary, at);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return grown(std::move(e));
  }

  ExprPtr expression() {
    const Nest nest(*this);
    const Token& at = peek();
    ExprPtr e = or_expr();
    while (is_name("if")) {
      next();
      auto c = make(Expr::Kind::Cond, at);
      c->args.push_back(or_expr());
      c->args.push_back(std::move(e));
      if (is_name("else")) {
        next();
        c->args.push_back(expression());
      } else {
        c->args.push_back(nullptr);
      }
      e = grown(std::move(c));
    }
    return e;
  }

  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    while (is_name("or")) {
      const Token& at = next();
      e = binary("or", std::move(e), and_expr(), at);
    }
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    while (is_name("and")) {
      const Token& at = next();
      e = binary("and", std::move(e), not_expr(), at);
    }
    return e;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      const Nest nest(*this);
      auto e = make(Expr::Kind::Unary, next());
      e->name = "not";
      e->args.push_back(not_expr());
      return grown(std::move(e));
    }
    return compare();
  }
  ExprPtr compare() {
    ExprPtr e = math1();
    for (;;) {
      const Token& at = peek();
      std::string op;
      if (at.kind == Tok::Op && (at.text == "==" || at.text == "!=" || at.text == "<" ||
                                 at.text == ">" || at.text == "<=" || at.text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next(), op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next(), next(), op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), math1(), at);
    }
  }
  ExprPtr math1() {
    ExprPtr e = concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      e = binary(at.text, std::move(e), concat(), at);
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = math2();
    while (is_op("~")) {
      const Token& at = next();
      e = binary("~", std::move(e), math2(), at);
    }
    return e;
  }
  ExprPtr math2() {
    ExprPtr e = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      e = binary(at.text, std::move(e), power(), at);
    }
    return e;
  }
  ExprPtr power() {
    ExprPtr e = unary(true);
    while (is_op("**")) {
      const Token& at = next();
      e = binary("**", std::move(e), unary(true), at);
    }
    return e;
  }
  ExprPtr unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Nest nest(*this);
      e = make(Expr::Kind::Unary, peek());
      e->name = next().text;
      e->args.push_back(unary(false));
      e = grown(std::move(e));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    return with_filter ? filters(std::move(e)) : std::move(e);
  }

  ExprPtr primary() {
    const Token& t = peek();
    if (t.kind == Tok::Name) {
      next();
      auto e = make(Expr::Kind::Literal, t);
      if (t.text == "true" || t.text == "True")
        e->value = true;
      else if (t.text == "false" || t.text == "False")
        e->value = false;
      else if (t.text == "none" || t.text == "None")
        e->value = None{};
      else
        e->kind = Expr::Kind::Name, e->name = t.text;
      return e;
    }
    if (t.kind == Tok::String) {
      std::string s;
      while (peek().kind == Tok::String) s += next().text;  // adjacent literals concatenate
      auto e = make(Expr::Kind::Literal, t);
      e->value = std::move(s);
      return e;
    }
    if (t.kind == Tok::Int || t.kind == Tok::Float) {
      next();
      auto e = make(Expr::Kind::Literal, t);
      try {
        if (t.kind == Tok::Int)
          e->value = static_cast<std::int64_t>(std::stoll(t.text));
        else
          e->value = std::stod(t.text);
      } catch (const std::exception&) {
        fail("number out of range", t);
      }
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = expression();
      if (is_op(",")) fail("unsupported tuple", peek());
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      auto e = make(Expr::Kind::List, next());
      while (!is_op("]")) {
        e->args.push_back(expression());
        if (!is_op(",")) break;
        next();
      }
      expect_op("]");
      return grown(std::move(e));
    }
    if (is_op("{")) {
      auto e = make(Expr::Kind::Dict, next());
      while (!is_op("}")) {
        e->args.push_back(expression());
        expect_op(":");
        e->args.push_back(expression());
        if (!is_op(",")) break;
        next();
      }
      expect_op("}");
      return grown(std::move(e));
    }
    fail("unexpected " + describe(t), t);
  }

  void call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail("unsupported argument unpacking", peek());
      if (peek().kind == Tok::Name && is_op("=", 1)) {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), expression());
      } else {
        if (!e.kwargs.empty()) fail("positional argument after keyword argument", peek());
        e.args.push_back(expression());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }

  ExprPtr postfix(ExprPtr e) {
    for (;;) {
      const Token& at = peek();
      if (is_op(".")) {
        next();
        auto a = make(Expr::Kind::Attr, at);
        a->name = expect_name();
        a->args.push_back(std::move(e));
        e = grown(std::move(a));
      } else if (is_op("[")) {
        next();
        ExprPtr idx[3];
        int parts = 0;
        bool slice = false;
        for (;;) {
          if (!is_op(":") && !is_op("]")) idx[parts] = expression();
          if (is_op(":") && parts < 2) {
            next(), ++parts, slice = true;
            continue;
          }
          break;
        }
        expect_op("]");
        auto s = make(slice ? Expr::Kind::Slice : Expr::Kind::Item, at);
        s->args.push_back(std::move(e));
        if (!slice && !idx[0]) fail("empty subscript", at);
        for (int k = 0; k < (slice ? 3 : 1); ++k) s->args.push_back(std::move(idx[k]));
        e = grown(std::move(s));
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call, at);
        c->args.push_back(std::move(e));
        call_args(*c);
        e = grown(std::move(c));
      } else {
        return e;
      }
    }
  }

  ExprPtr filters(ExprPtr e) {
    static const std::set<std::string> stop = {"and", "or", "not", "in", "is", "if", "else"};
    for (;;) {
      const Token& at = peek();
      if (is_op("|")) {
        next();
        auto f = make(Expr::Kind::Filter, at);
        f->name = expect_name();
        f->args.push_back(std::move(e));
        if (is_op("(")) call_args(*f);
        e = grown(std::move(f));
      } else if (is_name("is")) {
        next();
        auto t = make(Expr::Kind::Test, at);
        if (is_name("not")) next(), t->negated = true;
        t->name = expect_name();
        t->args.push_back(std::move(e));
        const Token& a = peek();
        if (is_op("(")) {
          call_args(*t);
        } else if (a.kind == Tok::String || a.kind == Tok::Int || a.kind == Tok::Float ||
                   (a.kind == Tok::Name && !stop.count(a.text))) {
          t->args.push_back(postfix(primary()));
        }
        e = grown(std::move(t));
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call, at);
        c->args.push_back(std::move(e));
        call_args(*c);
        e = grown(std::move(c));
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int nesting_ = 0;
};

}  // namespace

std::vector<Stmt> parse(const std::vector<Token>& tokens) {
  return Parser(tokens).run();
}

}  // namespace saker::jinja
