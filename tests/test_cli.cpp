// The saker executable as users run it: output, messages and exit codes.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = SAKER_FIXTURES_DIR;
const fs::path kShared = SAKER_SHARED_DIR;

struct Run {
  int code = -1;
  std::string out, err;
};

// Runs `saker ARGS` through the shell, capturing stdout, stderr and the exit status.
Run saker(const std::string& args) {
  const fs::path err_file =
      fs::temp_directory_path() / ("saker_cli_err_" + std::to_string(::getpid()));
  const std::string cmd =
      std::string("'") + SAKER_BIN + "' " + args + " 2>'" + err_file.string() + "'";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  fs::remove(err_file);
  return r;
}

std::string join(const std::vector<int>& ids) {
  std::ostringstream s;
  for (std::size_t i = 0; i < ids.size(); ++i) s << (i ? " " : "") << ids[i];
  return s.str();
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// A scratch directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("saker_cli_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("saker generate prints transformers' greedy continuation", "[cli]") {
  for (const char* name : {"gqa8x2-fp32", "rw-alibi-fp32", "gqa8x4-bf16-sharded"}) {
    const auto dir = kFixtures / name;
    const auto ref = read_json(dir / "reference.json");
    for (const auto& cs : ref["cases"]) {
      const auto prompt = cs["prompt_ids"].get<std::vector<int>>();
      const auto want = cs["greedy_ids"].get<std::vector<int>>();
      // transformers' fp32 continuation needs an fp32 KV cache and fp32 matmul inputs (auto is
      // bf16 for both on the bf16 fixture, where the CPU has AVX512_BF16).
      const Run r = saker("generate --model '" + dir.string() + "' --prompt-ids '" + join(prompt) +
                          "' --max-new-tokens " + std::to_string(want.size()) +
                          " --ignore-eos --kv-cache-dtype fp32 --cpu-matmul fp32");
      INFO(name << ": " << r.err);
      REQUIRE(r.code == 0);
      CHECK(r.out == join(want) + "\n");
    }
  }
}

TEST_CASE("saker generate stops at the end-of-sequence token unless told not to", "[cli]") {
  // The fixture's own continuations rarely reach eos (11), so declare one of the tokens that
  // transformers generated as eos in generation_config.json: generation must stop right there.
  const auto src = kFixtures / "gqa8x2-fp32";
  const auto ref = read_json(src / "reference.json");
  const auto& cs = ref["cases"][1];
  const auto prompt = join(cs["prompt_ids"].get<std::vector<int>>());
  const auto want = cs["greedy_ids"].get<std::vector<int>>();
  const int eos = want[5];
  const auto first = std::find(want.begin(), want.end(), eos);
  TempDir tmp;
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, tmp.path / f);
  std::ofstream(tmp.path / "generation_config.json") << "{\"eos_token_id\": [" << eos << "]}";
  const std::string base = "generate --model '" + tmp.path.string() + "' --prompt-ids '" + prompt +
                           "' --max-new-tokens " + std::to_string(want.size());
  Run r = saker(base);
  REQUIRE(r.code == 0);
  CHECK(r.out == join(std::vector<int>(want.begin(), first + 1)) + "\n");
  r = saker(base + " --ignore-eos");
  REQUIRE(r.code == 0);
  CHECK(r.out == join(want) + "\n");
}

TEST_CASE("saker generate rejects bad input with a message and an exit code", "[cli]") {
  const std::string model = "--model '" + (kFixtures / "mqa7-fp32").string() + "' ";
  Run r = saker("generate --prompt-ids '1 2'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("'--model' is required"));
  r = saker("generate " + model + "--prompt-ids '1 x2'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("'x2' is not a token id"));
  r = saker("generate " + model + "--prompt-ids '1 384'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("token id 384 is outside the vocabulary [0, 384)"));
  r = saker("generate " + model + "--prompt-ids '1' --max-new-tokens 5000");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("must be <= the model's context of 2048 tokens"));
  r = saker("generate --model /nonexistent/dir --prompt-ids 1");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("model directory /nonexistent/dir does not exist"));
  r = saker("frobnicate");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown command 'frobnicate'"));

  TempDir tmp;
  fs::copy_file(kFixtures / "mqa7-fp32/config.json", tmp.path / "config.json");
  std::ofstream(tmp.path / "pytorch_model.bin") << "not really";
  r = saker("generate --model '" + tmp.path.string() + "' --prompt-ids 1");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("safetensors"));

  // A checkpoint cut short: the message names the file.
  fs::remove(tmp.path / "pytorch_model.bin");
  const auto src = kFixtures / "mqa7-fp32/model.safetensors";
  fs::copy_file(src, tmp.path / "model.safetensors");
  fs::resize_file(tmp.path / "model.safetensors", fs::file_size(src) - 100);
  r = saker("generate --model '" + tmp.path.string() + "' --prompt-ids 1");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("model.safetensors"));
}

