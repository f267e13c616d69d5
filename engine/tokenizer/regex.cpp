#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

#include "engine/tokenizer/utf8.h"

namespace saker {

void Regex::CodeFree::operator()(pcre2_real_code_8* p) const {
  pcre2_code_free(p);
}

void Regex::Matcher::DataFree::operator()(pcre2_real_match_data_8* p) const {
  pcre2_match_data_free(p);
}

namespace {

std::string from_oniguruma(std::string_view pattern) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out += pattern[i];
      continue;
    }
    const char next = pattern[++i];
    if (next == 's') {
      out += "\\p{White_Space}";
    } else if (next == 'S') {
      out += "\\P{White_Space}";
    } else if (next == 'h' || next == 'H') {
      throw std::invalid_argument("regex '" + std::string(pattern) + "' uses \\" + next +
                                  ", which means a hex digit in Oniguruma and horizontal space in "
                                  "PCRE2: not supported");
    } else {
      out += '\\';
      out += next;
    }
  }
  return out;
}

}  // namespace

Regex::Regex(std::string_view pattern, Syntax syntax) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL does not combine with PCRE2_UCP, so literals are escaped instead.
  const std::string compiled = syntax == Syntax::kOniguruma ? from_oniguruma(pattern)
                               : syntax == Syntax::kLiteral ? regex_escape(pattern)
                                                            : std::string(pattern);
  code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                            PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr));
  if (!code_) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw std::invalid_argument("invalid regex '" + pattern_ + "' at offset " +
                                std::to_string(offset) + ": " +
                                reinterpret_cast<const char*>(message));
  }
  // Without JIT (a platform PCRE2 lacks it for) matching is slower but the same.
  pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
}

Regex::Matcher Regex::matcher() const {
  return Matcher(code_.get());
}

Regex::Matcher::Matcher(const pcre2_real_code_8* code)
    : code_(code), data_(pcre2_match_data_create_from_pattern(code, nullptr)) {
  if (!data_) throw std::bad_alloc();
}

bool Regex::Matcher::search(std::string_view subject, std::size_t from, Span& match) {
  const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                             from, PCRE2_NO_UTF_CHECK, data_.get(), nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    throw std::runtime_error(std::string("regex match failed: ") +
                             reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data_.get());
  match = {ovector[0], ovector[1]};
  return true;
}

void Regex::Matcher::find_all(std::string_view subject, std::vector<Span>& matches) {
  matches.clear();
  std::size_t from = 0;
  bool have_last = false;
  std::size_t last_end = 0;
  Span m;
  while (from <= subject.size() && search(subject, from, m)) {
    if (m.begin == m.end && have_last && m.end == last_end) {
      // An empty match where the previous one ended: step over one character and retry.
      from += from < subject.size() ? utf8::char_length(subject, from) : 1;
      continue;
    }
    matches.push_back(m);
    from = m.end;
    last_end = m.end;
    have_last = true;
  }
}

std::string regex_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    const bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u >= 0x80 || alnum) {
      out += c;
    } else if (u >= 0x20 && u < 0x7F) {
      out += '\\';  // an escaped ASCII non-alphanumeric stands for itself in PCRE2
      out += c;
    } else {
      out += "\\x{";
      out += kHex[u >> 4];
      out += kHex[u & 15];
      out += '}';
    }
  }
  return out;
}

}  // namespace saker
