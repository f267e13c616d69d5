#include "engine/chat_template/value.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "engine/chat_template/error.h"
#include "engine/chat_template/limits.h"

namespace saker::jinja {
namespace {

// The depth and namespace flag of a container of `items`, from theirs (O(items), as making the
// container is).
template <typename Items, typename Get>
void measure(Value& into, const Items& items, Get get) {
  int inner = 0;
  for (const auto& item : items) {
    const Value& x = get(item);
    inner = std::max(inner, x.depth);
    into.has_namespace = into.has_namespace || x.has_namespace;
  }
  into.depth = inner + 1;
  if (into.depth > kMaxValueDepth)
    throw ChatTemplateError("chat template: a value nested deeper than " +
                            std::to_string(kMaxValueDepth) + " levels");
}

}  // namespace

Value::Value(List l) : v(std::make_shared<List>(std::move(l))) {
  measure(*this, *std::get<std::shared_ptr<List>>(v),
          [](const Value& x) -> const Value& { return x; });
}

Value::Value(Dict d) : v(std::make_shared<Dict>(std::move(d))) {
  measure(*this, *std::get<std::shared_ptr<Dict>>(v),
          [](const auto& kv) -> const Value& { return kv.second; });
}

Value Value::make_namespace(Dict attrs) {
  for (const auto& [k, x] : attrs)
    if (x.has_namespace)
      throw ChatTemplateError("chat template: namespace attribute '" + k +
                              "' cannot hold a namespace");
  Value r;
  auto ns = std::make_shared<Namespace>();
  ns->attrs = std::move(attrs);
  measure(r, ns->attrs, [](const auto& kv) -> const Value& { return kv.second; });
  r.v = std::move(ns);
  r.has_namespace = true;
  return r;
}

double Value::as_double() const {
  if (is_int()) return static_cast<double>(std::get<std::int64_t>(v));
  return std::get<double>(v);
}

bool Value::truthy() const {
  return std::visit(
      [](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, None>)
          return false;
        else if constexpr (std::is_same_v<T, bool>)
          return x;
        else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>)
          return x != 0;
        else if constexpr (std::is_same_v<T, std::string>)
          return !x.empty();
        else if constexpr (std::is_same_v<T, std::shared_ptr<Namespace>>)
          return true;
        else
          return !x->empty();
      },
      v);
}

std::string format_float(double d) {
  if (d != d) return "nan";
  if (d == 1.0 / 0.0) return "inf";
  if (d == -1.0 / 0.0) return "-inf";
  char buf[64];
  // Shortest round-trip digits in d.ddde±XX form, then laid out the way Python's repr() does.
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') sign = "-", s.erase(0, 1);
  const auto e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  std::string digits = s.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  if (exp < -4 || exp >= 16) {
    std::string m = digits.substr(0, 1);
    if (digits.size() > 1) m += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    return sign + m + ebuf;
  }
  if (exp < 0) return sign + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  const auto int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len)
    return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

static std::string repr_string(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (const unsigned char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == q)
      out += std::string("\\") + static_cast<char>(c);
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else
      out += static_cast<char>(c);
  }
  return out + q;
}

std::string Value::repr() const {
  if (is_string()) return repr_string(str());
  if (is_list()) {
    std::string out = "[";
    for (size_t i = 0; i < list().size(); ++i) out += (i ? ", " : "") + list()[i].repr();
    return out + "]";
  }
  if (is_dict()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, val] : dict()) {
      out += (first ? "" : ", ") + repr_string(k) + ": " + val.repr();
      first = false;
    }
    return out + "}";
  }
  return to_str();
}

std::string Value::to_str() const {
  return std::visit(
      [this](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined>)
          return "";
        else if constexpr (std::is_same_v<T, None>)
          return "None";
        else if constexpr (std::is_same_v<T, bool>)
          return x ? "True" : "False";
        else if constexpr (std::is_same_v<T, std::int64_t>)
          return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>)
          return format_float(x);
        else if constexpr (std::is_same_v<T, std::string>)
          return x;
        else if constexpr (std::is_same_v<T, std::shared_ptr<Namespace>>)
          return "<Namespace>";
        else
          return repr();
      },
      v);
}

std::string Value::type_name() const {
  static const char* names[] = {"undefined", "NoneType", "bool", "int",      "float",
                                "str",       "list",     "dict", "Namespace"};
  return names[v.index()];
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.as_double() == b.as_double();
  // Python: True == 1; bools compare as ints against numbers.
  if (std::holds_alternative<bool>(a.v) && b.is_number())
    return (std::get<bool>(a.v) ? 1.0 : 0.0) == b.as_double();
  if (std::holds_alternative<bool>(b.v) && a.is_number()) return equals(b, a);
  if (a.v.index() != b.v.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (std::holds_alternative<bool>(a.v)) return std::get<bool>(a.v) == std::get<bool>(b.v);
  if (a.is_string()) return a.str() == b.str();
  if (a.is_list()) {
    if (a.list().size() != b.list().size()) return false;
    for (size_t i = 0; i < a.list().size(); ++i)
      if (!equals(a.list()[i], b.list()[i])) return false;
    return true;
  }
  if (a.is_dict()) {
    if (a.dict().size() != b.dict().size()) return false;
    for (const auto& [k, val] : a.dict()) {
      const Value* o = dict_find(b.dict(), k);
      if (!o || !equals(val, *o)) return false;
    }
    return true;
  }
  return std::get<std::shared_ptr<Namespace>>(a.v) == std::get<std::shared_ptr<Namespace>>(b.v);
}

const Value* dict_find(const Dict& d, const std::string& key) {
  for (const auto& [k, v] : d)
    if (k == key) return &v;
  return nullptr;
}

static std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string to_json(const Value& v, int indent, int depth) {
  if (v.is_undefined()) throw ChatTemplateError("tojson: value is undefined");
  if (v.is_none()) return "null";
  if (std::holds_alternative<bool>(v.v)) return std::get<bool>(v.v) ? "true" : "false";
  if (std::holds_alternative<double>(v.v)) {
    const double d = std::get<double>(v.v);
    if (d != d) return "NaN";
    if (d == 1.0 / 0.0) return "Infinity";
    if (d == -1.0 / 0.0) return "-Infinity";
  }
  if (v.is_number()) return v.to_str();
  if (v.is_string()) return json_string(v.str());
  // json.dumps: ", " and ": " without indent; "," plus newline and indentation with one.
  const std::string nl =
      indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ');
  const std::string close_nl =
      indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent * depth), ' ');
  const std::string sep = indent < 0 ? ", " : ",";
  std::string out;
  if (v.is_list()) {
    if (v.list().empty()) return "[]";
    out = "[";
    for (size_t i = 0; i < v.list().size(); ++i)
      out += (i ? sep : "") + nl + to_json(v.list()[i], indent, depth + 1);
    return out + close_nl + "]";
  }
  const Dict& d = v.is_dict() ? v.dict() : std::get<std::shared_ptr<Namespace>>(v.v)->attrs;
  if (d.empty()) return "{}";
  out = "{";
  bool first = true;
  for (const auto& [k, val] : d) {
    out += (first ? "" : sep) + nl + json_string(k) + ": " + to_json(val, indent, depth + 1);
    first = false;
  }
  return out + close_nl + "}";
}

}  // namespace saker::jinja
