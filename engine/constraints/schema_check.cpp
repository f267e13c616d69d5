#include "engine/constraints/schema_check.h"

#include <array>
#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/bounded_json.h"
#include "engine/constraints/compiler.h"
#include "engine/constraints/repetitions.h"

namespace saker {
namespace {

using json = nlohmann::json;

// Keywords that constrain the output but that the automaton cannot (or XGrammar does not)
// enforce.
constexpr std::array<std::string_view, 13> kRefused = {"not",
                                                       "if",
                                                       "then",
                                                       "else",
                                                       "dependentRequired",
                                                       "dependentSchemas",
                                                       "dependencies",
                                                       "uniqueItems",
                                                       "contains",
                                                       "minContains",
                                                       "maxContains",
                                                       "$dynamicRef",
                                                       "$recursiveRef"};

// Keywords whose value is one subschema, a list of them, or a map of them.
constexpr std::array<std::string_view, 6> kOne = {"additionalProperties", "items",
                                                  "propertyNames",        "unevaluatedProperties",
                                                  "unevaluatedItems",     "additionalItems"};
constexpr std::array<std::string_view, 4> kList = {"anyOf", "oneOf", "allOf", "prefixItems"};
constexpr std::array<std::string_view, 4> kMap = {"properties", "patternProperties", "$defs",
                                                  "definitions"};

template <std::size_t N>
bool in(const std::array<std::string_view, N>& a, std::string_view k) {
  for (const auto s : a)
    if (s == k) return true;
  return false;
}

// `repetitions`: the counted repetitions of the schema's patterns so far (repetitions.h).
void walk(const json& s, const std::string& path, const std::string& field, int depth,
          std::int64_t& repetitions) {
  if (depth > 64) throw ConstraintError(field, field + ": the schema nests deeper than 64 levels");
  if (s.is_boolean()) return;
  if (!s.is_object())
    throw ConstraintError(field, field + ": the schema at " + path +
                                     " must be an object or a boolean, got " + s.dump());
  for (const auto& [k, v] : s.items()) {
    const std::string at = path + "/" + k;
    if (k == "pattern" && v.is_string())
      count_repetitions(v.get_ref<const std::string&>(), RepetitionSyntax::kRegex, field,
                        repetitions);
    if (k == "patternProperties" && v.is_object())
      for (const auto& [regex, sub] : v.items())
        count_repetitions(regex, RepetitionSyntax::kRegex, field, repetitions);
    if (in(kRefused, k))
      throw ConstraintError(
          field, field + ": JSON schema keyword `" + k + "` (at " + at + ") is not supported");
    if (k == "multipleOf" && !(s.contains("type") && s["type"] == "integer"))
      throw ConstraintError(field, field + ": JSON schema keyword `multipleOf` (at " + at +
                                       ") is supported for type integer only");
    if (in(kOne, k) && !v.is_array()) {
      walk(v, at, field, depth + 1, repetitions);
    } else if (in(kList, k) || (k == "items" && v.is_array())) {
      if (!v.is_array())
        throw ConstraintError(field, field + ": `" + k + "` (at " + at + ") must be a list");
      for (std::size_t i = 0; i < v.size(); ++i)
        walk(v[i], at + "/" + std::to_string(i), field, depth + 1, repetitions);
    } else if (in(kMap, k)) {
      if (!v.is_object())
        throw ConstraintError(field, field + ": `" + k + "` (at " + at + ") must be an object");
      for (const auto& [name, sub] : v.items())
        walk(sub, at + "/" + name, field, depth + 1, repetitions);
    }
  }
}

}  // namespace

void check_json_schema(const std::string& schema, const std::string& field) {
  json s;
  try {
    s = parse_bounded_json<json>(schema);
  } catch (const JsonTooDeep& e) {
    throw ConstraintError(field, field + ": the JSON schema is " + e.what());
  } catch (const json::parse_error& e) {
    throw ConstraintError(field, field + ": the JSON schema is not valid JSON: " + e.what());
  }
  std::int64_t repetitions = 0;
  walk(s, "#", field, 0, repetitions);
}

}  // namespace saker
