#include "engine/chat_template/evaluator.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include "engine/chat_template/builtins.h"
#include "engine/chat_template/error.h"
#include "engine/chat_template/limits.h"

namespace saker::jinja {
namespace {

// Bounds on what a template may build (jinja2's sandbox has the same range bound).
constexpr std::int64_t kMaxRange = 100000;

[[noreturn]] void fail(const Expr& at, const std::string& what) {
  throw ChatTemplateError("chat template: " + what + " at line " + std::to_string(at.line) +
                          ", column " + std::to_string(at.col));
}

std::int64_t to_index(std::int64_t i, std::int64_t n) {
  return i < 0 ? i + n : i;
}

// Python's slice semantics on a length-n sequence; returns the chosen indices.
std::vector<std::int64_t> slice_indices(std::int64_t n, const Value& a, const Value& b,
                                        const Value& c) {
  const std::int64_t step = c.is_int() ? std::get<std::int64_t>(c.v) : 1;
  if (step == 0) throw ChatTemplateError("chat template: slice step cannot be zero");
  auto clamp = [&](const Value& v, std::int64_t dflt) {
    if (!v.is_int()) return dflt;
    std::int64_t i = to_index(std::get<std::int64_t>(v.v), n);
    if (step > 0) return std::max<std::int64_t>(0, std::min(i, n));
    return std::max<std::int64_t>(-1, std::min(i, n - 1));
  };
  const std::int64_t start = clamp(a, step > 0 ? 0 : n - 1), stop = clamp(b, step > 0 ? n : -1);
  std::vector<std::int64_t> out;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
  return out;
}

}  // namespace

std::string Evaluator::render(const std::vector<Stmt>& body) {
  std::string out;
  exec(body, out);
  return out;
}

Value Evaluator::lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto f = it->find(name);
    if (f != it->end()) return f->second;
  }
  return Value::undefined(name);
}

bool Evaluator::defined(const std::string& name) const {
  return !lookup(name).is_undefined();
}

