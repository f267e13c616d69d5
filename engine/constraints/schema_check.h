// The JSON-schema keywords saker refuses rather than ignore: XGrammar skips some keywords
// silently (not, if/then/else, uniqueItems, contains, ...), which would let through outputs the
// schema forbids. A request naming one gets a 400 naming the keyword and where it is.
#pragma once

#include <string>

namespace saker {

// Throws ConstraintError (constraints/compiler.h) when `schema` is not JSON, not a schema
// (an object or a boolean), or uses a keyword saker cannot enforce.
void check_json_schema(const std::string& schema, const std::string& field);

}  // namespace saker
