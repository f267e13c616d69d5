// Structured-output test helpers: the schema suite (tests/fixtures/structured) and a standard
// JSON-schema validator's verdict (valijson, draft 7; the suite's schemas use nothing newer).
#pragma once

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

namespace saker::test {

// valijson's verdict, with its errors for the message.
template <typename SchemaJson, typename DocJson>
std::string validation_errors(const SchemaJson& schema_in, const DocJson& doc_in) {
  // valijson's adapter reads nlohmann::json; the suite is kept in order (ordered_json).
  const auto schema = nlohmann::json::parse(schema_in.dump());
  const auto doc = nlohmann::json::parse(doc_in.dump());
  valijson::Schema s;
  valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema);
  parser.populateSchema(schema_adapter, s);
  valijson::Validator v;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter doc_adapter(doc);
  if (v.validate(s, doc_adapter, &results)) return {};
  valijson::ValidationResults::Error e;
  std::string out;
  while (results.popError(e)) {
    for (const auto& c : e.context) out += c;
    out += ": " + e.description + "; ";
  }
  return out.empty() ? "invalid" : out;
}

// In file order, keys included: schemas reach the compiler as clients send them.
inline nlohmann::ordered_json schema_suite() {
  std::ifstream in(std::string(SAKER_FIXTURES_DIR) + "/structured/schemas.json");
  return nlohmann::ordered_json::parse(in);
}

// Schemas of the suite that the 384-token fixture model closes well within 220 tokens (bounded
// strings and arrays), for the tests that run it through the engine.
inline const std::vector<std::string> kEngineSchemas = {
    "flat object",   "nested object", "array of objects", "recursive tree",
    "anyOf objects", "product",       "unicode keys",     "date pattern"};

inline nlohmann::ordered_json suite_schema(const std::string& name) {
  for (const nlohmann::ordered_json& e : schema_suite())
    if (e["name"] == name) return e["schema"];
  throw std::invalid_argument("no schema named " + name + " in the suite");
}

}  // namespace saker::test
