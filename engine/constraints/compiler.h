// Structured outputs on rank 0: a Constraint compiled against the model's vocabulary into a
// token-level automaton, and a per-request matcher that masks each step's logits. Built on
// XGrammar (cmake/xgrammar.cmake): regexes and JSON schemas become grammars, grammars become a
// pushdown automaton whose per-state token masks are precomputed over a byte trie of the
// vocabulary (docs/structured-outputs.md).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/constraints/constraint.h"

namespace saker {

class Tokenizer;

// A constraint that cannot be compiled: what() says why, field() names where it came from.
class ConstraintError : public std::invalid_argument {
 public:
  ConstraintError(std::string field, const std::string& message)
      : std::invalid_argument(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

struct CompiledConstraint;  // the compiled automaton (shared, immutable)

// Compiles constraints for one vocabulary; thread-safe (frontends compile at ingress, the engine
// again on add: the cache answers the second time). Compilations are cached by kind and text.
class ConstraintCompiler {
 public:
  // The vocabulary is the tokenizer's decoded bytes per id (special tokens never allowed),
  // padded to `vocab_size`; a constraint allows `eos_ids` exactly when its automaton accepts.
  ConstraintCompiler(const Tokenizer& tokenizer, std::int64_t vocab_size,
                     std::vector<std::int64_t> eos_ids);
  ~ConstraintCompiler();
  ConstraintCompiler(const ConstraintCompiler&) = delete;
  ConstraintCompiler& operator=(const ConstraintCompiler&) = delete;

  // Throws ConstraintError naming the field and the problem (an unsupported JSON schema keyword
  // by name and path, a regex or grammar syntax error with xgrammar's message).
  std::shared_ptr<const CompiledConstraint> compile(const Constraint& c) const;
  std::int64_t vocab_size() const { return vocab_size_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::int64_t vocab_size_;
};

// The fewest tokens known to complete the constraint from an empty output (the budget rule's
// minimum; a request with fewer max_new_tokens is refused). Empty when no closing was found.
std::optional<std::int64_t> tokens_to_close(const CompiledConstraint& c);

// One request's position in its constraint's automaton, kept closable within the request's
// token budget (the budget rule, docs/structured-outputs.md): the matcher holds a planned
// closing that fits the tokens left; a token after which no closing fits is replaced by the
// plan's next token, and once only the plan fits, only its next token is allowed.
class ConstraintMatcher {
 public:
  static constexpr std::int64_t kUnbounded = std::numeric_limits<std::int64_t>::max();

  explicit ConstraintMatcher(std::shared_ptr<const CompiledConstraint> c);
  ~ConstraintMatcher();
  ConstraintMatcher(ConstraintMatcher&&) noexcept;
  ConstraintMatcher& operator=(ConstraintMatcher&&) noexcept;

  // Sets every token the automaton does not allow next to -inf (logits: the full vocabulary
  // row). `left`: the tokens the request may still generate, this one included. Returns how
  // many tokens stay allowed.
  std::int64_t mask(std::span<float> logits, std::int64_t left = kUnbounded);
  // Advances over the chosen token and returns the token taken: `token`, or, when no closing
  // found after it fits in `left - 1` tokens, the plan's next token (an end token when the
  // output was already complete). -1 (state unchanged) if `token` was not allowed.
  std::int32_t advance(std::int32_t token, std::int64_t left = kUnbounded);
  // advance() without a budget: whether the token was allowed.
  bool accept(std::int32_t token) { return advance(token) == token; }
  // Whether the automaton accepted an end token: the output is complete.
  bool terminated() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace saker
