#include "engine/chat_template/lexer.h"

#include <cctype>

#include "engine/chat_template/error.h"
#include "engine/tokenizer/utf8.h"

namespace saker::jinja {
namespace {

std::string where(int line, int col) {
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

// Jinja normalizes line endings to "\n" and drops one trailing newline before lexing.
std::string normalize(const std::string& src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {}

  std::vector<Token> run() {
    while (pos_ < s_.size()) {
      const size_t open = find_open(pos_);
      emit_text(s_.substr(pos_, open - pos_));
      if (open == s_.size()) break;
      advance_to(open);
      tag();
    }
    flush_text();
    out_.push_back({Tok::Eof, "", line_, col_});
    return std::move(out_);
  }

 private:
  size_t find_open(size_t from) const {
    for (size_t i = from; i + 1 < s_.size(); ++i)
      if (s_[i] == '{' && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    return s_.size();
  }

  void advance_to(size_t p) {
    for (; pos_ < p; ++pos_) {
      if (s_[pos_] == '\n')
        ++line_, col_ = 1;
      else
        ++col_;
    }
  }

  void emit_text(std::string text) {
    if (strip_next_) {  // a `-` on the previous tag's end eats all the whitespace after it
      size_t k = 0;
      while (k < text.size() && is_ws(text[k])) ++k;
      text.erase(0, k);
      strip_next_ = false;
    }
    pending_ = std::move(text);
  }

  void flush_text() {
    if (!pending_.empty()) out_.push_back({Tok::Text, pending_, text_line_, text_col_});
    pending_.clear();
  }

  // Called with pos_ at "{{", "{%" or "{#".
  void tag() {
    const char kind = s_[pos_ + 1];
    const int tline = line_, tcol = col_;
    char sign = pos_ + 2 < s_.size() ? s_[pos_ + 2] : '\0';
    if (sign != '-' && sign != '+') sign = '\0';
    if (sign == '-') {
      while (!pending_.empty() && is_ws(pending_.back())) pending_.pop_back();
    } else if (sign != '+' && kind != '{') {
      // lstrip_blocks: spaces and tabs between a line's start and a block or comment tag go.
      const size_t nl = pending_.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) &&
          pending_.find_first_not_of(" \t", l_pos) == std::string::npos)
        pending_.erase(l_pos);
    }
    flush_text();
    advance_to(pos_ + 2 + (sign ? 1 : 0));
    if (kind == '#') return comment(tline, tcol);
    out_.push_back({kind == '{' ? Tok::ExprOpen : Tok::StmtOpen, "", tline, tcol});
    inside(kind == '{' ? '}' : '%', tline, tcol);
  }

  void comment(int tline, int tcol) {
    const size_t end = s_.find("#}", pos_);
    if (end == std::string::npos)
      throw ChatTemplateError("unterminated comment at " + where(tline, tcol));
    const bool minus = end > pos_ && s_[end - 1] == '-';
    advance_to(end + 2);
    after_tag(minus, true);
  }

  // After a tag's end: `-` strips following whitespace, else trim_blocks drops one newline after
  // block and comment tags. Records whether the consumed text ended a line, for lstrip_blocks.
  void after_tag(bool minus, bool is_block) {
    line_starting_ = false;
    if (minus) {
      strip_next_ = true;
      size_t p = pos_;
      while (p < s_.size() && is_ws(s_[p])) ++p;
      line_starting_ = p > pos_ && s_[p - 1] == '\n';
      advance_to(p);
    } else if (is_block && pos_ < s_.size() && s_[pos_] == '\n') {
      advance_to(pos_ + 1);
      line_starting_ = true;
    }
    text_line_ = line_, text_col_ = col_;
  }

  void inside(char close, int tline, int tcol) {
    int depth = 0;
    for (;;) {
      while (pos_ < s_.size() && is_ws(s_[pos_])) advance_to(pos_ + 1);
      if (pos_ >= s_.size())
        throw ChatTemplateError("unterminated tag opened at " + where(tline, tcol));
      const int l = line_, c = col_;
      const char ch = s_[pos_];
      auto at = [&](const char* t) {
        return s_.compare(pos_, std::char_traits<char>::length(t), t) == 0;
      };
      const std::string end2 = std::string(1, close) + "}";
      if (depth == 0 &&
          (at(("-" + end2).c_str()) || at(("+" + end2).c_str()) || at(end2.c_str()))) {
        const bool minus = ch == '-';
        advance_to(pos_ + (ch == '-' || ch == '+' ? 3 : 2));
        out_.push_back({Tok::Close, "", l, c});
        after_tag(minus, close == '%');
        return;
      }
      if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '_') {
        size_t e = pos_;
        while (e < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_'))
          ++e;
        out_.push_back({Tok::Name, s_.substr(pos_, e - pos_), l, c});
        advance_to(e);
      } else if (std::isdigit(static_cast<unsigned char>(ch))) {
        number(l, c);
      } else if (ch == '\'' || ch == '"') {
        string_literal(l, c);
      } else {
        static const char* ops2[] = {"**", "//", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* o : ops2)
          if (at(o)) op = o;
        if (op.empty()) {
          if (std::string("+-*/%~<>=()[]{}.,:|").find(ch) == std::string::npos)
            throw ChatTemplateError(std::string("unexpected character '") + ch + "' at " +
                                    where(l, c));
          op = std::string(1, ch);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        out_.push_back({Tok::Op, op, l, c});
        advance_to(pos_ + op.size());
      }
    }
  }

  void number(int l, int c) {
    size_t e = pos_;
    bool is_float = false;
    while (e < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[e])) || s_[e] == '_')) ++e;
    if (e + 1 < s_.size() && s_[e] == '.' && std::isdigit(static_cast<unsigned char>(s_[e + 1]))) {
      is_float = true;
      ++e;
      while (e < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e]))) ++e;
    }
    if (e < s_.size() && (s_[e] == 'e' || s_[e] == 'E')) {
      size_t k = e + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && std::isdigit(static_cast<unsigned char>(s_[k]))) {
        is_float = true;
        e = k;
        while (e < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e]))) ++e;
      }
    }
    std::string text;
    for (size_t i = pos_; i < e; ++i)
      if (s_[i] != '_') text += s_[i];
    out_.push_back({is_float ? Tok::Float : Tok::Int, text, l, c});
    advance_to(e);
  }

  // Python's unicode-escape rules, which jinja2 applies to string literals.
  void string_literal(int l, int c) {
    const char q = s_[pos_];
    size_t i = pos_ + 1;
    std::string val;
    for (;; ++i) {
      if (i >= s_.size()) throw ChatTemplateError("unterminated string at " + where(l, c));
      const char ch = s_[i];
      if (ch == q) break;
      if (ch != '\\' || i + 1 >= s_.size()) {
        val += ch;
        continue;
      }
      const char e = s_[++i];
      switch (e) {
        case 'n':
          val += '\n';
          break;
        case 't':
          val += '\t';
          break;
        case 'r':
          val += '\r';
          break;
        case '\\':
          val += '\\';
          break;
        case '\'':
          val += '\'';
          break;
        case '"':
          val += '"';
          break;
        case '\n':
          break;
        case 'a':
          val += '\a';
          break;
        case 'b':
          val += '\b';
          break;
        case 'f':
          val += '\f';
          break;
        case 'v':
          val += '\v';
          break;
        case '0':
          val += '\0';
          break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + n >= s_.size()) throw ChatTemplateError("bad escape in string at " + where(l, c));
          // Exactly n hex digits and at most U+10FFFF, as Python requires: anything else is a
          // ChatTemplateError (not std::stoul's invalid_argument, nor its sign or "0x").
          char32_t cp = 0;
          for (size_t k = i + 1; k <= i + n; ++k) {
            const auto h = static_cast<unsigned char>(s_[k]);
            if (!std::isxdigit(h))
              throw ChatTemplateError("bad escape in string at " + where(l, c));
            cp = cp * 16 + static_cast<char32_t>(std::isdigit(h) ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (cp > 0x10FFFF) throw ChatTemplateError("bad escape in string at " + where(l, c));
          utf8::append_code_point(cp, val);
          i += n;
          break;
        }
        default:
          val += '\\';
          val += e;  // unknown escapes stay as written
      }
    }
    out_.push_back({Tok::String, val, l, c});
    advance_to(i + 1);
  }

  std::string s_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
  int text_line_ = 1, text_col_ = 1;
  std::string pending_;
  bool strip_next_ = false;
  bool line_starting_ = true;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> lex(const std::string& source) {
  return Lexer(normalize(source)).run();
}

}  // namespace saker::jinja
