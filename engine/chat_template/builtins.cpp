#include "engine/chat_template/builtins.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "engine/chat_template/error.h"
#include "engine/chat_template/limits.h"

namespace saker::jinja {
namespace {

const char* kPyWhitespace = " \t\n\r\v\f\x1c\x1d\x1e\x1f";

[[noreturn]] void fail(const std::string& what) {
  throw ChatTemplateError("chat template: " + what);
}

std::string strip(const std::string& s, bool left, bool right, const std::string& chars) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && chars.find(s[b]) != std::string::npos) ++b;
  if (right)
    while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}

std::string map_chars(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalize(const std::string& s) {
  std::string out = map_chars(s, [](int c) { return std::tolower(c); });
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
    start = !std::isalnum(u);
  }
  return out;
}

List split(const std::string& s, const Value* sep, std::int64_t maxsplit) {
  List out;
  if (!sep || sep->is_none()) {  // runs of whitespace, no empty pieces
    size_t i = 0;
    while (true) {
      i = s.find_first_not_of(kPyWhitespace, i);
      if (i == std::string::npos) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
        out.emplace_back(strip(s.substr(i), false, true, kPyWhitespace));
        break;
      }
      size_t e = s.find_first_of(kPyWhitespace, i);
      out.emplace_back(s.substr(i, e - i));
      check_built_items(out.size(), "the result of split");
      i = e;
    }
    return out;
  }
  // str() of anything else would throw std::bad_variant_access, not ChatTemplateError.
  if (!sep->is_string()) fail("split: expected a string, got " + sep->type_name());
  const std::string& d = sep->str();
  if (d.empty()) fail("split(): empty separator");
  size_t i = 0;
  for (;;) {
    size_t e = s.find(d, i);
    if (e == std::string::npos ||
        (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit))
      break;
    out.emplace_back(s.substr(i, e - i));
    check_built_items(out.size(), "the result of split");
    i = e + d.size();
  }
  out.emplace_back(s.substr(i));
  return out;
}

std::string replace(const std::string& s, const std::string& a, const std::string& b,
                    std::int64_t count) {
  std::string out;
  size_t i = 0;
  for (std::int64_t n = 0; count < 0 || n < count; ++n) {
    size_t e = a.empty() ? (i <= s.size() ? i : std::string::npos) : s.find(a, i);
    if (e == std::string::npos || (a.empty() && e >= s.size() + (n == 0 ? 1 : 0))) break;
    out += s.substr(i, e - i) + b;
    check_built_bytes(out.size(), "the result of replace");
    if (a.empty()) {
      if (e < s.size()) out += s[e];
      i = e + 1;
    } else {
      i = e + a.size();
    }
  }
  if (i <= s.size()) out += s.substr(i);
  return out;
}

const std::string& want_str(const Value& v, const char* what) {
  if (!v.is_string()) fail(std::string(what) + ": expected a string, got " + v.type_name());
  return v.str();
}

std::int64_t want_int(const Value& v, const char* what) {
  if (!v.is_int()) fail(std::string(what) + ": expected an integer, got " + v.type_name());
  return std::get<std::int64_t>(v.v);
}

const Value* arg(const std::vector<Value>& args, const Dict& kwargs, size_t pos, const char* name) {
  if (pos < args.size()) return &args[pos];
  return dict_find(kwargs, name);
}

Value attribute(const Value& v, const std::string& attr) {
  if (v.is_dict())
    if (const Value* f = dict_find(v.dict(), attr)) return *f;
  return Value::undefined(attr);
}

}  // namespace

List iterate(const Value& v) {
  if (v.is_undefined()) return {};
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    List keys;
    for (const auto& kv : v.dict()) keys.emplace_back(kv.first);
    return keys;
  }
  if (v.is_string()) {  // by code point, as Python does
    List out;
    const std::string& s = v.str();
    for (size_t i = 0; i < s.size();) {
      size_t n = 1;
      while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
      out.emplace_back(s.substr(i, n));
      check_built_items(out.size(), "a string iterated by character");
      i += n;
    }
    return out;
  }
  fail("'" + v.type_name() + "' object is not iterable");
}