Evaluator::Flow Evaluator::exec(const std::vector<Stmt>& body, std::string& out) {
  for (const Stmt& s : body) {
    switch (s.kind) {
      case Stmt::Kind::Text:
        out += s.text;
        check_built_bytes(out.size(), "the rendered text");
        break;
      case Stmt::Kind::Output:
        out += eval(*s.expr).to_str();
        check_built_bytes(out.size(), "the rendered text");
        break;
      case Stmt::Kind::If:
        for (const auto& [cond, branch] : s.branches) {
          if (cond && !eval(*cond).truthy()) continue;
          if (Flow f = exec(branch, out); f != Flow::Normal) return f;
          break;
        }
        break;
      case Stmt::Kind::For:
        if (Flow f = exec_for(s, out); f != Flow::Normal) return f;
        break;
      case Stmt::Kind::Set:
        scopes_.back()[s.targets[0]] = eval(*s.expr);
        break;
      case Stmt::Kind::SetAttr: {
        Value obj = lookup(s.targets[0]);
        auto* ns = std::get_if<std::shared_ptr<Namespace>>(&obj.v);
        if (!ns)
          fail(*s.expr, "can only set attributes of a namespace, not of '" + s.targets[0] + "'");
        Value val = eval(*s.expr);
        // No namespace within a namespace: a cycle (ns.x = ns) would never be freed and would
        // recurse without end when printed; and the depth its values had when made stays a bound.
        if (val.has_namespace)
          fail(*s.expr, "namespace attribute '" + s.targets[1] + "' cannot hold a namespace");
        if (val.depth >= kMaxValueDepth)
          fail(*s.expr, "a value nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
        Dict& attrs = (*ns)->attrs;
        auto it = std::find_if(attrs.begin(), attrs.end(),
                               [&](const auto& kv) { return kv.first == s.targets[1]; });
        if (it != attrs.end())
          it->second = std::move(val);
        else
          attrs.emplace_back(s.targets[1], std::move(val));
        break;
      }
      case Stmt::Kind::Break:
        return Flow::Break;
      case Stmt::Kind::Continue:
        return Flow::Continue;
    }
  }
  return Flow::Normal;
}

Evaluator::Flow Evaluator::exec_for(const Stmt& s, std::string& out) {
  const Value seq = eval(*s.expr);
  if (seq.is_none()) fail(*s.expr, "'NoneType' object is not iterable");
  List items;
  for (Value& item : iterate(seq)) {
    if (s.cond) {  // the filter sees the loop variables, not `loop`
      scopes_.emplace_back();
      if (s.targets.size() == 1)
        scopes_.back()[s.targets[0]] = item;
      else if (item.is_list())
        for (size_t k = 0; k < s.targets.size() && k < item.list().size(); ++k)
          scopes_.back()[s.targets[k]] = item.list()[k];
      const bool keep = eval(*s.cond).truthy();
      scopes_.pop_back();
      if (!keep) continue;
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) {
    scopes_.emplace_back();
    exec(s.else_body, out);
    scopes_.pop_back();
    return Flow::Normal;
  }
  const auto n = static_cast<std::int64_t>(items.size());
  for (std::int64_t i = 0; i < n; ++i) {
    if (++iterations_ > kMaxLoopIterations)
      fail(*s.expr,
           "more than " + std::to_string(kMaxLoopIterations) + " loop iterations in one render");
    scopes_.emplace_back();
    auto& scope = scopes_.back();
    const Value& item = items[static_cast<size_t>(i)];
    if (s.targets.size() == 1) {
      scope[s.targets[0]] = item;
    } else {
      if (!item.is_list() || item.list().size() != s.targets.size())
        fail(*s.expr,
             "cannot unpack loop item into " + std::to_string(s.targets.size()) + " names");
      for (size_t k = 0; k < s.targets.size(); ++k) scope[s.targets[k]] = item.list()[k];
    }
    Dict loop = {
        {"index", i + 1},  {"index0", i},        {"revindex", n - i}, {"revindex0", n - i - 1},
        {"first", i == 0}, {"last", i == n - 1}, {"length", n}};
    if (i > 0) loop.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < n) loop.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
    scope["loop"] = Value(std::move(loop));
    const Flow f = exec(s.body, out);
    scopes_.pop_back();
    if (f == Flow::Break) break;
  }
  return Flow::Normal;
}

Value Evaluator::eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::Literal:
      return e.value;
    case Expr::Kind::Name:
      return lookup(e.name);
    case Expr::Kind::List: {
      List out;
      for (const auto& a : e.args) out.push_back(eval(*a));
      return out;
    }
    case Expr::Kind::Dict:
      return eval_dict(e);
    case Expr::Kind::Attr:
      return eval_attr(e);
    case Expr::Kind::Item:
      return eval_item(e);
    case Expr::Kind::Slice:
      return eval_slice(e);
    case Expr::Kind::Call:
      return eval_call(e);
    case Expr::Kind::Filter:
    case Expr::Kind::Test:
      return eval_filter_or_test(e);
    case Expr::Kind::Unary:
      return eval_unary(e);
    case Expr::Kind::Binary:
      return eval_binary(e);
    case Expr::Kind::Cond:
      if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
      return e.args[2] ? eval(*e.args[2]) : Value::undefined("");
  }
  return {};
}

Value Evaluator::eval_dict(const Expr& e) {
  Dict out;
  for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
    Value k = eval(*e.args[i]);
    if (!k.is_string()) fail(*e.args[i], "only string keys are supported in dict literals");
    out.emplace_back(k.str(), eval(*e.args[i + 1]));
  }
  return out;
}

Value Evaluator::eval_attr(const Expr& e) {
  const Value obj = eval(*e.args[0]);
  if (obj.is_undefined()) fail(e, "'" + std::get<Undefined>(obj.v).name + "' is undefined");
  if (obj.is_dict())
    if (const Value* f = dict_find(obj.dict(), e.name)) return *f;
  if (auto* ns = std::get_if<std::shared_ptr<Namespace>>(&obj.v))
    if (const Value* f = dict_find((*ns)->attrs, e.name)) return *f;
  return Value::undefined(e.name);
}

Value Evaluator::eval_item(const Expr& e) {
  const Value obj = eval(*e.args[0]);
  const Value key = eval(*e.args[1]);
  if (obj.is_undefined()) fail(e, "'" + std::get<Undefined>(obj.v).name + "' is undefined");
  if (obj.is_dict() && key.is_string())
    if (const Value* f = dict_find(obj.dict(), key.str())) return *f;
  if ((obj.is_list() || obj.is_string()) && key.is_int()) {
    // A list is read in place: messages[i] in a loop over the messages must not copy them all.
    const List chars = obj.is_string() ? iterate(obj) : List{};
    const List& items = obj.is_list() ? obj.list() : chars;
    const auto n = static_cast<std::int64_t>(items.size());
    const std::int64_t i = to_index(std::get<std::int64_t>(key.v), n);
    if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
  }
  return Value::undefined(key.to_str());
}

