// tokenizer.json loading (engine/tokenizer/tokenizer_json.cpp and friends): the input is the
// file's text. Anything it cannot load is a TokenizerError (the documented contract); a tokenizer
// it loads must encode and decode a little text, and its own input, without failing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/streaming_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

using namespace saker;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const Tokenizer tok = Tokenizer::from_json_text(text, "fuzz/tokenizer.json");
    for (const std::string_view s :
         {std::string_view("Hello world, it's 2024! <|endoftext|> caf\xc3\xa9 \xff"),
          text.substr(0, 256)}) {
      const auto ids = tok.encode(s);
      (void)tok.decode(ids, false);
      StreamingDetokenizer stream(tok, true);
      for (const std::int32_t id : ids) (void)stream.push(id);
      (void)stream.flush();
    }
    for (std::int32_t id = -1; id <= tok.id_limit() && id < 64; ++id) (void)tok.id_to_token(id);
  } catch (const TokenizerError&) {
  }
  return 0;
}
