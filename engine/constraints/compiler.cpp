#include "engine/constraints/compiler.h"

#include <dlpack/dlpack.h>
#include <xgrammar/xgrammar.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <mutex>
#include <optional>

#include <nlohmann/json.hpp>

#include "engine/constraints/closing.h"
#include "engine/constraints/repetitions.h"
#include "engine/constraints/schema_check.h"
#include "engine/tokenizer/tokenizer.h"

namespace saker {

const char* constraint_kind_name(Constraint::Kind k) {
  switch (k) {
    case Constraint::Kind::kJsonObject:
      return "json_object";
    case Constraint::Kind::kJsonSchema:
      return "json_schema";
    case Constraint::Kind::kRegex:
      return "regex";
    case Constraint::Kind::kChoice:
      return "choice";
    case Constraint::Kind::kGrammar:
      return "grammar";
    case Constraint::Kind::kNone:
      break;
  }
  return "none";
}

struct CompiledConstraint {
  CompiledConstraint(xgrammar::CompiledGrammar g, std::int64_t v, std::shared_ptr<const Speller> sp)
      : grammar(std::move(g)), vocab_size(v), speller(std::move(sp)) {}
  xgrammar::CompiledGrammar grammar;
  std::int64_t vocab_size;
  std::shared_ptr<const Speller> speller;
  // The closing of the empty output, in tokens: found once, on first use (validation), and the
  // plan every matcher starts with.
  mutable std::once_flag planned;
  mutable std::optional<std::vector<std::int32_t>> plan;

