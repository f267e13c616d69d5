// Chat templates rendered byte for byte as transformers renders them (the fixture comes from
// scripts/make_chat_template_fixtures.py), clear errors for syntax outside the subset, and the
// template read from a model directory.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/chat_template/chat_template.h"

using Catch::Matchers::Contains;
using saker::ChatMessage;
using saker::ChatTemplate;
using saker::ChatTemplateError;

namespace {

std::string render(const std::string& tmpl, const std::vector<ChatMessage>& msgs = {{"user", "hi"}},
                   bool agp = false) {
  return ChatTemplate::parse(tmpl).render(msgs, agp, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
}

// A fresh directory under the system temp dir, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("saker_chat_template_" + name)) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  void write(const std::string& file, const std::string& text) const {
    std::ofstream(path / file) << text;
  }
};

}  // namespace

TEST_CASE("real chat templates render exactly as transformers renders them", "[chat_template]") {
  std::ifstream in(std::string(SAKER_FIXTURES_DIR) + "/chat_templates/cases.json");
  REQUIRE(in);
  const auto fixture = nlohmann::json::parse(in);
  REQUIRE(fixture["cases"].size() >= 50);
  for (const auto& c : fixture["cases"]) {
    INFO(c["name"].get<std::string>());
    std::vector<ChatMessage> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"], m["content"]});
    const std::map<std::string, std::string> vars = {{"bos_token", c["bos_token"]},
                                                     {"eos_token", c["eos_token"]}};
    const auto tmpl = ChatTemplate::parse(c["template"]);
    if (c.contains("expected")) {
      CHECK(tmpl.render(msgs, c["add_generation_prompt"], vars) ==
            c["expected"].get<std::string>());
    } else {
      const std::string want = c["expected_error"];
      try {
        tmpl.render(msgs, c["add_generation_prompt"], vars);
        FAIL("no error; expected: " << want);
      } catch (const ChatTemplateError& e) {
        CHECK(std::string(e.what()) == want);  // raise_exception's message, unadorned
      }
    }
  }
}

