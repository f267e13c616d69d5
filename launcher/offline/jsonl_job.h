// An offline JSONL job, as a cluster job script runs it: every line is read and checked before
// any work starts (a bad line fails the job at once, naming the file and line), every request goes
// to the engine at once, and results are written in input order as soon as every earlier one is
// done.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"

namespace saker::cli {

struct JsonlJob {
  std::vector<BatchRequest> requests;
  std::vector<nlohmann::ordered_json> ids;  // the input's own "id" field per line, or null
  std::vector<bool> logprobs;               // whether the line asked for log-probabilities
};

// One JSON object per line: `prompt` (or `inputs`), optional `parameters` (DJL / TGI / OpenAI
// names) and `id`. std::invalid_argument naming the file and line of the first bad one.
JsonlJob read_jsonl_job(const std::string& path, const Tokenizer& tok, const RequestLimits& limits,
                        std::int64_t default_max_new);

// One result line: index, id, generated_text, token counts, finish_reason, token_ids (and
// logprobs when asked).
nlohmann::ordered_json result_json(std::size_t index, const nlohmann::ordered_json& id,
                                   const BatchResult& r, bool logprobs);

struct JsonlOutput {
  std::ostream& out;
  std::string name;          // for messages: the --output path
  double progress_interval;  // seconds between progress lines when stderr is not a terminal
};

// Rank 0: runs the job through the engine (other ranks call engine.run()), writing each result
// as soon as every earlier one is written. A request the engine refuses fails the job, naming
// the input and its line number among the requests.
void run_jsonl_job(Engine& engine, JsonlJob job, const std::string& input, JsonlOutput output);

}  // namespace saker::cli
