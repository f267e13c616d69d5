// Generation parameters as the frontends' JSON spells them (DJL / TGI names, with the OpenAI and
// vLLM spellings accepted too), applied to a BatchRequest. Shared by offline jobs and HTTP.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/request.h"

namespace saker::cli {

// Thrown for a parameter that is unknown, of the wrong type or out of range; what() names it.
class ParameterError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Bounds on one request's lists, so that a body cannot multiply into work or memory
// (docs/security.md).
inline constexpr std::size_t kMaxStops = 16;          // stop strings
inline constexpr std::size_t kMaxStopBytes = 1024;    // bytes of one stop string
inline constexpr std::size_t kMaxStopTokenIds = 128;  // stop_token_ids

// Applies `params` (a JSON object) to r. Greedy unless do_sample is true or a temperature > 0 is
// given. Stop strings: `stop_sequences` or `stop` (a string or a list of strings).
void apply_parameters(const nlohmann::ordered_json& params, BatchRequest& r);

}  // namespace saker::cli
