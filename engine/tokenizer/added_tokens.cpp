#include "engine/tokenizer/added_tokens.h"

#include <algorithm>
#include <unordered_map>

#include "engine/tokenizer/utf8.h"

namespace saker {

// One pass: an alternation of literal contents, longest first, so that the leftmost match PCRE2
// finds is also the longest at its position.
struct AddedVocabulary::Pass {
  Regex regex;
  std::unordered_map<std::string, std::size_t> index_of;  // content → position in tokens_
};

// Whether the character just before or just after a position is of a one-character class.
class AddedVocabulary::CharTest {
 public:
  CharTest(const Regex& regex, std::string_view text) : matcher_(regex.matcher()), text_(text) {}

  bool before(std::size_t i) { return i > 0 && test(previous_start(i), i); }
  bool after(std::size_t i) { return i < text_.size() && test(i, i + utf8::char_length(text_, i)); }
  std::size_t previous_start(std::size_t i) const {
    do --i;
    while (i > 0 && (static_cast<unsigned char>(text_[i]) & 0xC0) == 0x80);
    return i;
  }

 private:
  bool test(std::size_t begin, std::size_t end) {
    Span hit;
    return matcher_.search(text_.substr(begin, end - begin), 0, hit);
  }
  Regex::Matcher matcher_;
  std::string_view text_;
};

// Pass is incomplete in the header, so these live here.
AddedVocabulary::~AddedVocabulary() = default;
AddedVocabulary::AddedVocabulary(AddedVocabulary&&) noexcept = default;
AddedVocabulary& AddedVocabulary::operator=(AddedVocabulary&&) noexcept = default;

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)),
      // \w as the Rust regex crate defines it (tokenizers' single_word test), and Rust's
      // char::is_whitespace (lstrip / rstrip).
      word_char_(std::make_unique<Regex>("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]")),
      space_char_(std::make_unique<Regex>("\\p{White_Space}")) {
  raw_ = make_pass(tokens_, false);
  normalized_ = make_pass(tokens_, true);
}

void AddedVocabulary::split(std::string_view text, std::vector<Segment>& out) const {
  out.clear();
  std::vector<Segment> first;
  if (raw_)
    split_pass(*raw_, text, 0, first);
  else
    first.push_back({0, text.size(), -1});
  for (const Segment& s : first) {
    if (s.id >= 0 || !normalized_)
      out.push_back(s);
    else
      split_pass(*normalized_, text.substr(s.begin, s.end - s.begin), s.begin, out);
  }
}

void AddedVocabulary::split_pass(const Pass& pass, std::string_view text, std::size_t offset,
                                 std::vector<Segment>& out) const {
  Regex::Matcher matcher = pass.regex.matcher();
  std::size_t done = 0;  // end of what is already emitted
  Span m;
  for (std::size_t from = 0; from < text.size() && matcher.search(text, from, m); from = m.end) {
    const AddedToken& token =
        tokens_[pass.index_of.at(std::string(text.substr(m.begin, m.end - m.begin)))];
    Span span = m;
    if (!adjust(token, text, done, span)) continue;
    if (span.begin > done) out.push_back({offset + done, offset + span.begin, -1});
    out.push_back({offset + span.begin, offset + span.end, token.id});
    done = span.end;
    m.end = span.end;  // the next search starts after any whitespace rstrip took
  }
  if (done < text.size()) out.push_back({offset + done, offset + text.size(), -1});
}

bool AddedVocabulary::adjust(const AddedToken& token, std::string_view text, std::size_t done,
                             Span& span) const {
  if (token.single_word) {
    CharTest word(*word_char_, text);
    if (word.before(span.begin) || word.after(span.end)) return false;
  }
  CharTest space(*space_char_, text);
  if (token.lstrip)
    while (span.begin > done && space.before(span.begin))
      span.begin = space.previous_start(span.begin);
  if (token.rstrip)
    while (space.after(span.end)) span.end += utf8::char_length(text, span.end);
  return true;
}

std::unique_ptr<AddedVocabulary::Pass> AddedVocabulary::make_pass(
    const std::vector<AddedToken>& tokens, bool normalized) {
  std::vector<std::size_t> chosen;
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i].normalized == normalized) chosen.push_back(i);
  if (chosen.empty()) return nullptr;
  std::stable_sort(chosen.begin(), chosen.end(), [&](std::size_t a, std::size_t b) {
    return tokens[a].content.size() > tokens[b].content.size();
  });
  std::string pattern;
  std::unordered_map<std::string, std::size_t> index_of;
  for (const std::size_t i : chosen) {
    if (!pattern.empty()) pattern += '|';
    pattern += regex_escape(tokens[i].content);
    index_of.emplace(tokens[i].content, i);
  }
  return std::make_unique<Pass>(Pass{Regex(pattern), std::move(index_of)});
}

}  // namespace saker
