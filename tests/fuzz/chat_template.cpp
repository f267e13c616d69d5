// Chat templates (engine/chat_template): the first byte picks the mode.
//   even: the rest is a template; parsed, then rendered with a fixed conversation. With bit 7
//         set, the rest is a tokenizer_config.json instead, read by ChatTemplate::from_model_dir.
//   odd:  the rest is a JSON list of messages, rendered by one of the real templates of
//         tests/fixtures/chat_templates/cases.json (picked by the first byte).
// A template or conversation it cannot handle is a ChatTemplateError, never a crash.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/bounded_json.h"
#include "engine/chat_template/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;

namespace {

struct Rig {
  std::vector<ChatTemplate> templates;
  const std::map<std::string, std::string> vars = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  const std::vector<ChatMessage> conversation = {{"system", "Be brief."},
                                                 {"user", "Hi there!"},
                                                 {"assistant", " Hello. "},
                                                 {"user", "And \xc3\xa9?"}};
  Rig() {
    std::ifstream in(std::string(SAKER_FIXTURES_DIR) + "/chat_templates/cases.json");
    const nlohmann::json cases = nlohmann::json::parse(in)["cases"];
    std::set<std::string> seen;
    for (const auto& c : cases) {
      const std::string t = c["template"].get<std::string>();
      if (seen.insert(t).second) templates.push_back(ChatTemplate::parse(t));
    }
  }
};

const Rig& rig() {
  static const Rig r;
  return r;
}

// A message's field as the API would hand it over: a string, or some JSON as text.
std::string field(const nlohmann::json& m, const char* key) {
  if (!m.is_object() || !m.contains(key)) return "";
  const auto& v = m[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const Rig& r = rig();
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool generation_prompt = data[0] & 2;
  try {
    if (data[0] % 2 == 0 && data[0] & 0x80) {
      static const fuzz::ScratchDir dir;
      dir.write("tokenizer_config.json", rest);
      if (const auto t = ChatTemplate::from_model_dir(dir.path()))
        (void)t->first.render(r.conversation, generation_prompt, t->second);
    } else if (data[0] % 2 == 0) {
      const ChatTemplate t = ChatTemplate::parse(rest);
      (void)t.render(r.conversation, generation_prompt, r.vars);
      (void)t.render({}, generation_prompt, {});
    } else {
      nlohmann::json j;
      try {
        j = parse_bounded_json(rest);
      } catch (const std::exception&) {
        return 0;  // not the template's business
      }
      if (!j.is_array()) return 0;
      std::vector<ChatMessage> messages;
      for (const auto& m : j) messages.push_back({field(m, "role"), field(m, "content")});
      const ChatTemplate& t = r.templates[(data[0] >> 2) % r.templates.size()];
      (void)t.render(messages, generation_prompt, r.vars);
    }
  } catch (const ChatTemplateError&) {
  }
  return 0;
}