TEST_CASE("syntax outside the subset fails at parse time with its position", "[chat_template]") {
  CHECK_THROWS_WITH(ChatTemplate::parse("ok\n  {% macro f() %}{% endmacro %}"),
                    Contains("unsupported statement 'macro'") && Contains("line 2, column 6"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{% raw %}x{% endraw %}"),
                    Contains("unsupported statement 'raw'"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{% set x %}body{% endset %}"),
                    Contains("unsupported block set"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{% for x in xs %}a"), Contains("missing '{% endfor %}'"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{% if x %}a"), Contains("missing '{% endif %}'"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{{ x "),
                    Contains("unterminated tag") && Contains("line 1, column 1"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{{ 'abc }}"), Contains("unterminated string"));
  CHECK_THROWS_WITH(ChatTemplate::parse("a\nb {{ x ; y }}"),
                    Contains("unexpected character ';' at line 2, column 8"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{{ (a, b) }}"), Contains("unsupported tuple"));
  CHECK_THROWS_WITH(ChatTemplate::parse("{# never closed"), Contains("unterminated comment"));
}

TEST_CASE("unsupported filters, methods and functions fail when rendered, naming them",
          "[chat_template]") {
  CHECK_THROWS_WITH(render("{{ 'a' | wordwrap }}"),
                    Contains("unsupported filter 'wordwrap'") && Contains("line 1"));
  CHECK_THROWS_WITH(render("{{ 'a'.zfill(3) }}"), Contains("no method 'zfill'"));
  CHECK_THROWS_WITH(render("{{ cycler() }}"), Contains("unknown function 'cycler'"));
  CHECK_THROWS_WITH(render("{{ nope.attr }}"), Contains("'nope' is undefined"));
  CHECK_THROWS_WITH(render("{{ 1 + 'a' }}"), Contains("unsupported operand types for +"));
}

TEST_CASE("what a template builds is bounded, and integers do not overflow silently",
          "[chat_template]") {
  // jinja2's sandbox refuses ranges past 100000 items; Python's ints cannot overflow, so where
  // an int64 would, the render fails rather than wrap.
  CHECK(render("{{ range(100000) | length }}|{{ range(5, 0, -2) | list }}|{{ 'ab' * 3 }}") ==
        "100000|[5, 3, 1]|ababab");
  CHECK_THROWS_WITH(render("{{ range(100001) | length }}"), Contains("more than 100000 items"));
  CHECK_THROWS_WITH(render("{{ range(-9223372036854775807, 9223372036854775807, 3) | length }}"),
                    Contains("more than 100000 items"));
  CHECK_THROWS_WITH(render("{{ 'x' * 100000000 }}"), Contains("would be longer than"));
  CHECK_THROWS_WITH(render("{{ 9223372036854775807 + 1 }}"), Contains("integer overflow in +"));
  CHECK_THROWS_WITH(render("{{ 3037000500 * 3037000500 }}"), Contains("integer overflow in *"));
  CHECK_THROWS_WITH(render("{{ -(-9223372036854775807 - 1) }}"),
                    Contains("integer overflow in unary -"));
}

TEST_CASE("recursion, cycles, loops and growth are bounded; past a bound a render fails, naming it",
          "[chat_template]") {
  const auto nested = [](const std::string& open, const std::string& inner,
                         const std::string& close, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += open;
    s += inner;
    for (int i = 0; i < n; ++i) s += close;
    return s;
  };
  // Up to 100 levels parse and render; 20000 overflowed the stack (found by the fuzzer).
  CHECK(render("{{ " + nested("(", "7", ")", 90) + " }}") == "7");
  CHECK(render(nested("{% if 1 %}", "x", "{% endif %}", 90)) == "x");
  for (const std::string& deep :
       {"{{ " + nested("(", "1", ")", 20000) + " }}", "{{ " + nested("[", "1", "]", 20000) + " }}",
        "{{ " + nested("not ", "1", "", 20000) + " }}", "{{ " + nested("-", "1", "", 20000) + " }}",
        nested("{% if 1 %}", "x", "{% endif %}", 20000)}) {
    CHECK_THROWS_WITH(render(deep), Contains("nested deeper than 100 levels"));
  }
  // Chains deepen the tree without the parser recursing; evaluating and freeing it would.
  for (const char* op : {"+1", ".a", "|trim", "[0]", "~'a'"})
    CHECK_THROWS_WITH(render("{{ x" + nested(op, "", "", 20000) + " }}"),
                      Contains("an expression nested deeper than 100 levels"));
  // A namespace cannot hold a namespace: ns.x = ns was a cycle, leaked and printed forever.
  CHECK_THROWS_WITH(render("{% set ns = namespace(x=1) %}{% set ns.x = ns %}{{ ns | tojson }}"),
                    Contains("namespace attribute 'x' cannot hold a namespace"));
  CHECK_THROWS_WITH(render("{% set a = namespace() %}{% set ns = namespace(x=[a]) %}"),
                    Contains("namespace attribute 'x' cannot hold a namespace"));
  CHECK(render("{% set ns = namespace(x=[]) %}{% for i in range(3) %}{% set ns.x = ns.x + [i] "
               "%}{% endfor %}{{ ns.x }}") == "[0, 1, 2]");
  // Values nest at most 128 deep (wrapping in a loop through a namespace went 100000 deep).
  CHECK_THROWS_WITH(render("{% set ns = namespace(x=1) %}{% for i in range(100000) %}"
                           "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}"),
                    Contains("nested deeper than 128 levels"));
  // Loop iterations per render: nested loops of 10^10 ran for hours.
  CHECK(render("{% for i in range(500) %}{% for j in range(500) %}{% endfor %}{% endfor %}ok") ==
        "ok");
  CHECK_THROWS_WITH(
      render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
      Contains("more than 262144 loop iterations"));
  // Growth: doubling a string, the output, replace, join, tojson's indent.
  CHECK_THROWS_WITH(render("{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
                           "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
                    Contains("a string built with ~ would be longer than 16777216 bytes"));
  CHECK_THROWS_WITH(render("{% set s = 'x' * 10000000 %}{{ s }}{{ s }}"),
                    Contains("the rendered text would be longer than"));
  CHECK_THROWS_WITH(render("{{ ('x' * 1000).replace('x', 'y' * 100000) }}"),
                    Contains("the result of replace would be longer than"));
  CHECK_THROWS_WITH(render("{{ ('x' * 20000).replace('x', ' ').split(' ') | join('y' * 1000) }}"),
                    Contains("the result of join would be longer than"));
  CHECK_THROWS_WITH(render("{{ [1, [2]] | tojson(indent=1000000000) }}"),
                    Contains("tojson: indent 1000000000 is outside 0..64"));
  CHECK(render("{{ ('\u00e9' * 3) | length }}") == "3");
}

TEST_CASE("jinja2 semantics the fixture does not reach", "[chat_template]") {
  CHECK(render("{{ missing }}|{{ missing | length }}|{% if missing %}t{% else %}f{% endif %}") ==
        "|0|f");
  CHECK(render("{{ none }} {{ true }} {{ 1.0 }} {{ 1e20 }} {{ 0.0001 }} {{ [1, 'a'] }}") ==
        "None True 1.0 1e+20 0.0001 [1, 'a']");
  CHECK(render("{% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% "
               "break %}"
               "{% endif %}{{ x }}{% endfor %}") == "13");
  CHECK(render("{% for x in [] %}a{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}") ==
        "a=1;b=2;");
  CHECK(render("{% set x = 1 %}{% for i in [5] %}{% set x = i %}{% endfor %}{{ x }}") ==
        "1");  // loop scope
  CHECK(
      render(
          "{{ 'abcdef'[1:4] }}{{ 'abc'[::-1] }}{{ [1,2,3][-1] }}{{ 'a b  c'.split() | length }}") ==
      "bcdcba33");
  CHECK(render("{{ x if false }}|{{ 'y' if true else 'n' }}") == "|y");
  CHECK(render("{{ tools is none }} {{ documents is none }}") == "True True");
  CHECK(render("{{ {'a': 'é\n'} | tojson(indent=2) }}") == "{\n  \"a\": \"é\\n\"\n}");
  CHECK(render("{% generation %}kept{% endgeneration %}") == "kept");
  CHECK(render("line\n") == "line");  // keep_trailing_newline=False
}

TEST_CASE("from_model_dir reads tokenizer_config.json's chat_template in both forms",
          "[chat_template]") {
  const std::vector<ChatMessage> msgs = {{"user", "hi"}};
  SECTION("a string, with bos/eos as plain strings and as AddedToken objects") {
    TempDir dir("string");
    dir.write("tokenizer_config.json",
              R"({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false},
      "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"})");
    const auto loaded = ChatTemplate::from_model_dir(dir.path);
    REQUIRE(loaded);
    CHECK(loaded->second.at("bos_token") == "<s>");
    CHECK(loaded->second.at("eos_token") == "</s>");
    CHECK(loaded->first.render(msgs, false, loaded->second) == "<s>hi</s>");
  }
  SECTION("a list of named templates: the one named default") {
    TempDir dir("list");
    dir.write("tokenizer_config.json", R"({"eos_token": "<|endoftext|>", "chat_template": [
      {"name": "tool_use", "template": "TOOLS"}, {"name": 7, "template": "NOT A NAME"},
      {"name": "default", "template": "D:{{ messages[0].content }}{{ eos_token }}"}]})");
    const auto loaded = ChatTemplate::from_model_dir(dir.path);
    REQUIRE(loaded);
    CHECK(loaded->second.count("bos_token") == 0);
    CHECK(loaded->first.render(msgs, false, loaded->second) == "D:hi<|endoftext|>");
  }
  SECTION("chat_template.jinja takes precedence, as in transformers") {
    TempDir dir("jinja_file");
    dir.write("tokenizer_config.json", R"({"eos_token": "</s>", "chat_template": "old"})");
    dir.write("chat_template.jinja", "new {{ eos_token }}\n");
    const auto loaded = ChatTemplate::from_model_dir(dir.path);
    REQUIRE(loaded);
    CHECK(loaded->first.render(msgs, false, loaded->second) == "new </s>");
  }
  SECTION("absent: no template key, or no tokenizer_config.json at all") {
    TempDir dir("absent");
    CHECK_FALSE(ChatTemplate::from_model_dir(dir.path));
    dir.write("tokenizer_config.json", R"({"eos_token": "</s>"})");
    CHECK_FALSE(ChatTemplate::from_model_dir(dir.path));
  }
  SECTION("a template outside the subset is an error naming it") {
    TempDir dir("bad");
    dir.write("tokenizer_config.json", R"({"chat_template": "{% macro m() %}{% endmacro %}"})");
    CHECK_THROWS_WITH(ChatTemplate::from_model_dir(dir.path),
                      Contains("unsupported statement 'macro'"));
  }
}