namespace {

// The filters, one function each, looked up by name. `name` is the name called (some functions
// serve two), for the result or the error messages.
struct FilterCall {
  const std::string& name;
  const Value& v;
  const std::vector<Value>& args;
  const Dict& kwargs;
};
using Filter = Value (*)(const FilterCall&);

Value filter_default(const FilterCall& f) {
  const Value* dflt = arg(f.args, f.kwargs, 0, "default_value");
  const Value* boolean = arg(f.args, f.kwargs, 1, "boolean");
  const bool use = f.v.is_undefined() || (boolean && boolean->truthy() && !f.v.truthy());
  return use ? (dflt ? *dflt : Value("")) : f.v;
}

Value filter_length(const FilterCall& f) {
  const Value& v = f.v;
  if (v.is_string()) {  // code points, counted in place
    std::int64_t n = 0;
    for (const char c : v.str()) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }
  if (v.is_undefined() || v.is_list() || v.is_dict())
    return static_cast<std::int64_t>(iterate(v).size());
  fail("object of type '" + v.type_name() + "' has no len()");
}

Value filter_tojson(const FilterCall& f) {
  const Value* indent = arg(f.args, f.kwargs, 0, "indent");
  std::int64_t n = -1;
  if (indent && !indent->is_none()) {
    n = want_int(*indent, "tojson");
    // Each level repeats the indent: a huge one builds gigabytes from a small value.
    if (n < 0 || n > 64) fail("tojson: indent " + std::to_string(n) + " is outside 0..64");
  }
  std::string out = to_json(f.v, static_cast<int>(n));
  check_built_bytes(out.size(), "the result of tojson");
  return out;
}

Value filter_first_last(const FilterCall& f) {
  List items = iterate(f.v);
  if (items.empty()) return Value::undefined(f.name);
  return f.name == "first" ? items.front() : items.back();
}

Value filter_list(const FilterCall& f) {
  return iterate(f.v);
}

Value filter_reverse(const FilterCall& f) {
  if (f.v.is_string()) {
    std::string s = f.v.str();
    std::reverse(s.begin(), s.end());
    return s;
  }
  List items = iterate(f.v);
  std::reverse(items.begin(), items.end());
  return items;
}

Value filter_join(const FilterCall& f) {
  const Value* sep = arg(f.args, f.kwargs, 0, "d");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(f.v)) {
    if (!first && sep) out += sep->to_str();
    out += item.to_str();
    check_built_bytes(out.size(), "the result of join");
    first = false;
  }
  return out;
}

Value filter_items(const FilterCall& f) {
  if (f.v.is_undefined()) return List{};
  if (!f.v.is_dict()) fail("items: expected a mapping");
  List out;
  for (const auto& [k, val] : f.v.dict()) out.emplace_back(List{Value(k), val});
  return out;
}

Value filter_select_reject_attr(const FilterCall& f) {
  const std::string& name = f.name;
  const std::vector<Value>& args = f.args;
  if (args.empty()) fail(name + ": missing attribute name");
  const std::string& attr = want_str(args[0], name.c_str());
  List out;
  for (const Value& item : iterate(f.v)) {
    const Value a = attribute(item, attr);
    const bool ok = args.size() > 1 ? apply_test(want_str(args[1], name.c_str()), a,
                                                 {args.begin() + 2, args.end()})
                                    : a.truthy();
    if (ok == (name == "selectattr")) out.push_back(item);
  }
  return out;
}

Value filter_map(const FilterCall& f) {
  const Value* attr = dict_find(f.kwargs, "attribute");
  if (!attr) fail("map: only map(attribute='...') is supported");
  List out;
  for (const Value& item : iterate(f.v)) out.push_back(attribute(item, want_str(*attr, "map")));
  return out;
}

