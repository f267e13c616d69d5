// Shared by the tokenizer tests: the fixtures of scripts/make_tokenizer_fixtures.py.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"

namespace saker::test {

inline const std::filesystem::path kTokenizerFixtures =
    std::filesystem::path(SAKER_FIXTURES_DIR) / "tokenizers";
inline const std::filesystem::path kFalconTokenizer =
    std::filesystem::path(SAKER_SHARED_DIR) / "models/falcon-tokenizer/tokenizer.json";

inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// A text with what Hugging Face tokenizers made of it.
struct ReferenceCase {
  std::string kind, text;
  std::vector<std::int32_t> ids;
  std::string decoded, decoded_skip_special;
};

// Reference lines leave out a decode equal to the text (or to the plain decode).
inline ReferenceCase reference_case(std::string kind, std::string text, const nlohmann::json& r) {
  ReferenceCase c{std::move(kind), std::move(text), r.at("ids").get<std::vector<std::int32_t>>(),
                  "", ""};
  c.decoded = r.contains("decoded") ? r["decoded"].get<std::string>() : c.text;
  c.decoded_skip_special =
      r.contains("decoded_skip_special") ? r["decoded_skip_special"].get<std::string>() : c.decoded;
  return c;
}

// corpus.jsonl zipped with a reference file over the same lines.
inline std::vector<ReferenceCase> corpus_reference(const std::string& reference_file) {
  const auto corpus = read_jsonl(kTokenizerFixtures / "corpus.jsonl");
  const auto refs = read_jsonl(kTokenizerFixtures / reference_file);
  if (corpus.size() != refs.size()) throw std::runtime_error(reference_file + ": line count");
  std::vector<ReferenceCase> out;
  for (std::size_t i = 0; i < corpus.size(); ++i)
    out.push_back(reference_case(corpus[i]["kind"], corpus[i]["text"], refs[i]));
  return out;
}

inline const Tokenizer& falcon_tokenizer() {
  static const Tokenizer t = Tokenizer::load(kFalconTokenizer);
  return t;
}

// Printable and short, for failure messages.
inline std::string describe(const std::string& text) {
  std::string out;
  for (const char c : text.substr(0, 80)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += std::string("\\x") + kHex[u >> 4] + kHex[u & 15];
    } else {
      out += c;
    }
  }
  return "\"" + out +
         (text.size() > 80 ? "\"... (" + std::to_string(text.size()) + " bytes)" : "\"");
}

}  // namespace saker::test