Value Evaluator::eval_slice(const Expr& e) {
  const Value obj = eval(*e.args[0]);
  Value parts[3];
  for (int k = 0; k < 3; ++k)
    if (e.args[k + 1]) parts[k] = eval(*e.args[k + 1]);
  if (!obj.is_list() && !obj.is_string()) fail(e, "cannot slice a '" + obj.type_name() + "'");
  const List items = obj.is_list() ? obj.list() : iterate(obj);
  List out;
  for (auto i :
       slice_indices(static_cast<std::int64_t>(items.size()), parts[0], parts[1], parts[2]))
    out.push_back(items[static_cast<size_t>(i)]);
  if (obj.is_list()) return out;
  std::string s;
  for (const Value& c : out) s += c.str();
  return s;
}

Value Evaluator::eval_filter_or_test(const Expr& e) {
  const Value v = eval(*e.args[0]);
  std::vector<Value> args;
  for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
  Dict kwargs;
  for (const auto& [k, x] : e.kwargs) kwargs.emplace_back(k, eval(*x));
  try {
    if (e.kind == Expr::Kind::Filter) return apply_filter(e.name, v, args, kwargs);
    return apply_test(e.name, v, args) != e.negated;
  } catch (const ChatTemplateError& err) {
    fail(e, std::string(err.what()).substr(15));  // re-raised with the position
  }
}

Value Evaluator::eval_unary(const Expr& e) {
  const Value v = eval(*e.args[0]);
  if (e.name == "not") return !v.truthy();
  if (!v.is_number()) fail(e, "bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
  if (e.name == "+") return v;
  if (v.is_int()) {
    std::int64_t out = 0;
    if (__builtin_sub_overflow(std::int64_t{0}, std::get<std::int64_t>(v.v), &out))
      fail(e, "integer overflow in unary -");
    return out;
  }
  return -v.as_double();
}

Value Evaluator::eval_binary(const Expr& e) {
  const std::string& op = e.name;
  if (op == "and" || op == "or") {
    Value a = eval(*e.args[0]);
    if (a.truthy() == (op == "or")) return a;
    return eval(*e.args[1]);
  }
  const Value a = eval(*e.args[0]);
  const Value b = eval(*e.args[1]);
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "~") {
    std::string x = a.to_str(), y = b.to_str();
    check_built_bytes(x.size() + y.size(), "a string built with ~");
    return x + y;
  }
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) fail(e, "'in <string>' requires a string on the left");
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_list() || b.is_dict() || b.is_undefined()) {
      for (const Value& item : iterate(b)) found = found || equals(item, a);
    } else {
      fail(e, "argument of type '" + b.type_name() + "' is not iterable");
    }
    return found == (op == "in");
  }
  for (const Value* v : {&a, &b})
    if (v->is_undefined()) fail(e, "'" + std::get<Undefined>(v->v).name + "' is undefined");
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int cmp;
    if (a.is_number() && b.is_number())
      cmp = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double();
    else if (a.is_string() && b.is_string())
      cmp = a.str().compare(b.str());
    else
      fail(e, "'" + op + "' not supported between '" + a.type_name() + "' and '" + b.type_name() +
                  "'");
    return op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0;
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      check_built_bytes(a.str().size() + b.str().size(), "a string built with +");
      return a.str() + b.str();
    }
    if (a.is_list() && b.is_list()) {
      check_built_items(a.list().size() + b.list().size(), "a list built with +");
      List out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return out;
    }
  }
  if (op == "*" && (a.is_string() || b.is_string()) && (a.is_int() || b.is_int())) {
    const std::string& s = a.is_string() ? a.str() : b.str();
    const std::int64_t n = std::get<std::int64_t>((a.is_int() ? a : b).v);
    // Bounded like jinja2's sandbox: a template must not build gigabytes.
    if (n > 0 && static_cast<double>(s.size()) * static_cast<double>(n) >
                     static_cast<double>(kMaxBuiltBytes))
      fail(e, "string * " + std::to_string(n) + " would be longer than " +
                  std::to_string(kMaxBuiltBytes) + " bytes");
    std::string out;
    for (std::int64_t k = 0; k < n; ++k) out += s;
    return out;
  }
  if (!a.is_number() || !b.is_number())
    fail(e, "unsupported operand types for " + op + ": '" + a.type_name() + "' and '" +
                b.type_name() + "'");
  const bool ints = a.is_int() && b.is_int();
  const double x = a.as_double(), y = b.as_double();
  if ((op == "/" || op == "//" || op == "%") && y == 0) fail(e, "division by zero");
  if (op == "/") return x / y;
  if (ints) {
    const std::int64_t i = std::get<std::int64_t>(a.v), j = std::get<std::int64_t>(b.v);
    std::int64_t out = 0;
    if (op == "+" || op == "-" || op == "*") {
      const bool over = op == "+"   ? __builtin_add_overflow(i, j, &out)
                        : op == "-" ? __builtin_sub_overflow(i, j, &out)
                                    : __builtin_mul_overflow(i, j, &out);
      if (over) fail(e, "integer overflow in " + op);
      return out;
    }
    if (op == "%" && j == -1) return std::int64_t{0};  // INT64_MIN % -1 would trap
    // Python floors toward negative infinity.
    if (op == "//")
      return static_cast<std::int64_t>(std::floor(static_cast<double>(i) / static_cast<double>(j)));
    if (op == "%") return ((i % j) + j) % j;
    if (op == "**" && j >= 0) return static_cast<std::int64_t>(std::llround(std::pow(x, y)));
  }
  if (op == "+") return x + y;
  if (op == "-") return x - y;
  if (op == "*") return x * y;
  if (op == "//") return std::floor(x / y);
  if (op == "%") return x - y * std::floor(x / y);
  return std::pow(x, y);
}

