#include "engine/tokenizer/pre_tokenizer.h"

#include <optional>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/split.h"

namespace saker {
namespace {

// GPT-2's pattern, as tokenizers' ByteLevel compiles it for Oniguruma; \s written as
// White_Space, which is what Oniguruma's \s is (PCRE2's \s also takes U+180E).
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
    "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

// Rust's char::is_ascii_punctuation is every printable ASCII character that is not alphanumeric.
constexpr const char* kPunctuationClass =
    "[\\p{P}\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}\\x{7B}-\\x{7E}]";

}  // namespace

void Pieces::reset(std::string_view segment) {
  text.assign(segment);
  spans.clear();
  if (!segment.empty()) spans.push_back({0, segment.size()});
}

SplitPreTokenizer::SplitPreTokenizer(std::unique_ptr<Regex> pattern, SplitBehavior behavior,
                                     bool invert)
    : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

void SplitPreTokenizer::apply(Pieces& pieces) const {
  Regex::Matcher matcher = pattern_->matcher();
  std::vector<Span> matches, kept, out;
  std::vector<Part> parts;
  out.reserve(pieces.spans.size() * 2);
  for (const Span& piece : pieces.spans) {
    const std::string_view text = pieces.view(piece);
    matcher.find_all(text, matches);
    parts_from_matches(text.size(), matches, parts);
    if (invert_)
      for (Part& p : parts) p.is_match = !p.is_match;
    apply_behavior(parts, behavior_, kept);
    for (const Span& k : kept) out.push_back({piece.begin + k.begin, piece.begin + k.end});
  }
  pieces.spans.swap(out);
}

ByteLevelPreTokenizer::ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
    : add_prefix_space_(add_prefix_space),
      regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}

void ByteLevelPreTokenizer::apply(Pieces& pieces) const {
  std::string text, prefixed;
  text.reserve(pieces.text.size() * 2);
  std::vector<Span> spans, matches;
  std::vector<Part> parts;
  spans.reserve(pieces.spans.size() * 2);
  std::optional<Regex::Matcher> matcher;
  if (regex_) matcher.emplace(regex_->matcher());
  for (const Span& piece : pieces.spans) {
    std::string_view word = pieces.view(piece);
    if (add_prefix_space_ && word.front() != ' ') {
      prefixed.assign(1, ' ');
      prefixed += word;
      word = prefixed;
    }
    if (matcher) {
      matcher->find_all(word, matches);
      parts_from_matches(word.size(), matches, parts);
    } else {
      parts.assign(1, {{0, word.size()}, false});
    }
    for (const Part& p : parts) {
      if (p.span.begin == p.span.end) continue;
      const std::size_t begin = text.size();
      byte_level::append_symbols(word.substr(p.span.begin, p.span.end - p.span.begin), text);
      spans.push_back({begin, text.size()});
    }
  }
  pieces.text.swap(text);
  pieces.spans.swap(spans);
}

SequencePreTokenizer::SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
    : steps_(std::move(steps)) {}

void SequencePreTokenizer::apply(Pieces& pieces) const {
  for (const auto& step : steps_) step->apply(pieces);
}

std::unique_ptr<PreTokenizer> make_punctuation(SplitBehavior behavior) {
  // Contiguous joins neighbouring one-character matches anyway; matching whole runs is faster.
  const std::string run = behavior == SplitBehavior::kContiguous ? "+" : "";
  return std::make_unique<SplitPreTokenizer>(
      std::make_unique<Regex>(std::string(kPunctuationClass) + run), behavior, false);
}

std::unique_ptr<PreTokenizer> make_digits(bool individual_digits) {
  if (individual_digits)
    return std::make_unique<SplitPreTokenizer>(std::make_unique<Regex>("\\p{N}"),
                                               SplitBehavior::kIsolated, false);
  return std::make_unique<SplitPreTokenizer>(std::make_unique<Regex>("\\p{N}+"),
                                             SplitBehavior::kContiguous, false);
}

}  // namespace saker
