// A checkpoint's chat template (a Jinja2 subset, rendered as transformers renders it) turning an
// OpenAI-style message list into the prompt text.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat_template/error.h"

namespace saker {

namespace jinja {
struct Stmt;
}

struct ChatMessage {
  std::string role, content;
};

class ChatTemplate {
 public:
  // Parses the template; throws ChatTemplateError naming the problem and its line/column for
  // syntax it does not support.
  static ChatTemplate parse(const std::string& source);

  // Renders with `messages`, `add_generation_prompt` and every entry of `vars` as a string variable
  // (bos_token, eos_token, ...). `tools` and `documents` are none, as transformers passes them.
  // raise_exception(msg) in the template throws ChatTemplateError whose what() is msg.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const std::map<std::string, std::string>& vars) const;

  // The template of a model directory, with its bos_token / eos_token as render() vars: from
  // chat_template.jinja when present (newer checkpoints; transformers prefers it), else from
  // tokenizer_config.json's "chat_template" (a string, or a list of {name, template}: the one
  // named "default"). nullopt when the directory has none. Throws ChatTemplateError when the
  // template does not parse or the JSON is malformed.
  static std::optional<std::pair<ChatTemplate, std::map<std::string, std::string>>> from_model_dir(
      const std::filesystem::path& dir);

 private:
  // Shared and immutable: copies are cheap and rendering never mutates it.
  std::shared_ptr<const std::vector<jinja::Stmt>> body_;
};

}  // namespace saker