  const std::optional<std::vector<std::int32_t>>& initial_plan() const {
    std::call_once(planned, [this] {
      xgrammar::GrammarMatcher m(grammar);
      // Once per constraint, so worth the search for the shortest; bounded because each step is
      // a matcher call, and some regexes (fuzzing found `0-0___+___...9`) make every one of them
      // slow: 2^16 steps took 4.6 s with Falcon's vocabulary, 2^12 find the same closing.
      if (const auto c = find_closing(m, 1 << 12, 512, true)) plan = speller->spell(*c);
    });
    return plan;
  }
};

namespace {

// Each id's bytes as a decode produces them; special tokens decode to nothing, which XGrammar
// takes as "never allowed" (a special token is not text the automaton could match).
std::vector<std::string> decoded_vocab(const Tokenizer& tok, std::int64_t vocab_size) {
  std::vector<std::string> v(static_cast<std::size_t>(vocab_size));
  const std::int32_t limit =
      std::min<std::int32_t>(tok.id_limit(), static_cast<std::int32_t>(vocab_size));
  for (std::int32_t id = 0; id < limit; ++id)
    tok.append_token_bytes(id, true, v[static_cast<std::size_t>(id)]);
  return v;
}

std::vector<std::int32_t> to_int32(const std::vector<std::int64_t>& ids) {
  return {ids.begin(), ids.end()};
}

// `root ::= "a" | "b" ...`, each choice a JSON-escaped literal (the EBNF dialect's escapes).
std::string choice_grammar(const Constraint& c) {
  if (c.choices.empty()) throw ConstraintError(c.field, c.field + ": the list of choices is empty");
  std::string g = "root ::= ";
  for (std::size_t i = 0; i < c.choices.size(); ++i) {
    if (c.choices[i].empty())
      throw ConstraintError(c.field, c.field + ": choice " + std::to_string(i) + " is empty");
    g += (i ? " | " : "") + nlohmann::json(c.choices[i]).dump();
  }
  return g;
}

}  // namespace

struct ConstraintCompiler::State {
  xgrammar::TokenizerInfo info;
  std::shared_ptr<const Speller> speller;
  mutable xgrammar::GrammarCompiler compiler;
  State(const Tokenizer& tok, std::int64_t vocab_size, const std::vector<std::int64_t>& eos)
      : State(decoded_vocab(tok, vocab_size), vocab_size, eos) {}
  State(const std::vector<std::string>& vocab, std::int64_t vocab_size,
        const std::vector<std::int64_t>& eos)
      : info(vocab, xgrammar::VocabType::RAW, static_cast<int>(vocab_size), to_int32(eos)),
        speller(std::make_shared<const Speller>(vocab)),
        // The cache is bounded: a server sent endless distinct schemas must not grow without end
        // (least recently used compilations go first).
        compiler(info, 2, true, std::int64_t{256} << 20) {}
};

ConstraintCompiler::ConstraintCompiler(const Tokenizer& tokenizer, std::int64_t vocab_size,
                                       std::vector<std::int64_t> eos_ids)
    : state_(std::make_unique<State>(tokenizer, vocab_size, eos_ids)), vocab_size_(vocab_size) {}

ConstraintCompiler::~ConstraintCompiler() = default;

std::shared_ptr<const CompiledConstraint> ConstraintCompiler::compile(const Constraint& c) const {
  auto& xc = state_->compiler;
  const auto make = [this](xgrammar::CompiledGrammar g) {
    return std::make_shared<const CompiledConstraint>(std::move(g), vocab_size_, state_->speller);
  };
  std::int64_t repetitions = 0;
  try {
    switch (c.kind) {
      case Constraint::Kind::kJsonObject:
        return make(xc.CompileBuiltinJSONGrammar());
      case Constraint::Kind::kJsonSchema:
        check_json_schema(c.text, c.field);
        // Compact JSON (no free whitespace between tokens): a model cannot spend its budget on
        // spaces, and every output has one spelling.
        return make(xc.CompileJSONSchema(c.text, false, std::nullopt,
                                         std::make_pair(std::string(", "), std::string(": ")),
                                         true));
      case Constraint::Kind::kRegex:
        if (c.text.empty()) throw ConstraintError(c.field, c.field + ": the regex is empty");
        count_repetitions(c.text, RepetitionSyntax::kRegex, c.field, repetitions);
        return make(xc.CompileRegex(c.text));
      case Constraint::Kind::kChoice:
        return make(xc.CompileGrammar(choice_grammar(c)));
      case Constraint::Kind::kGrammar:
        if (c.text.empty()) throw ConstraintError(c.field, c.field + ": the grammar is empty");
        count_repetitions(c.text, RepetitionSyntax::kGrammar, c.field, repetitions);
        return make(xc.CompileGrammar(c.text));
      case Constraint::Kind::kNone:
        break;
    }
  } catch (const ConstraintError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConstraintError(c.field, c.field + ": invalid " +
                                       std::string(constraint_kind_name(c.kind)) + ": " + e.what());
  }
  throw ConstraintError(c.field, c.field + ": no constraint given");
}

struct ConstraintMatcher::State {
  std::shared_ptr<const CompiledConstraint> compiled;
  xgrammar::GrammarMatcher matcher;
  std::vector<std::int32_t> bits;
  std::int64_t shape[1];
  // The planned closing: plan[at..] completes the output from here. `guarded` is off when no
  // closing was found at the start, or for a matcher driven without a budget.
  std::vector<std::int32_t> plan;
  std::size_t at = 0;
  bool guarded = false;
  std::int32_t stop = -1;  // an end token (taken when a complete output would otherwise break)
  explicit State(std::shared_ptr<const CompiledConstraint> c)
      : compiled(std::move(c)),
        matcher(compiled->grammar),
        bits(static_cast<std::size_t>((compiled->vocab_size + 31) / 32)),
        shape{static_cast<std::int64_t>(bits.size())} {
    const auto stops = compiled->grammar.GetTokenizerInfo().GetStopTokenIds();
    if (!stops.empty()) stop = stops.front();
    if (const auto& p = compiled->initial_plan(); p && stop >= 0) {
      plan = *p;
      guarded = true;
    }
  }
  std::size_t rest() const { return plan.size() - at; }
};

std::optional<std::int64_t> tokens_to_close(const CompiledConstraint& c) {
  const auto& p = c.initial_plan();
  if (!p) return std::nullopt;
  return static_cast<std::int64_t>(p->size());
}

ConstraintMatcher::ConstraintMatcher(std::shared_ptr<const CompiledConstraint> c)
    : state_(std::make_unique<State>(std::move(c))) {}
ConstraintMatcher::~ConstraintMatcher() = default;
ConstraintMatcher::ConstraintMatcher(ConstraintMatcher&&) noexcept = default;
ConstraintMatcher& ConstraintMatcher::operator=(ConstraintMatcher&&) noexcept = default;

std::int64_t ConstraintMatcher::mask(std::span<float> logits, std::int64_t left) {
  State& s = *state_;
  const float none = -std::numeric_limits<float>::infinity();
  if (s.guarded && s.rest() > 0 && static_cast<std::int64_t>(s.rest()) >= left) {
    // Only the planned closing still fits: its next token is the only choice.
    const auto keep = static_cast<std::size_t>(s.plan[s.at]);
    const float v = logits[keep];
    std::fill(logits.begin(), logits.end(), none);
    logits[keep] = v;
    return 1;
  }
  DLTensor t{};
  t.data = s.bits.data();
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = 1;
  t.dtype = DLDataType{kDLInt, 32, 1};
  t.shape = s.shape;
  s.matcher.FillNextTokenBitmask(&t);
  const auto V = static_cast<std::int64_t>(logits.size());
  std::int64_t allowed = 0;
  for (std::int64_t w = 0; w * 32 < V; ++w) {
    const auto word = static_cast<std::uint32_t>(s.bits[static_cast<std::size_t>(w)]);
    const std::int64_t end = std::min<std::int64_t>(32, V - w * 32);
    if (word == 0xffffffffu && end == 32) {  // a whole word allowed: nothing to clear
      allowed += 32;
      continue;
    }
    if (word == 0) {  // a whole word refused (most words, in most states)
      std::fill_n(logits.begin() + w * 32, end, none);
      continue;
    }
    // Only the refused bits are visited (the last word's bits past the vocabulary are ignored).
    const std::uint32_t live = end == 32 ? 0xffffffffu : (1u << end) - 1u;
    allowed += std::popcount(word & live);
    for (std::uint32_t refused = ~word & live; refused != 0; refused &= refused - 1)
      logits[static_cast<std::size_t>(w * 32 + std::countr_zero(refused))] = none;
  }
  return allowed;
}

std::int32_t ConstraintMatcher::advance(std::int32_t token, std::int64_t left) {
  State& s = *state_;
  if (!s.matcher.AcceptToken(token)) return -1;
  if (left == kUnbounded) s.guarded = false;  // driven without a budget: no plan is kept
  if (!s.guarded || s.matcher.IsTerminated()) return token;
  if (s.rest() > 0 && token == s.plan[s.at]) {  // on the plan: its rest still closes
    ++s.at;
    return token;
  }
  if (const auto closing = find_closing(s.matcher)) {
    auto p = s.compiled->speller->spell(*closing);
    if (p && static_cast<std::int64_t>(p->size()) <= left - 1) {
      s.plan = std::move(*p);
      s.at = 0;
      return token;
    }
  }
  // After `token` nothing known closes in time: the plan's next token instead (the plan fits,
  // as it has since the start), or the end when the output was already complete.
  s.matcher.Rollback(1);
  const std::int32_t forced = s.rest() > 0 ? s.plan[s.at++] : s.stop;
  if (!s.matcher.AcceptToken(forced))
    throw std::logic_error("the planned closing of a constraint was not accepted");
  return forced;
}

bool ConstraintMatcher::terminated() const {
  return state_->matcher.IsTerminated();
}

}  // namespace saker
