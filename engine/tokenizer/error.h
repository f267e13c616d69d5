// The one exception type of the tokenizer: a bad tokenizer.json or a use it cannot serve.
#pragma once

#include <stdexcept>

namespace saker {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace saker