TEST_CASE("saker generate --dtype: int8 halves the bytes read, other names must match", "[cli]") {
  const std::string model = "--model '" + (kFixtures / "mqa7-bf16").string() + "' ";
  const auto bytes_read = [](const std::string& err) {
    const auto at = err.find(" weight bytes read");
    REQUIRE(at != std::string::npos);
    return std::stod(err.substr(err.rfind(' ', at - 1) + 1, at));
  };
  Run as_stored = saker("generate " + model + "--prompt-ids '1 2 3' --max-new-tokens 3 --stats");
  Run int8 =
      saker("generate " + model + "--prompt-ids '1 2 3' --max-new-tokens 3 --stats --dtype int8");
  Run named =
      saker("generate " + model + "--prompt-ids '1 2 3' --max-new-tokens 3 --stats --dtype bf16");
  REQUIRE(as_stored.code == 0);
  REQUIRE(int8.code == 0);
  REQUIRE(named.code == 0);
  CHECK(named.out == as_stored.out);
  // One byte per weight plus a float per row, against two bytes (norms and biases stay fp32).
  const double ratio = bytes_read(int8.err) / bytes_read(as_stored.err);
  INFO(as_stored.err << int8.err);
  CHECK(ratio > 0.45);
  CHECK(ratio < 0.6);
  // fp8 streams the same bytes as int8.
  Run fp8 =
      saker("generate " + model + "--prompt-ids '1 2 3' --max-new-tokens 3 --stats --dtype fp8");
  REQUIRE(fp8.code == 0);
  CHECK(bytes_read(fp8.err) == bytes_read(int8.err));
  Run r = saker("generate " + model + "--prompt-ids 1 --dtype fp32");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--dtype fp32: the checkpoint stores BF16 weights"));
  r = saker("generate " + model + "--prompt-ids 1 --dtype int4");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(
                        "--dtype must be auto, int8, w8a8, fp8, bf16, fp16 or fp32, got 'int4'"));
}

TEST_CASE("saker generate samples reproducibly from the seed", "[cli][sampler]") {
  const auto dir = kFixtures / "gqa8x2-fp32";
  const auto ref = read_json(dir / "reference.json");
  const auto& cs = ref["cases"][1];
  const std::string base = "generate --model '" + dir.string() + "' --prompt-ids '" +
                           join(cs["prompt_ids"].get<std::vector<int>>()) +
                           "' --max-new-tokens 40 --ignore-eos ";
  // top_k 1 keeps only the argmax: transformers' greedy tokens, whatever the temperature.
  Run r = saker(base + "--temperature 1.5 --top-k 1 --seed 5");
  REQUIRE(r.code == 0);
  CHECK(r.out == join(cs["greedy_ids"].get<std::vector<int>>()) + "\n");
  const Run a = saker(base + "--temperature 1 --top-p 0.95 --seed 7");
  const Run b = saker(base + "--temperature 1 --top-p 0.95 --seed 7");
  const Run c = saker(base + "--temperature 1 --top-p 0.95 --seed 8");
  REQUIRE(a.code == 0);
  CHECK(a.out == b.out);  // same seed, same draws
  CHECK(a.out != c.out);  // 40 draws from another seed differ somewhere
  CHECK(a.out != r.out);  // and sampling at temperature 1 leaves the greedy path
  r = saker(base + "--temperature -1");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--temperature must be >= 0, got -1"));
  r = saker(base + "--top-p 1.5");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--top-p must be in (0, 1], got 1.5"));
}