Value filter_int(const FilterCall& f) {
  const Value& v = f.v;
  if (v.is_int()) return v;
  if (v.is_number()) return static_cast<std::int64_t>(v.as_double());
  try {
    return static_cast<std::int64_t>(std::stoll(v.to_str()));
  } catch (const std::exception&) {
    return std::int64_t{0};
  }
}

Value filter_float(const FilterCall& f) {
  if (f.v.is_number()) return f.v.as_double();
  try {
    return std::stod(f.v.to_str());
  } catch (const std::exception&) {
    return 0.0;
  }
}

// The filters that work on str(value), as jinja2's soft_str does: they get it as `s`.
using StringFilter = Value (*)(const std::string& s, const FilterCall&);

Value filter_string(const std::string& s, const FilterCall&) {
  return s;
}

Value filter_trim(const std::string& s, const FilterCall& f) {
  const Value* chars = arg(f.args, f.kwargs, 0, "chars");
  return strip(s, true, true,
               chars && !chars->is_none() ? want_str(*chars, "trim") : kPyWhitespace);
}

Value filter_upper(const std::string& s, const FilterCall&) {
  return map_chars(s, [](int c) { return std::toupper(c); });
}

Value filter_lower(const std::string& s, const FilterCall&) {
  return map_chars(s, [](int c) { return std::tolower(c); });
}

Value filter_capitalize(const std::string& s, const FilterCall&) {
  return capitalize(s);
}

Value filter_title(const std::string& s, const FilterCall&) {
  return title(s);
}

Value filter_replace(const std::string& s, const FilterCall& f) {
  const std::vector<Value>& args = f.args;
  if (args.size() < 2) fail("replace: expected two arguments");
  return replace(s, args[0].to_str(), args[1].to_str(),
                 args.size() > 2 ? want_int(args[2], "replace") : -1);
}

template <typename F>
struct Named {
  std::string_view name;
  F fn;
};

constexpr Named<Filter> kValueFilters[] = {
    {"default", filter_default},
    {"d", filter_default},
    {"length", filter_length},
    {"count", filter_length},
    {"tojson", filter_tojson},
    {"first", filter_first_last},
    {"last", filter_first_last},
    {"list", filter_list},
    {"reverse", filter_reverse},
    {"join", filter_join},
    {"items", filter_items},
    {"selectattr", filter_select_reject_attr},
    {"rejectattr", filter_select_reject_attr},
    {"map", filter_map},
    {"int", filter_int},
    {"float", filter_float},
};

constexpr Named<StringFilter> kStringFilters[] = {
    {"string", filter_string},         {"trim", filter_trim},
    {"upper", filter_upper},           {"lower", filter_lower},
    {"capitalize", filter_capitalize}, {"title", filter_title},
    {"replace", filter_replace},
};

template <typename F, std::size_t N>
F find_filter(const Named<F> (&table)[N], const std::string& name) {
  for (const Named<F>& e : table)
    if (e.name == name) return e.fn;
  return nullptr;
}

}  // namespace

Value apply_filter(const std::string& name, const Value& v, const std::vector<Value>& args,
                   const Dict& kwargs) {
  const FilterCall call{name, v, args, kwargs};
  if (const Filter f = find_filter(kValueFilters, name)) return f(call);
  const std::string s = v.to_str();
  if (const StringFilter f = find_filter(kStringFilters, name)) return f(s, call);
  fail("unsupported filter '" + name + "'");
}

