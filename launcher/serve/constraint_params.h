// Structured-output parameters as each API spells them, read into a request's Constraint:
// OpenAI `response_format`, vLLM `guided_json` / `guided_regex` / `guided_choice` /
// `guided_grammar` and `structured_outputs`, TGI `grammar` (docs/structured-outputs.md).
// Shared by the HTTP APIs, the backend socket and offline jobs through apply_parameters.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/request.h"

namespace saker::cli {

// If `key` is a structured-output parameter, reads `v` into r.constraint and returns true;
// throws ParameterError (launcher/serve/request_params.h) for a malformed value or a second
// constraint. Whether the constraint itself compiles is checked at submission.
bool apply_constraint_parameter(const std::string& key, const nlohmann::ordered_json& v,
                                BatchRequest& r);

}  // namespace saker::cli
