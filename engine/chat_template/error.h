// The one exception type of chat templates: syntax the subset does not support, a failed render,
// or the template's own raise_exception().
#pragma once

#include <stdexcept>

namespace saker {

class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace saker
