#include "launcher/launch/properties.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>
#include <stdexcept>

namespace saker::cli {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\f");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\f") - b + 1);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

[[noreturn]] void bad(const std::string& key, const std::string& value, const std::string& want) {
  throw std::invalid_argument("serving.properties: " + key + "=" + value + ": " + want);
}

std::int64_t integer(const Properties& p, const std::string& key, std::int64_t lo) {
  const std::string& v = p.at(key);
  std::size_t used = 0;
  std::int64_t n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size()) bad(key, v, "must be an integer");
  if (n < lo) bad(key, v, "must be >= " + std::to_string(lo));
  return n;
}

double number(const Properties& p, const std::string& key, double lo) {
  const std::string& v = p.at(key);
  std::size_t used = 0;
  double d = 0;
  try {
    d = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !std::isfinite(d)) bad(key, v, "must be a number");
  if (d < lo) bad(key, v, "must be >= " + std::to_string(static_cast<long long>(lo)));
  // mpirun_command passes it on as a long; a larger value would not convert.
  if (d > 1e18) bad(key, v, "must be at most 1e18");
  return d;
}

}  // namespace

Properties parse_properties(const std::string& text, const std::string& source) {
  Properties out;
  std::string logical;
  int line_no = 0, start_line = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t end = std::min(text.find('\n', pos), text.size());
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (logical.empty()) {
      const std::string t = trim(line);
      if (t.empty() || t[0] == '#' || t[0] == '!') {
        if (end == text.size()) break;
        continue;
      }
      start_line = line_no;
    }
    // A line ending in an odd number of backslashes continues on the next one.
    std::size_t slashes = 0;
    while (slashes < line.size() && line[line.size() - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 1) {
      logical += trim(line.substr(0, line.size() - 1));
      if (end == text.size()) break;
      continue;
    }
    logical += trim(line);
    const std::size_t sep = logical.find_first_of("=: \t");
    std::string key = trim(logical.substr(0, sep));
    std::string value;
    if (sep != std::string::npos) {
      std::size_t v = logical.find_first_not_of(" \t", sep);
      if (v != std::string::npos && (logical[v] == '=' || logical[v] == ':')) ++v;
      value = v == std::string::npos ? "" : trim(logical.substr(v));
    }
    if (key.empty())
      throw std::invalid_argument(source + " line " + std::to_string(start_line) + ": no key in '" +
                                  logical + "'");
    out[key] = value;
    logical.clear();
    if (end == text.size()) break;
  }
  if (!logical.empty())
    throw std::invalid_argument(source + " line " + std::to_string(start_line) +
                                ": the file ends inside a continued line");
  return out;
}

Properties properties_from_env(const std::vector<std::string>& env) {
  Properties out;
  for (const std::string& e : env) {
    const auto eq = e.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = e.substr(0, eq), value = e.substr(eq + 1);
    if (name.starts_with("OPTION_") && name.size() > 7)
      out["option." + lower(name.substr(7))] = value;
    else if (name.starts_with("SERVING_") && name.size() > 8)
      out[lower(name.substr(8))] = value;
  }
  return out;
}

// option.speculative_draft_model and option.speculative_length.
static void speculative_settings(const Properties& p, LaunchSettings& s) {
  auto has = [&](const char* k) { return p.count(k) > 0; };
  if (has("option.speculative_draft_model")) {
    const std::string& d = p.at("option.speculative_draft_model");
    if (!std::filesystem::exists(std::filesystem::path(d) / "config.json"))
      bad("option.speculative_draft_model", d,
          "must be a local model directory holding config.json (a Falcon with the target's "
          "tokenizer)");
    s.speculative_draft_model = d;
  }
  if (has("option.speculative_length")) {
    s.speculative_length = integer(p, "option.speculative_length", 1);
    if (*s.speculative_length > 16)
      bad("option.speculative_length", p.at("option.speculative_length"), "must be at most 16");
    if (!s.speculative_draft_model)
      bad("option.speculative_length", p.at("option.speculative_length"),
          "needs option.speculative_draft_model (the model that proposes the tokens)");
  }
}

