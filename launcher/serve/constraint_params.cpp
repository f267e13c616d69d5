#include "launcher/serve/constraint_params.h"

#include "launcher/serve/request_params.h"

namespace saker::cli {
namespace {

using json = nlohmann::ordered_json;
using Kind = Constraint::Kind;

[[noreturn]] void fail(const std::string& key, const std::string& what) {
  throw ParameterError("parameter `" + key + "` " + what);
}

// A schema given as an object (or a boolean), or as its JSON text.
std::string schema_text(const json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() || v.is_boolean()) return v.dump();
  fail(key, "must be a JSON schema (an object, or its text), got " + v.dump());
}

std::string text(const json& v, const std::string& key) {
  if (!v.is_string()) fail(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

void set(BatchRequest& r, const std::string& key, Kind kind, std::string body = {},
         std::vector<std::string> choices = {}) {
  if (r.constraint.active())
    fail(key, "is a second structured-output constraint (already given: `" + r.constraint.field +
                  "`); a request takes one");
  r.constraint = Constraint{kind, std::move(body), std::move(choices), key};
}

void choice(BatchRequest& r, const std::string& key, const json& v) {
  if (!v.is_array() || v.empty()) fail(key, "must be a non-empty list of strings, got " + v.dump());
  std::vector<std::string> out;
  for (const json& s : v) {
    if (!s.is_string()) fail(key, "must hold strings only, got " + s.dump());
    out.push_back(s.get<std::string>());
  }
  set(r, key, Kind::kChoice, {}, std::move(out));
}

// OpenAI: {"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema",
// "strict", "description"}}.
void response_format(BatchRequest& r, const json& v) {
  const std::string key = "response_format";
  if (!v.is_object() || !v.contains("type") || !v["type"].is_string())
    fail(key, "must be an object with a string `type`, got " + v.dump());
  const std::string type = v["type"].get<std::string>();
  if (type == "text") return;
  if (type == "json_object") return set(r, key, Kind::kJsonObject);
  if (type != "json_schema")
    fail(key, "type must be text, json_object or json_schema, got \"" + type + "\"");
  if (!v.contains("json_schema") || !v["json_schema"].is_object())
    fail(key, "of type json_schema needs a `json_schema` object");
  const json& js = v["json_schema"];
  if (!js.contains("schema")) fail(key, "json_schema needs a `schema`");
  set(r, key, Kind::kJsonSchema, schema_text(js["schema"], key + ".json_schema.schema"));
}

// vLLM's newer form: {"json": schema} | {"regex": ...} | {"choice": [...]} | {"grammar": ...} |
// {"json_object": true}.
void structured_outputs(BatchRequest& r, const json& v) {
  const std::string key = "structured_outputs";
  if (!v.is_object()) fail(key, "must be an object, got " + v.dump());
  for (const auto& [k, x] : v.items()) {
    if (x.is_null()) continue;
    const std::string at = key + "." + k;
    if (k == "json")
      set(r, at, Kind::kJsonSchema, schema_text(x, at));
    else if (k == "regex")
      set(r, at, Kind::kRegex, text(x, at));
    else if (k == "choice")
      choice(r, at, x);
    else if (k == "grammar")
      set(r, at, Kind::kGrammar, text(x, at));
    else if (k == "json_object") {
      if (!x.is_boolean()) fail(at, "must be true or false, got " + x.dump());
      if (x.get<bool>()) set(r, at, Kind::kJsonObject);
    } else {
      fail(at, "is not supported (json, regex, choice, grammar, json_object)");
    }
  }
}

// TGI: {"type": "json" | "regex", "value": ...}.
void tgi_grammar(BatchRequest& r, const json& v) {
  const std::string key = "grammar";
  if (!v.is_object() || !v.contains("type") || !v["type"].is_string() || !v.contains("value"))
    fail(key, "must be {\"type\": \"json\" | \"regex\", \"value\": ...}, got " + v.dump());
  const std::string type = v["type"].get<std::string>();
  if (type == "json")
    set(r, key, Kind::kJsonSchema, schema_text(v["value"], key + ".value"));
  else if (type == "regex")
    set(r, key, Kind::kRegex, text(v["value"], key + ".value"));
  else
    fail(key, "type must be json or regex, got \"" + type + "\"");
}

}  // namespace

bool apply_constraint_parameter(const std::string& key, const json& v, BatchRequest& r) {
  if (key == "response_format")
    response_format(r, v);
  else if (key == "structured_outputs")
    structured_outputs(r, v);
  else if (key == "grammar")
    tgi_grammar(r, v);
  else if (key == "guided_json")
    set(r, key, Kind::kJsonSchema, schema_text(v, key));
  else if (key == "guided_regex")
    set(r, key, Kind::kRegex, text(v, key));
  else if (key == "guided_choice")
    choice(r, key, v);
  else if (key == "guided_grammar")
    set(r, key, Kind::kGrammar, text(v, key));
  else
    return false;
  return true;
}

}  // namespace saker::cli