bool apply_test(const std::string& name, const Value& v, const std::vector<Value>& args) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "boolean") return std::holds_alternative<bool>(v.v);
  if (name == "true") return std::holds_alternative<bool>(v.v) && std::get<bool>(v.v);
  if (name == "false") return std::holds_alternative<bool>(v.v) && !std::get<bool>(v.v);
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return std::holds_alternative<double>(v.v);
  if (name == "mapping") return v.is_dict();
  if (name == "sequence" || name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "odd" || name == "even")
    return (want_int(v, name.c_str()) % 2 != 0) == (name == "odd");
  if (name == "divisibleby") {
    if (args.size() != 1) fail("divisibleby: expected one argument");
    const auto d = want_int(args[0], "divisibleby");
    if (d == 0) fail("divisibleby: division by zero");
    return want_int(v, "divisibleby") % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "!=") {
    if (args.size() != 1) fail(name + ": expected one argument");
    return equals(v, args[0]) == (name != "ne" && name != "!=");
  }
  if (name == "in") {
    if (args.size() != 1) fail("in: expected one argument");
    for (const Value& item : iterate(args[0]))
      if (equals(item, v)) return true;
    return false;
  }
  fail("unsupported test '" + name + "'");
}

Value call_method(const Value& obj, const std::string& name, const std::vector<Value>& args) {
  auto opt = [&](size_t i) -> const Value* { return i < args.size() ? &args[i] : nullptr; };
  if (obj.is_string()) {
    const std::string& s = obj.str();
    auto set = [&] {
      return opt(0) && !opt(0)->is_none() ? want_str(*opt(0), name.c_str()) : kPyWhitespace;
    };
    if (name == "strip") return strip(s, true, true, set());
    if (name == "lstrip") return strip(s, true, false, set());
    if (name == "rstrip") return strip(s, false, true, set());
    if (name == "upper") return map_chars(s, [](int c) { return std::toupper(c); });
    if (name == "lower") return map_chars(s, [](int c) { return std::tolower(c); });
    if (name == "capitalize") return capitalize(s);
    if (name == "title") return title(s);
    if (name == "startswith" || name == "endswith") {
      if (args.size() != 1) fail(name + "() takes one argument");
      List options = args[0].is_list() ? args[0].list() : List{args[0]};
      for (const Value& o : options) {
        const std::string& p = want_str(o, name.c_str());
        if (p.size() <= s.size() &&
            (name == "startswith" ? s.compare(0, p.size(), p) == 0
                                  : s.compare(s.size() - p.size(), p.size(), p) == 0))
          return true;
      }
      return false;
    }
    if (name == "split") return split(s, opt(0), opt(1) ? want_int(*opt(1), "split") : -1);
    if (name == "replace") {
      if (args.size() < 2) fail("replace() takes at least two arguments");
      return replace(s, want_str(args[0], "replace"), want_str(args[1], "replace"),
                     args.size() > 2 ? want_int(args[2], "replace") : -1);
    }
    if (name == "join") {
      std::string out;
      bool first = true;
      for (const Value& item : iterate(args.empty() ? Value() : args[0])) {
        out += (first ? "" : s) + want_str(item, "join");
        check_built_bytes(out.size(), "the result of join");
        first = false;
      }
      return out;
    }
    if (name == "find") {
      if (args.size() != 1) fail("find() takes one argument");
      const size_t at = s.find(want_str(args[0], "find"));
      return at == std::string::npos ? std::int64_t{-1} : static_cast<std::int64_t>(at);
    }
  }
  if (obj.is_dict()) {
    if (name == "items") return apply_filter("items", obj, {}, {});
    if (name == "keys") return iterate(obj);
    if (name == "values") {
      List out;
      for (const auto& kv : obj.dict()) out.push_back(kv.second);
      return out;
    }
    if (name == "get") {
      if (args.empty()) fail("get() takes at least one argument");
      if (const Value* f = dict_find(obj.dict(), want_str(args[0], "get"))) return *f;
      return args.size() > 1 ? args[1] : Value(None{});
    }
  }
  fail("'" + obj.type_name() + "' object has no method '" + name + "'");
}

}  // namespace saker::jinja
