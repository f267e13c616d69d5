#include "engine/chat_template/chat_template.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/chat_template/evaluator.h"
#include "engine/chat_template/lexer.h"
#include "engine/chat_template/parser.h"

namespace saker {
namespace {

std::optional<std::string> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// bos_token / eos_token are strings or AddedToken objects {"content": ...}.
std::optional<std::string> token_text(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

ChatTemplate ChatTemplate::parse(const std::string& source) {
  ChatTemplate t;
  t.body_ = std::make_shared<const std::vector<jinja::Stmt>>(jinja::parse(jinja::lex(source)));
  return t;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt,
                                 const std::map<std::string, std::string>& vars) const {
  std::map<std::string, jinja::Value> globals;
  for (const auto& [k, v] : vars) globals[k] = v;
  jinja::List msgs;
  for (const auto& m : messages)
    msgs.emplace_back(jinja::Dict{{"role", m.role}, {"content", m.content}});
  globals["messages"] = std::move(msgs);
  globals["add_generation_prompt"] = add_generation_prompt;
  globals["tools"] = jinja::None{};
  globals["documents"] = jinja::None{};
  return jinja::Evaluator(std::move(globals)).render(*body_);
}

std::optional<std::pair<ChatTemplate, std::map<std::string, std::string>>>
ChatTemplate::from_model_dir(const std::filesystem::path& dir) {
  std::optional<std::string> source = read_file(dir / "chat_template.jinja");
  std::map<std::string, std::string> vars;
  const auto config_path = dir / "tokenizer_config.json";
  if (const auto text = read_file(config_path)) {
    nlohmann::json cfg;
    try {
      cfg = nlohmann::json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
      throw ChatTemplateError(config_path.string() + ": " + e.what());
    }
    for (const char* key : {"bos_token", "eos_token"})
      if (auto tok = token_text(cfg, key)) vars[key] = *tok;
    auto ct = cfg.find("chat_template");
    if (!source && ct != cfg.end()) {
      if (ct->is_string()) {
        source = ct->get<std::string>();
      } else if (ct->is_array()) {
        for (const auto& entry : *ct)
          if (entry.is_object() && entry.contains("name") && entry["name"] == "default" &&
              entry.contains("template") && entry["template"].is_string())
            source = entry["template"].get<std::string>();
      }
    }
  }
  if (!source) return std::nullopt;
  return std::make_pair(parse(*source), std::move(vars));
}

}  // namespace saker
