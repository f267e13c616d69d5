#include "launcher/offline/jsonl_job.h"

#include <fstream>
#include <memory>
#include <stdexcept>

#include "engine/bounded_json.h"
#include "launcher/offline/progress.h"
#include "launcher/serve/request_params.h"

namespace saker::cli {

using json = nlohmann::ordered_json;

JsonlJob read_jsonl_job(const std::string& path, const Tokenizer& tok, const RequestLimits& limits,
                        std::int64_t default_max_new) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read --input " + path);
  JsonlJob job;
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    const std::string where = path + " line " + std::to_string(n) + ": ";
    try {
      const json j = parse_bounded_json<json>(line);
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
      validate_request(r, limits);
      job.ids.push_back(j.contains("id") ? j["id"] : json());
      job.logprobs.push_back(r.logprobs >= 0);
      job.requests.push_back(std::move(r));
    } catch (const json::exception& e) {
      throw std::invalid_argument(where + "not valid JSON (" + e.what() + ")");
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(where + e.what());
    }
  }
  if (job.requests.empty()) throw std::invalid_argument("--input " + path + " holds no requests");
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

namespace {

// Results arrive in any order; lines go out in input order.
class InOrderWriter {
 public:
  InOrderWriter(const JsonlJob& job, JsonlOutput out)
      : job_(job), out_(out), results_(job.requests.size()) {}
  void add(std::size_t i, std::shared_ptr<const BatchResult> r) {
    tokens_ += r->tokens.size();
    results_[i] = std::move(r);
  }
  void write_ready() {
    for (; written_ < results_.size() && results_[written_]; ++written_)
      out_.out << result_json(written_, job_.ids[written_], *results_[written_],
                              job_.logprobs[written_])
                      .dump()
               << "\n";
    out_.out.flush();
    if (!out_.out) throw std::runtime_error("writing --output " + out_.name + " failed");
  }
  std::uint64_t tokens() const { return tokens_; }

 private:
  const JsonlJob& job_;
  JsonlOutput out_;
  std::vector<std::shared_ptr<const BatchResult>> results_;
  std::size_t written_ = 0;
  std::uint64_t tokens_ = 0;
};

}  // namespace

void run_jsonl_job(Engine& engine, JsonlJob job, const std::string& input, JsonlOutput output) {
  InOrderWriter writer(job, output);
  std::string failed;
  std::int64_t done = 0;
  for (std::size_t i = 0; i < job.requests.size(); ++i) {
    BatchRequest r = std::move(job.requests[i]);
    r.id = engine.requests().next_id();
    const Admit admit = engine.submit(std::move(r), [&, i](RequestEvent&& ev) {
      if (ev.finish == FinishReason::kNone) return;
      if (!ev.error.empty() && failed.empty())
        failed = input + " request " + std::to_string(i + 1) + ": " + ev.error;
      if (ev.result) writer.add(i, std::move(ev.result));
      ++done;
    });
    if (admit != Admit::kQueued) throw std::logic_error("the engine refused an offline request");
  }
  Progress progress(static_cast<std::int64_t>(job.requests.size()), output.progress_interval);
  RunOptions ro;
  ro.after_iteration = [&](const IterationStats&) {
    writer.write_ready();
    progress.update(done, writer.tokens());
  };
  engine.run(ro);
  if (!failed.empty()) throw std::runtime_error(failed);
  writer.write_ready();
  progress.update(done, writer.tokens(), true);
}

}  // namespace saker::cli
