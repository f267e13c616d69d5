// saker generate --input prompts.jsonl --output results.jsonl: an offline job through the rolling
// batch, as a cluster job script runs it. Every line is read and checked before any work starts,
// so a bad line fails the job at once, naming the file and line; results are written in input
// order as soon as every earlier one is done.
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_setup.h"
#include "launcher/offline/progress.h"
#include "launcher/serve/request_params.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

using json = nlohmann::json;

struct Job {
  std::vector<BatchRequest> requests;
  std::vector<json> ids;  // the input's own "id" field per line, or null
};

Job read_job(const std::string& path, const Tokenizer& tok, const ModelShape& c,
             std::int64_t default_max_new) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read --input " + path);
  Job job;
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    const std::string where = path + " line " + std::to_string(n) + ": ";
    try {
      const json j = json::parse(line);
      if (!j.is_object()) throw ParameterError("a line must be a JSON object");
      for (const auto& [key, v] : j.items())
        if (key != "prompt" && key != "inputs" && key != "parameters" && key != "id")
          throw ParameterError("unknown field `" + key + "` (expected prompt, parameters, id)");
      const json* prompt = j.contains("prompt")   ? &j["prompt"]
                           : j.contains("inputs") ? &j["inputs"]
                                                  : nullptr;
      if (!prompt || !prompt->is_string()) throw ParameterError("`prompt` must be a string");
      BatchRequest r;
      r.id = job.requests.size();
      r.max_new_tokens = default_max_new;
      r.prompt = tok.encode(prompt->get<std::string>());
      if (r.prompt.empty()) throw ParameterError("the prompt is empty");
      if (j.contains("parameters")) apply_parameters(j["parameters"], r);
      r.validate(c.vocab_size);
      const auto total = static_cast<std::int64_t>(r.prompt.size()) + r.max_new_tokens;
      if (total > c.max_positions)
        throw ParameterError(
            "prompt tokens + max_new_tokens must be <= " + std::to_string(c.max_positions) +
            ". Given: " + std::to_string(r.prompt.size()) + " prompt tokens and " +
            std::to_string(r.max_new_tokens) + " max_new_tokens");
      job.ids.push_back(j.contains("id") ? j["id"] : json());
      job.requests.push_back(std::move(r));
    } catch (const json::exception& e) {
      throw UsageError(where + "not valid JSON (" + e.what() + ")");
    } catch (const std::invalid_argument& e) {
      throw UsageError(where + e.what());
    }
  }
  if (job.requests.empty()) throw UsageError("--input " + path + " holds no requests");
  return job;
}

json result_json(std::size_t index, const json& id, const BatchResult& r, bool logprobs) {
  json j = {{"index", index}};
  if (!id.is_null()) j["id"] = id;
  j["generated_text"] = r.text;
  j["prompt_tokens"] = r.prompt_tokens;
  j["generated_tokens"] = r.tokens.size();
  j["finish_reason"] = finish_reason_name(r.finish);
  j["token_ids"] = r.tokens;
  if (logprobs) {
    j["logprobs"] = r.logprobs;
    json top = json::array();
    for (const auto& alts : r.top_logprobs) {
      json a = json::array();
      for (const TokenLogprob& t : alts) a.push_back({{"id", t.id}, {"logprob", t.logprob}});
      top.push_back(std::move(a));
    }
    j["top_logprobs"] = std::move(top);
  }
  return j;
}

}  // namespace

int run_generate_jsonl(const std::vector<std::string>& args) {
  EngineOptions o;
  std::string input, output;
  std::int64_t max_new = 32;
  double interval = 10;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&o.model_dir)->required(),
                                                 "Hugging Face model directory (safetensors)")(
      "input", po::value(&input)->required(),
      "JSONL: {\"prompt\": str, \"parameters\": {...}, \"id\": any} per line")(
      "output", po::value(&output)->required(), "JSONL results, in input order")(
      "max-new-tokens", po::value(&max_new)->default_value(max_new),
      "for lines whose parameters do not say")(
      "progress-interval", po::value(&interval)->default_value(interval),
      "seconds between progress lines when stderr is not a terminal");
  desc.add(engine_options(o));
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker generate --model DIR --input prompts.jsonl --output "
             "results.jsonl [options]"))
    return 0;
  finish_engine_options(vm, o);
  if (max_new < 1) throw UsageError("--max-new-tokens must be >= 1");

  Communicator& comm = world().tensor_parallel();
  const ModelShape config = load_model_shape(o.model_dir);
  // Rank 0 alone reads the job; a bad line stops every rank before the model is loaded.
  std::optional<Tokenizer> tok;
  Job job;
  std::ofstream out;
  if (comm.rank() == 0) {
    tok.emplace(Tokenizer::from_model_dir(o.model_dir));
    job = read_job(input, *tok, config, max_new);
    out.open(output);
    if (!out) throw std::runtime_error("cannot write --output " + output);
  }
  Engine engine(o, comm);
  if (!engine.runner().is_driver()) {
    engine.runner().serve();
    return 0;
  }
  BatchEngine batch(engine.runner(), engine.scheduler_config(), config.eos_token_ids, &*tok);
  for (std::size_t i = 0; i < job.requests.size(); ++i) {
    try {
      batch.add(job.requests[i]);
    } catch (const std::exception& e) {
      engine.runner().stop();
      throw std::runtime_error(input + " request " + std::to_string(i + 1) + ": " + e.what());
    }
  }
  Progress progress(static_cast<std::int64_t>(job.requests.size()), interval);
  std::size_t written = 0;
  auto write_ready = [&] {
    for (; written < job.requests.size(); ++written) {
      auto r = batch.take_result(written);
      if (!r) break;
      out << result_json(written, job.ids[written], *r, job.requests[written].logprobs >= 0).dump()
          << "\n";
    }
    out.flush();
    if (!out) throw std::runtime_error("writing --output " + output + " failed");
  };
  try {
    while (!batch.idle()) {
      batch.step();
      write_ready();
      progress.update(static_cast<std::int64_t>(batch.stats().finished),
                      batch.stats().generated_tokens);
    }
  } catch (...) {
    engine.runner().stop();
    throw;
  }
  engine.runner().stop();
  write_ready();
  progress.update(static_cast<std::int64_t>(batch.stats().finished), batch.stats().generated_tokens,
                  true);
  return 0;
}

}  // namespace saker::cli
