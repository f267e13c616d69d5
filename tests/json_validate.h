// Structured-output test helpers: the schema suite (tests/fixtures/structured) and a standard
// JSON-schema validator's verdict (valijson, draft 7; the suite's schemas use nothing newer).
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

namespace saker::test {

// valijson's verdict, with its first error for the message.
inline std::string validation_errors(const nlohmann::json& schema, const nlohmann::json& doc) {
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

inline nlohmann::json schema_suite() {
  std::ifstream in(std::string(SAKER_FIXTURES_DIR) + "/structured/schemas.json");
  return nlohmann::json::parse(in);
}

}  // namespace saker::test
