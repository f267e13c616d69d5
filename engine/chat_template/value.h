// A Jinja2 runtime value with Python semantics (str(), truthiness, ==), enough for chat templates.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace saker::jinja {

struct Value;
using List = std::vector<Value>;
// Python dicts keep insertion order, which tojson and iteration show; chat dicts are small.
using Dict = std::vector<std::pair<std::string, Value>>;

// jinja2's default Undefined: prints empty, falsy, iterates as empty; the name is for errors.
struct Undefined {
  std::string name;
};
struct None {};
// namespace(...): a mutable attribute bag shared by reference, so loops can update it.
struct Namespace {
  Dict attrs;
};

struct Value {
  std::variant<Undefined, None, bool, std::int64_t, double, std::string, std::shared_ptr<List>,
               std::shared_ptr<Dict>, std::shared_ptr<Namespace>>
      v;
  // Containers nested within this one (0 for a scalar), counted when a list, dict or namespace is
  // made: a namespace never holds a namespace, so this stays a bound when one changes.
  int depth = 0;
  bool has_namespace = false;  // a namespace is this value or is within it

  Value() : v(Undefined{}) {}
  Value(None) : v(None{}) {}
  Value(bool b) : v(b) {}
  Value(std::int64_t i) : v(i) {}
  Value(int i) : v(std::int64_t{i}) {}
  Value(double d) : v(d) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(const char* s) : v(std::string(s)) {}
  // Throw ChatTemplateError past kMaxValueDepth (limits.h).
  Value(List l);
  Value(Dict d);
  static Value make_namespace(Dict attrs);  // throws when an attribute holds a namespace
  static Value undefined(std::string name) {
    Value r;
    r.v = Undefined{std::move(name)};
    return r;
  }

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<None>(v); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_int() const { return std::holds_alternative<std::int64_t>(v); }
  bool is_number() const { return is_int() || std::holds_alternative<double>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v); }
  const std::string& str() const { return std::get<std::string>(v); }
  const List& list() const { return *std::get<std::shared_ptr<List>>(v); }
  const Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(v); }
  double as_double() const;  // ints and floats

  bool truthy() const;
  std::string to_str() const;  // Python str()
  std::string repr() const;    // Python repr(), for lists and dicts printed whole
  std::string type_name() const;
};

bool equals(const Value& a, const Value& b);
// json.dumps(x, ensure_ascii=False) with its default separators: transformers' tojson filter.
std::string to_json(const Value& v, int indent = -1, int depth = 0);
// Looks a key up in a dict; nullptr when absent.
const Value* dict_find(const Dict& d, const std::string& key);
// Python's repr() of a float: shortest round-trip digits, exponent form outside 1e-4..1e16.
std::string format_float(double d);

}  // namespace saker::jinja