LaunchSettings validate_properties(const Properties& p) {
  static const std::set<std::string> known = {"engine",
                                              "option.model_id",
                                              "option.tensor_parallel_degree",
                                              "option.rolling_batch",
                                              "option.max_rolling_batch_size",
                                              "option.max_rolling_batch_prefill_tokens",
                                              "option.dtype",
                                              "option.max_input_len",
                                              "option.max_output_len",
                                              "option.output_formatter",
                                              "option.model_loading_timeout",
                                              "option.enable_prefix_caching",
                                              "option.batch_invariant",
                                              "option.kv_cache_dtype",
                                              "option.cpu_matmul",
                                              "option.speculative_draft_model",
                                              "option.speculative_length",
                                              "option.api_key",
                                              "batch_size",
                                              "max_batch_delay",
                                              "job_queue_size"};
  LaunchSettings s;
  for (const auto& [k, v] : p)
    if (!known.count(k)) s.unknown_keys.push_back(k);
  auto has = [&](const char* k) { return p.count(k) > 0; };
  if (has("engine") && p.at("engine") != "MPI")
    bad("engine", p.at("engine"), "saker runs as engine=MPI (one process per device under mpirun)");
  if (!has("option.model_id") || p.at("option.model_id").empty())
    throw std::invalid_argument(
        "serving.properties: option.model_id is required (a local model directory)");
  s.model_dir = p.at("option.model_id");
  if (!std::filesystem::is_directory(s.model_dir) ||
      !std::filesystem::exists(std::filesystem::path(s.model_dir) / "config.json"))
    bad("option.model_id", s.model_dir, "must be a local model directory holding config.json");
  if (has("option.tensor_parallel_degree")) {
    if (p.at("option.tensor_parallel_degree") == "max")
      s.tp_max = true;
    else {
      const std::int64_t tp = integer(p, "option.tensor_parallel_degree", 1);
      if (tp > 65536)  // an int, and more ranks than any job has
        bad("option.tensor_parallel_degree", p.at("option.tensor_parallel_degree"),
            "must be at most 65536");
      s.tensor_parallel = static_cast<int>(tp);
    }
  }
  if (has("option.rolling_batch")) {
    const std::string rb = lower(p.at("option.rolling_batch"));
    if (rb == "disable")
      s.batching = "dynamic";
    else if (rb == "auto" || rb == "lmi-dist" || rb == "scheduler" || rb == "vllm" ||
             rb == "trtllm")
      s.batching = "rolling";
    else
      bad("option.rolling_batch", p.at("option.rolling_batch"),
          "must be auto, lmi-dist, scheduler, vllm, trtllm (all: saker's rolling batch) or "
          "disable");
  }
  if (has("option.max_rolling_batch_size"))
    s.max_rolling_batch_size = integer(p, "option.max_rolling_batch_size", 1);
  if (has("option.max_rolling_batch_prefill_tokens"))
    s.max_rolling_batch_prefill_tokens = integer(p, "option.max_rolling_batch_prefill_tokens", 1);
  if (has("option.dtype")) {
    const std::string d = lower(p.at("option.dtype"));
    if (d != "int8" && d != "w8a8" && d != "fp8" && d != "fp16" && d != "bf16" && d != "fp32" &&
        d != "float16" && d != "bfloat16" && d != "float32")
      bad("option.dtype", p.at("option.dtype"), "must be fp16, bf16, fp32, int8, w8a8 or fp8");
    s.dtype = d;
  }
  if (has("option.max_input_len")) s.max_input_len = integer(p, "option.max_input_len", 1);
  if (has("option.max_output_len")) s.max_output_len = integer(p, "option.max_output_len", 1);
  if (has("option.output_formatter")) {
    s.output_formatter = p.at("option.output_formatter");
    if (s.output_formatter != "json" && s.output_formatter != "jsonlines")
      bad("option.output_formatter", s.output_formatter, "must be json or jsonlines");
  }
  if (has("option.model_loading_timeout"))
    s.model_loading_timeout_s = number(p, "option.model_loading_timeout", 1);
  for (const auto& [key, field] :
       {std::pair{"option.enable_prefix_caching", &LaunchSettings::enable_prefix_caching},
        std::pair{"option.batch_invariant", &LaunchSettings::batch_invariant}}) {
    if (!has(key)) continue;
    const std::string v = lower(p.at(key));
    if (v != "true" && v != "false") bad(key, p.at(key), "must be true or false");
    s.*field = v == "true";
  }
  if (has("option.kv_cache_dtype")) {
    const std::string v = lower(p.at("option.kv_cache_dtype"));
    const std::string name = v == "float32"    ? "fp32"
                             : v == "bfloat16" ? "bf16"
                             : v == "float16"  ? "fp16"
                             : v == "fp8"      ? "fp8_e4m3"
                                               : v;
    if (name != "auto" && name != "fp32" && name != "bf16" && name != "fp16" &&
        name != "fp8_e4m3" && name != "int8")
      bad("option.kv_cache_dtype", p.at("option.kv_cache_dtype"),
          "must be auto, fp32, bf16, fp16, fp8_e4m3 or int8");
    s.kv_cache_dtype = name;
  }
  if (has("option.cpu_matmul")) {
    const std::string v = lower(p.at("option.cpu_matmul"));
    if (v != "auto" && v != "fp32" && v != "bf16")
      bad("option.cpu_matmul", p.at("option.cpu_matmul"), "must be auto, fp32 or bf16");
    s.cpu_matmul = v;
  }
  speculative_settings(p, s);
  if (has("option.api_key")) {
    if (p.at("option.api_key").empty())  // the value is a secret: never echoed in a message
      throw std::invalid_argument("option.api_key must not be empty");
    s.api_key = p.at("option.api_key");
  }
  if (has("batch_size")) s.batch_size = integer(p, "batch_size", 1);
  if (has("max_batch_delay")) s.max_batch_delay_ms = number(p, "max_batch_delay", 0);
  if (has("job_queue_size")) s.job_queue_size = integer(p, "job_queue_size", 1);
  return s;
}

