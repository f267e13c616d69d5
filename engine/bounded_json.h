// Untrusted JSON text (request bodies, IPC and JSONL lines, schemas) parsed with a nesting limit
// that is checked while parsing, before any recursive code (copies, dumps, schema walkers,
// XGrammar's parser) sees the value: a body nested 100,000 deep is a 400, not a stack overflow.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace saker {

// Deep enough for any real request or schema; shallow enough for every recursive walker.
inline constexpr int kMaxJsonDepth = 64;

class JsonTooDeep : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Parses like Json::parse (its parse_error on malformed text); JsonTooDeep when objects and
// arrays nest deeper than `max_depth`.
template <class Json = nlohmann::json>
Json parse_bounded_json(std::string_view text, int max_depth = kMaxJsonDepth) {
  using Event = typename Json::parse_event_t;
  return Json::parse(text, [max_depth](int depth, Event event, Json&) {
    if ((event == Event::object_start || event == Event::array_start) && depth >= max_depth)
      throw JsonTooDeep("JSON nested deeper than " + std::to_string(max_depth) +
                        " levels (the limit)");
    return true;
  });
}

}  // namespace saker
