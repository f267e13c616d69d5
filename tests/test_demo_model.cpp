// The trained demo model (models/falcon-demo, made by scripts/train_demo_model.py) against
// transformers (tests/fixtures/falcon-demo-reference.json, written by the same script) and on
// real text: held-out perplexity, greedy continuations, stop strings and chat turns, and sampled
// text that stays English.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/batch_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine_rig.h"
#include "tests/golden.h"
#include "tests/reference_generate.h"

using namespace saker;
using namespace saker::test;
namespace fs = std::filesystem;

namespace {

const fs::path kDemo = kFixtures / ".." / ".." / "models" / "falcon-demo";

// Sampled words found in Debian's wamerican word list: 89.9 % (728 of 810) measured on the shipped
// model, the bound a little below it (the random fixture models score near 0).
constexpr double kEnglishShare = 0.85;

const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    std::ifstream in(kFixtures / "falcon-demo-reference.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

// Perplexity of whole blocks, every position scored (fp32 compute from the bf16 weights), with
// the KV cache in `kv_dtype`.
double perplexity(const std::vector<std::vector<std::int32_t>>& blocks, DType kv_dtype) {
  const FalconConfig config = load_config(kDemo);
  const Checkpoint checkpoint = Checkpoint::open(kDemo);
  CpuBackend backend(2, config.max_positions, 1);
  const auto n = static_cast<std::int64_t>(blocks.front().size());
  FalconModel model(config, checkpoint, backend, ModelOptions{n, n, 0});
  const auto V = static_cast<std::size_t>(config.vocab_size);
  double nll = 0;
  std::size_t scored = 0;
  KvShape kv = model.kv_shape();
  kv.dtype = kv_dtype;
  for (const auto& ids : blocks) {
    KvCache cache(backend, kv, n / 16, 16);
    std::vector<std::int32_t> table(static_cast<std::size_t>(n / 16));
    std::iota(table.begin(), table.end(), 0);
    const SequenceStep step{ids, 0, table, true};
    const auto logits = model.forward({&step, 1}, cache);
    for (std::size_t p = 0; p + 1 < ids.size(); ++p) {
      const auto row = logits.subspan(p * V, V);
      const float top = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (const float x : row) sum += std::exp(static_cast<double>(x - top));
      nll -= static_cast<double>(row[static_cast<std::size_t>(ids[p + 1])] - top) - std::log(sum);
      ++scored;
    }
  }
  return std::exp(nll / static_cast<double>(scored));
}

BatchResult run_one(EngineRig& rig, const Tokenizer& tok, BatchRequest r) {
  SchedulerConfig cfg{8, 64, AdmissionPolicy::kMaxUtilization};
  BatchEngine engine(rig.runner, cfg, rig.config.eos_token_ids, &tok);
  r.id = 1;
  engine.add(std::move(r));
  run_to_completion(engine);
  return *engine.take_result(1);
}

std::set<std::string> dictionary() {
  std::set<std::string> words;
  std::ifstream in("/usr/share/dict/american-english");  // Debian's wamerican (scripts/setup.sh)
  for (std::string w; std::getline(in, w);) {
    std::transform(w.begin(), w.end(), w.begin(), [](unsigned char c) { return std::tolower(c); });
    words.insert(w);
  }
  return words;
}

}  // namespace

TEST_CASE("the demo model's held-out perplexity equals transformers'", "[demo][golden]") {
  const auto& ref = reference();
  const auto blocks = ref["perplexity_blocks"].get<std::vector<std::vector<std::int32_t>>>();
  const double ours = perplexity(blocks, DType::F32);
  const double ours_bf16_kv = perplexity(blocks, DType::BF16);  // the default KV cache
  const double fp32 = ref["perplexity_fp32"], bf16 = ref["perplexity_bf16"];
  INFO("saker " << ours << " (bf16 KV cache " << ours_bf16_kv << "), transformers fp32 " << fp32
                << ", bf16 " << bf16 << " over " << blocks.size() << " x " << blocks.front().size()
                << " held-out tokens");
  std::printf(
      "demo model held-out perplexity: saker %.5f (bf16 KV cache %.5f), transformers fp32 "
      "%.5f, bf16 %.5f\n",
      ours, ours_bf16_kv, fp32, bf16);
  // saker computes in fp32 from the bf16 weights, as transformers' fp32 run does.
  CHECK(std::abs(ours / fp32 - 1) < 1e-5);
  // transformers' bf16 compute rounds every activation to 8 bits of mantissa; saker's bf16 KV
  // cache rounds only K and V.
  CHECK(std::abs(ours / bf16 - 1) < 0.02);
  CHECK(std::abs(ours_bf16_kv / fp32 - 1) < 0.01);
  // A model that learned something: far below the uniform perplexity of its 8192 ids.
  CHECK(ours < 200);
}

TEST_CASE("the demo model's greedy continuations of held-out prompts equal transformers'",
          "[demo][golden]") {
  EngineRig rig(kDemo, 256);
  int same = 0, cases = 0;
  for (const auto& c : reference()["greedy"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
    const auto want = c["greedy_ids"].get<std::vector<std::int32_t>>();
    GenerateOptions opt;
    opt.max_new_tokens = static_cast<std::int64_t>(want.size());
    opt.ignore_eos = true;
    const auto got = generate_sequence(rig.runner, prompt, opt).tokens;
    INFO(c["prompt"].get<std::string>());
    CHECK(got == want);
    same += got == want;
    ++cases;
  }
  CHECK(cases == 20);
  CHECK(same == cases);
}

TEST_CASE("stop strings and chat turns fire on the demo model's real text", "[demo]") {
  EngineRig rig(kDemo, 256);
  const Tokenizer tok = Tokenizer::from_model_dir(kDemo);
  // Prose: the first "," of a greedy continuation ends it when "," is a stop string.
  BatchRequest prose;
  prose.prompt = tok.encode("And the LORD said unto Moses");
  prose.max_new_tokens = 48;
  prose.ignore_eos = true;
  const BatchResult free = run_one(rig, tok, prose);
  const auto comma = free.text.find(',');
  REQUIRE(comma != std::string::npos);
  prose.stop = {","};
  const BatchResult stopped = run_one(rig, tok, prose);
  INFO("free: " << free.text);
  CHECK(stopped.finish == FinishReason::kStopSequence);
  CHECK(stopped.text == free.text.substr(0, comma));

  // Chat: the model learned Falcon's turns; it ends its answer by starting the user's next turn,
  // which the chat stop string "\nUser:" cuts off.
  int turns_ended = 0;
  const std::vector<std::string> questions = {"What is a cynic?", "What is a hacker?",
                                              "Define patience.", "What does \"kludge\" mean?"};
  for (const std::string& q : questions) {
    BatchRequest chat;
    chat.prompt = tok.encode("User: " + q + "\nFalcon:");
    chat.max_new_tokens = 160;
    const BatchResult whole = run_one(rig, tok, chat);
    chat.stop = {"\nUser:"};
    const BatchResult turn = run_one(rig, tok, chat);
    INFO(q << " -> " << whole.text);
    const auto next_turn = whole.text.find("\nUser:");
    if (next_turn == std::string::npos) continue;
    ++turns_ended;
    CHECK(turn.finish == FinishReason::kStopSequence);
    CHECK(turn.text == whole.text.substr(0, next_turn));
    CHECK(turn.text.size() > 8);  // an answer came before the turn ended
  }
  CHECK(turns_ended >= 3);
}

TEST_CASE("sampled text at temperature 0.8 stays English", "[demo]") {
  EngineRig rig(kDemo, 256);
  const Tokenizer tok = Tokenizer::from_model_dir(kDemo);
  const std::set<std::string> dict = dictionary();
  REQUIRE(dict.size() > 50000);
  std::size_t words = 0, known = 0;
  std::uint64_t seed = 1;
  for (const auto& c : reference()["greedy"]) {
    BatchRequest r;
    r.prompt = c["prompt_ids"].get<std::vector<std::int32_t>>();
    r.max_new_tokens = 64;
    r.ignore_eos = true;
    r.sampling.temperature = 0.8f;
    r.sampling.seed = seed++;
    const std::string text = run_one(rig, tok, r).text;
    std::string w;
    for (const char ch : text + " ") {
      if (std::isalpha(static_cast<unsigned char>(ch))) {
        w += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      } else if (!w.empty()) {
        ++words;
        known += dict.count(w);
        w.clear();
      }
    }
  }
  const double share = static_cast<double>(known) / static_cast<double>(words);
  std::printf("demo model: %zu of %zu sampled words (%.1f %%) are in wamerican\n", known, words,
              100 * share);
  CHECK(words > 500);
  CHECK(share > kEnglishShare);
}