std::vector<std::string> mpirun_command(const LaunchSettings& s, const LaunchTarget& t) {
  const int np = s.tensor_parallel;
  std::vector<std::string> c = {t.mpirun};
  if (t.as_root) c.push_back("--allow-run-as-root");
  const bool one_node = t.hostfile.empty() && t.hosts.empty();
  if (one_node && np > t.cores) c.push_back("--oversubscribe");
  c.insert(c.end(), {"-np", std::to_string(np), "--bind-to", "none"});
  if (!t.hostfile.empty()) c.insert(c.end(), {"--hostfile", t.hostfile});
  if (!t.hosts.empty()) c.insert(c.end(), {"--host", t.hosts});
  for (const std::string& e : t.env_to_forward) c.insert(c.end(), {"-x", e});
  c.insert(c.end(), {t.saker, "serve", "--model", s.model_dir, "--host", t.host, "--port",
                     std::to_string(t.port), "--batching", s.batching});
  if (one_node) c.insert(c.end(), {"--threads", std::to_string(std::max(1, t.cores / np))});
  auto opt = [&](const char* flag, const auto& v) {
    if (v) c.insert(c.end(), {flag, std::to_string(*v)});
  };
  if (s.batching == "dynamic") {
    opt("--batch-size", s.batch_size);
    if (s.max_batch_delay_ms)
      c.insert(c.end(),
               {"--max-batch-delay", std::to_string(static_cast<long>(*s.max_batch_delay_ms))});
  } else {
    opt("--max-rolling-batch-size", s.max_rolling_batch_size);
  }
  opt("--max-rolling-batch-prefill-tokens", s.max_rolling_batch_prefill_tokens);
  if (s.dtype == "int8" || s.dtype == "w8a8" || s.dtype == "fp8")
    c.insert(c.end(), {"--dtype", *s.dtype});
  opt("--max-input-len", s.max_input_len);
  opt("--max-output-len", s.max_output_len);
  opt("--job-queue-size", s.job_queue_size);
  if (s.enable_prefix_caching)
    c.push_back(*s.enable_prefix_caching ? "--enable-prefix-caching"
                                         : "--no-enable-prefix-caching");
  if (s.batch_invariant)
    c.push_back(*s.batch_invariant ? "--batch-invariant" : "--no-batch-invariant");
  if (s.kv_cache_dtype) c.insert(c.end(), {"--kv-cache-dtype", *s.kv_cache_dtype});
  if (s.cpu_matmul) c.insert(c.end(), {"--cpu-matmul", *s.cpu_matmul});
  if (s.speculative_draft_model)
    c.insert(c.end(), {"--speculative-model", *s.speculative_draft_model});
  opt("--num-speculative-tokens", s.speculative_length);
  c.insert(c.end(),
           {"--output-formatter", s.output_formatter, "--model-loading-timeout",
            std::to_string(static_cast<long>(std::ceil(s.model_loading_timeout_s))),
            "--drain-timeout", std::to_string(static_cast<long>(std::ceil(t.drain_timeout_s)))});
  c.insert(c.end(), t.extra_serve_args.begin(), t.extra_serve_args.end());
  return c;
}

}  // namespace saker::cli
