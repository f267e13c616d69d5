#include "engine/tokenizer/pre_tokenizer_json.h"

#include <stdexcept>

namespace saker {
namespace {

SplitBehavior behavior(const JsonNode& n) {
  const std::string s = n.string();
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  n.fail("unknown behavior '" + s + "'");
}

std::unique_ptr<PreTokenizer> split(const JsonNode& n) {
  const JsonNode pattern = n.field("pattern");
  const auto regex = pattern.optional_field("Regex");
  const auto literal = pattern.optional_field("String");
  if (regex.has_value() == literal.has_value())
    pattern.fail("expected exactly one of 'Regex' or 'String'");
  const JsonNode& source = regex ? *regex : *literal;
  std::unique_ptr<Regex> compiled;
  try {
    compiled = std::make_unique<Regex>(source.string(),
                                       regex ? Regex::Syntax::kOniguruma : Regex::Syntax::kLiteral);
  } catch (const std::invalid_argument& e) {
    source.fail(e.what());
  }
  return std::make_unique<SplitPreTokenizer>(std::move(compiled), behavior(n.field("behavior")),
                                             n.field("invert").boolean());
}

std::unique_ptr<PreTokenizer> sequence(const JsonNode& n) {
  const JsonNode list = n.field("pretokenizers");
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  for (std::size_t i = 0; i < list.array().size(); ++i)
    steps.push_back(build_pre_tokenizer(list.element(i)));
  return std::make_unique<SequencePreTokenizer>(std::move(steps));
}

}  // namespace

std::unique_ptr<PreTokenizer> build_pre_tokenizer(const JsonNode& n) {
  const std::string type = n.field("type").string();
  if (type == "Sequence") return sequence(n);
  if (type == "ByteLevel") {
    n.field("trim_offsets").boolean();  // offsets only, but tokenizers requires the field
    return std::make_unique<ByteLevelPreTokenizer>(n.field("add_prefix_space").boolean(),
                                                   n.boolean_or("use_regex", true));
  }
  if (type == "Punctuation") {
    const auto b = n.optional_field("behavior");
    return make_punctuation(b ? behavior(*b) : SplitBehavior::kIsolated);
  }
  if (type == "Digits") return make_digits(n.field("individual_digits").boolean());
  if (type == "Split") return split(n);
  n.fail("unsupported type '" + type + "'");
}

}  // namespace saker