TEST_CASE("saker info on the real falcon-40b and falcon-7b-instruct configs", "[cli]") {
  const auto dir40 = kShared / "models/falcon-40b";
  Run r = saker("info --model '" + dir40.string() + "'");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("layers:       60"));
  CHECK_THAT(r.out, Catch::Contains("query heads:  128"));
  CHECK_THAT(r.out, Catch::Contains("KV heads:     8"));
  CHECK_THAT(r.out, Catch::Contains("41.84 B"));
  for (const auto& dir : {dir40, kShared / "models/falcon-7b-instruct"}) {
    r = saker("info --json --model '" + dir.string() + "'");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    const auto total = read_json(dir / "pytorch_model.bin.index.json")["metadata"]["total_size"];
    // bf16 checkpoints: two bytes per parameter, lm_head included.
    CHECK(j["parameters"].get<std::uint64_t>() * 2 == total.get<std::uint64_t>());
    CHECK(j["weight_bytes"] == total);
    CHECK(j["loadable"] == false);
  }
  // The KV cache per token per rank: K and V of every layer's KV heads (40B: 60 layers, 8 KV
  // heads of 64; at tp 8 one KV head each), at 4, 2 and 1 bytes, 8 bits with a 4-byte scale per
  // head vector.
  for (const auto& [tp, heads] : {std::pair{1, 8}, std::pair{8, 1}}) {
    r = saker("info --json --tp " + std::to_string(tp) + " --model '" + dir40.string() + "'");
    REQUIRE(r.code == 0);
    const auto kv = nlohmann::json::parse(r.out)["kv_cache"]["dtypes"];
    REQUIRE(kv.size() == 3);
    for (int i = 0; i < 3; ++i) {
      const std::uint64_t per_token = 2 * 60 * heads * (64 * (4 >> i) + (i == 2 ? 4 : 0));
      CHECK(kv[i]["bytes_per_token_per_rank"] == per_token);
      CHECK(kv[i]["full_context_sequences_per_gpu"] ==
            kv[i]["tokens_per_gpu"].get<std::uint64_t>() / 2048);
    }
    // Half the bytes hold twice the tokens (give or take the rounding).
    CHECK(kv[1]["tokens_per_gpu"].get<std::uint64_t>() / 2 ==
          kv[0]["tokens_per_gpu"].get<std::uint64_t>());
  }
  r = saker("info --json --model '" + (kShared / "models/falcon-7b-instruct").string() + "'");
  const auto j7 = nlohmann::json::parse(r.out);
  CHECK(j7["heads"] == 71);
  CHECK(j7["kv_heads"] == 1);
  CHECK(j7["layers"] == 32);
}

TEST_CASE("saker info on a loadable fixture reports its real bytes", "[cli]") {
  const auto dir = kFixtures / "gqa8x4-bf16-sharded";
  const Run r = saker("info --json --model '" + dir.string() + "'");
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["loadable"] == true);
  CHECK(j["kv_heads"] == 4);
  // The index's total_size, and two bytes per parameter.
  CHECK(j["weight_bytes"] ==
        read_json(dir / "model.safetensors.index.json")["metadata"]["total_size"]);
  CHECK(j["parameters"].get<std::uint64_t>() * 2 == j["weight_bytes"].get<std::uint64_t>());
}

// --- saker tokenize, and generate --prompt ---

