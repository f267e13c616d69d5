// The 384-token fixture model with the 384-token tokenizer beside it, so that text goes in and out.
#pragma once

#include <filesystem>
#include <string>

namespace saker::test {

// Copied into a directory of the caller's own (`tag`): CTest runs test cases at the same time,
// and a file being rewritten must not be one another server has mapped.
inline std::filesystem::path text_model(const std::filesystem::path& fixtures,
                                        const std::string& tag) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("saker_test_text_model_" + tag);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(fixtures / "gqa8x4-bf16-sharded"))
    if (e.path().filename() != "reference.json")
      fs::copy_file(e.path(), dir / e.path().filename(), fs::copy_options::overwrite_existing);
  fs::copy_file(fixtures / "tokenizers" / "small384" / "tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  return dir;
}

}  // namespace saker::test
