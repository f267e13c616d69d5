// saker tokenize: text on stdin → token ids, or ids → text with --decode, by DIR/tokenizer.json.
#include <iostream>
#include <iterator>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "launcher/app/cli.h"

namespace saker::cli {
namespace {

// All of stdin, byte for byte: a trailing newline is part of the text.
std::string read_stdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

bool blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\n") == std::string::npos;
}

void encode(const Tokenizer& tok) {
  std::string out;
  for (const std::int32_t id : tok.encode(read_stdin())) {
    if (!out.empty()) out += ' ';
    out += std::to_string(id);
  }
  std::cout << out << "\n";
}

void decode(const Tokenizer& tok, bool skip_special_tokens) {
  const std::string input = read_stdin();
  if (blank(input)) return;
  std::vector<std::int32_t> ids;
  try {
    ids = parse_token_ids(input, tok.id_limit(), "stdin");
  } catch (const UsageError& e) {
    throw std::runtime_error(e.what());  // bad input data, not a command-line mistake
  }
  // Exactly the text: no newline added, so that decoding is byte-for-byte reversible.
  std::cout << tok.decode(ids, skip_special_tokens) << std::flush;
}

}  // namespace

int run_tokenize(const std::vector<std::string>& args) {
  std::string model_dir;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&model_dir)->required(),
                                                 "model directory (only tokenizer.json is read)")(
      "decode", po::bool_switch(), "read token ids and print their text (no newline added)")(
      "skip-special-tokens", po::bool_switch(), "with --decode: leave special tokens out");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: saker tokenize --model DIR [--decode [--skip-special-tokens]] < INPUT\n"
             "Reads all of stdin: text (printed as ids on one line) or, with --decode, ids."))
    return 0;
  const bool to_text = vm["decode"].as<bool>();
  const bool skip = vm["skip-special-tokens"].as<bool>();
  if (skip && !to_text) throw UsageError("--skip-special-tokens needs --decode");
  const Tokenizer tok = Tokenizer::from_model_dir(model_dir);
  if (to_text)
    decode(tok, skip);
  else
    encode(tok);
  return 0;
}

}  // namespace saker::cli