namespace {

const fs::path kFalconTokenizerDir = kShared / "models/falcon-tokenizer";

fs::path write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST_CASE("saker tokenize prints the ids of all of stdin, its trailing newline included",
          "[cli][tokenizer]") {
  TempDir tmp;
  const std::string model = "tokenize --model " + quote(kFalconTokenizerDir.string());
  Run r = saker(model + " < " + quote(write_file(tmp.path / "in", "Hello world\n").string()));
  REQUIRE(r.code == 0);
  CHECK(r.out == "9856 1079 193\n");  // 193 is the newline, as Hugging Face tokenizers has it
  r = saker(model + " < /dev/null");
  REQUIRE(r.code == 0);
  CHECK(r.out == "\n");

  // The first line of each kind in the reference corpus (and of each kind ending in a newline),
  // byte for byte through stdin, then back with --decode.
  const auto corpus = read_jsonl(kFixtures / "tokenizers/corpus.jsonl");
  const auto refs = read_jsonl(kFixtures / "tokenizers/falcon_reference.jsonl");
  REQUIRE(corpus.size() == refs.size());
  std::set<std::string> kinds;
  for (std::size_t i = 0; i < corpus.size() && kinds.size() < 12; ++i) {
    const std::string text = corpus[i]["text"];
    const bool newline_last = !text.empty() && text.back() == '\n';
    if (!kinds.insert(corpus[i]["kind"].get<std::string>() + (newline_last ? "\n" : "")).second)
      continue;
    INFO("corpus line " << i + 1);
    r = saker(model + " < " + quote(write_file(tmp.path / "text", text).string()));
    REQUIRE(r.code == 0);
    CHECK(r.out == join(refs[i]["ids"].get<std::vector<int>>()) + "\n");
    r = saker(model + " --decode < " + quote(write_file(tmp.path / "ids", r.out).string()));
    REQUIRE(r.code == 0);
    CHECK(r.out == refs[i].value("decoded", text));  // absent when equal to the text
  }
  CHECK(kinds.size() == 12);
}

TEST_CASE("saker tokenize --decode prints exactly the text, special tokens skipped on request",
          "[cli][tokenizer]") {
  TempDir tmp;
  const std::string model = "tokenize --model " + quote(kFalconTokenizerDir.string());
  const auto ids = write_file(tmp.path / "ids", "0 9856 11\n1079\n");
  Run r = saker(model + " --decode < " + quote(ids.string()));
  REQUIRE(r.code == 0);
  CHECK(r.out == ">>TITLE<<Hello<|endoftext|> world");
  r = saker(model + " --decode --skip-special-tokens < " + quote(ids.string()));
  REQUIRE(r.code == 0);
  CHECK(r.out == "Hello world");
  r = saker(model + " --decode < " + quote(write_file(tmp.path / "bad", "1 65024").string()));
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("token id 65024 is outside the vocabulary [0, 65024)"));
  r = saker(model + " --skip-special-tokens < /dev/null");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--skip-special-tokens needs --decode"));
}

TEST_CASE("saker tokenize and generate --prompt need DIR/tokenizer.json", "[cli][tokenizer]") {
  TempDir tmp;
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kFixtures / "gqa8x2-fp32" / f, tmp.path / f);
  Run r = saker("tokenize --model " + quote(tmp.path.string()) + " < /dev/null");
  CHECK(r.code == 1);
  CHECK_THAT(r.err,
             Catch::Contains("model directory " + tmp.path.string() + " has no tokenizer.json"));
  r = saker("generate --model " + quote(tmp.path.string()) + " --prompt hello");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("has no tokenizer.json"));
  r = saker("generate --model " + quote(tmp.path.string()) + " --prompt hello --prompt-ids 1");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--prompt and --prompt-ids cannot be used together"));
  r = saker("generate --model " + quote(tmp.path.string()));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("one of --prompt or --prompt-ids is required"));
}

TEST_CASE("saker generate --prompt prints the text of what --prompt-ids generates",
          "[cli][tokenizer]") {
  // A tiny fixture model with a 384-id GPT-2-style tokenizer whose special <|endoftext|> is the
  // model's eos (11): stopping at eos must not print it.
  const auto small = kFixtures / "tokenizers/small384";
  TempDir tmp;
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kFixtures / "gqa8x2-fp32" / f, tmp.path / f);
  fs::copy_file(small / "tokenizer.json", tmp.path / "tokenizer.json");
  const auto ref = read_json(small / "reference.json");
  for (const auto& p : ref["prompts"]) {
    const std::string text = p["text"];
    const auto ids = p["ids"].get<std::vector<int>>();
    INFO(text);
    for (const std::string eos : {" --ignore-eos", ""}) {
      const std::string base =
          "generate --model " + quote(tmp.path.string()) + " --max-new-tokens 24" + eos;
      const Run by_ids = saker(base + " --prompt-ids '" + join(ids) + "'");
      REQUIRE(by_ids.code == 0);
      // The text of those ids, skipping special tokens as generate does.
      const Run decoded = saker("tokenize --model " + quote(tmp.path.string()) +
                                " --decode --skip-special-tokens < " +
                                quote(write_file(tmp.path / "ids", by_ids.out).string()));
      REQUIRE(decoded.code == 0);
      const Run by_text = saker(base + " --prompt " + quote(text));
      REQUIRE(by_text.code == 0);
      CHECK(by_text.out == decoded.out + "\n");
      const Run text_ids = saker(base + " --prompt " + quote(text) + " --print-ids");
      REQUIRE(text_ids.code == 0);
      CHECK(text_ids.out == by_ids.out);
    }
  }
}
