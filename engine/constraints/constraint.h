// A request's structured-output constraint as the frontends spell it (OpenAI response_format,
// vLLM guided_* / structured_outputs, TGI grammar), before compilation (constraints/compiler.h).
// Plain data: it travels in a BatchRequest on rank 0 only.
#pragma once

#include <string>
#include <vector>

namespace saker {

struct Constraint {
  enum class Kind {
    kNone,
    kJsonObject,  // any JSON object (response_format json_object)
    kJsonSchema,  // `text` is a JSON schema
    kRegex,       // `text` is a regular expression the whole output matches
    kChoice,      // the output is exactly one of `choices`
    kGrammar,     // `text` is a GBNF grammar (xgrammar's EBNF dialect), root rule `root`
  };
  Kind kind = Kind::kNone;
  std::string text;
  std::vector<std::string> choices;
  // Where the request gave it ("response_format", "guided_json", "grammar", ...): errors name it.
  std::string field;

  bool active() const { return kind != Kind::kNone; }
};

const char* constraint_kind_name(Constraint::Kind k);

}  // namespace saker