Value Evaluator::eval_call(const Expr& e) {
  const Expr& callee = *e.args[0];
  std::vector<Value> args;
  for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
  if (callee.kind == Expr::Kind::Attr) {
    const Value obj = eval(*callee.args[0]);
    if (!e.kwargs.empty()) fail(e, "keyword arguments to methods are not supported");
    try {
      return call_method(obj, callee.name, args);
    } catch (const ChatTemplateError& err) {
      fail(e, std::string(err.what()).substr(15));
    }
  }
  if (callee.kind != Expr::Kind::Name || defined(callee.name))
    fail(e, "this expression cannot be called");
  const std::string& fn = callee.name;
  if (fn == "raise_exception") {
    // The template's own message, unadorned: callers show it to the client as is.
    throw ChatTemplateError(args.empty() ? "" : args[0].to_str());
  }
  if (fn == "namespace" || fn == "dict") {
    Dict attrs;
    for (const auto& [k, x] : e.kwargs) attrs.emplace_back(k, eval(*x));
    if (fn == "dict") return attrs;
    return Value::make_namespace(std::move(attrs));
  }
  if (fn == "range") {
    std::int64_t lo = 0, hi = 0, step = 1;
    for (const Value& a : args)
      if (!a.is_int()) fail(e, "range() takes integers");
    if (args.size() == 1)
      hi = std::get<std::int64_t>(args[0].v);
    else if (args.size() >= 2)
      lo = std::get<std::int64_t>(args[0].v), hi = std::get<std::int64_t>(args[1].v);
    if (args.size() == 3) step = std::get<std::int64_t>(args[2].v);
    if (step == 0 || args.empty() || args.size() > 3) fail(e, "bad arguments to range()");
    // As jinja2's sandbox: at most kMaxRange items (and no overflow stepping past hi).
    const long double count = (static_cast<long double>(hi) - lo) / step;
    if (count > kMaxRange) fail(e, "range() of more than " + std::to_string(kMaxRange) + " items");
    List out;
    for (std::int64_t i = lo; step > 0 ? i < hi : i > hi;) {
      out.emplace_back(i);
      if (__builtin_add_overflow(i, step, &i)) break;
    }
    return out;
  }
  if (fn == "strftime_now") {
    if (args.size() != 1 || !args[0].is_string()) fail(e, "strftime_now() takes one format string");
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, args[0].str().c_str(), &tm);
    return std::string(buf, n);
  }
  fail(e, "unknown function '" + fn + "'");
}

}  // namespace saker::jinja
