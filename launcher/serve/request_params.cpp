#include "launcher/serve/request_params.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "launcher/serve/constraint_params.h"

namespace saker::cli {
namespace {

using json = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& key, const std::string& what) {
  throw ParameterError("parameter `" + key + "` " + what);
}

double number(const json& v, const std::string& key) {
  if (!v.is_number()) fail(key, "must be a number, got " + v.dump());
  return v.get<double>();
}

std::int64_t integer(const json& v, const std::string& key, std::int64_t lo, std::int64_t hi) {
  if (!v.is_number_integer() &&
      !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
    fail(key, "must be an integer, got " + v.dump());
  const double d = v.get<double>();
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    fail(key,
         "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.dump());
  return static_cast<std::int64_t>(d);
}

bool boolean(const json& v, const std::string& key) {
  if (!v.is_boolean()) fail(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::vector<std::string> strings(const json& v, const std::string& key) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) fail(key, "must be a string or a list of strings, got " + v.dump());
  std::vector<std::string> out;
  for (const json& s : v) {
    if (!s.is_string()) fail(key, "must hold strings only, got " + s.dump());
    if (s.get<std::string>().empty()) fail(key, "must not hold an empty string");
    if (s.get<std::string>().size() > kMaxStopBytes)
      fail(key, "holds a string of " + std::to_string(s.get<std::string>().size()) +
                    " bytes; the limit is " + std::to_string(kMaxStopBytes));
    if (out.size() == kMaxStops)
      fail(key, "holds " + std::to_string(v.size()) + " strings; the limit is " +
                    std::to_string(kMaxStops));
    out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

void apply_parameters(const json& params, BatchRequest& r) {
  if (params.is_null()) return;
  if (!params.is_object())
    throw ParameterError("`parameters` must be an object, got " + params.dump());
  constexpr auto kMax = std::numeric_limits<std::int32_t>::max();
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  SamplingParams& s = r.sampling;
  s = SamplingParams{};  // the sampler's neutral values; greedy is decided below
  for (const auto& [key, v] : params.items()) {
    if (v.is_null()) continue;  // clients send unset fields as null (TGI's client does)
    if (key == "max_new_tokens" || key == "max_tokens") {
      r.max_new_tokens = integer(v, key, 1, kMax);
    } else if (key == "min_new_tokens" || key == "min_tokens") {
      r.min_new_tokens = integer(v, key, 0, kMax);
    } else if (key == "do_sample") {
      do_sample = boolean(v, key);
    } else if (key == "temperature") {
      temperature = number(v, key);
    } else if (key == "top_k") {
      const std::int64_t k = integer(v, key, -1, kMax);
      s.top_k = k < 0 ? 0 : static_cast<std::int32_t>(k);  // vLLM's -1 also means off
    } else if (key == "top_p") {
      s.top_p = static_cast<float>(number(v, key));
    } else if (key == "typical_p") {
      s.typical_p = static_cast<float>(number(v, key));
    } else if (key == "min_p") {
      s.min_p = static_cast<float>(number(v, key));
    } else if (key == "repetition_penalty") {
      s.repetition_penalty = static_cast<float>(number(v, key));
    } else if (key == "presence_penalty") {
      s.presence_penalty = static_cast<float>(number(v, key));
    } else if (key == "frequency_penalty") {
      s.frequency_penalty = static_cast<float>(number(v, key));
    } else if (key == "seed") {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
        fail(key, "must be a non-negative integer, got " + v.dump());
      s.seed = v.get<std::uint64_t>();
    } else if (key == "stop_sequences" || key == "stop") {
      r.stop = strings(v, key);
    } else if (key == "stop_token_ids") {
      if (!v.is_array()) fail(key, "must be a list of token ids, got " + v.dump());
      if (v.size() > kMaxStopTokenIds)
        fail(key, "holds " + std::to_string(v.size()) + " ids; the limit is " +
                      std::to_string(kMaxStopTokenIds));
      r.stop_token_ids.clear();
      for (const json& id : v)
        r.stop_token_ids.push_back(static_cast<std::int32_t>(integer(id, key, 0, kMax)));
    } else if (key == "ignore_eos" || key == "ignore_eos_token") {
      r.ignore_eos = boolean(v, key);
    } else if (key == "logprobs" || key == "top_n_tokens") {
      // TGI's details carry the chosen token's logprob; top_n_tokens adds alternatives.
      if (v.is_boolean())
        r.logprobs = v.get<bool>() ? std::max(r.logprobs, 0) : -1;
      else
        r.logprobs = static_cast<std::int32_t>(integer(v, key, 0, 20));
    } else if (key == "details" || key == "return_full_text" || key == "decoder_input_details") {
      boolean(v, key);  // output shape only: the frontend reads it
    } else if (key == "cache_salt") {
      if (!v.is_string()) fail(key, "must be a string, got " + v.dump());
      r.cache_salt = v.get<std::string>();
    } else if (key == "truncate") {
      r.truncate = integer(v, key, 1, kMax);
    } else if (key == "best_of" || key == "n") {
      if (integer(v, key, 1, kMax) != 1 && key == "best_of")
        fail(key, "must be 1: best-of sampling is not supported");
    } else if (apply_constraint_parameter(key, v, r)) {
      // structured outputs: response_format, guided_*, structured_outputs, grammar
    } else if (key == "watermark") {
      if (boolean(v, key)) fail(key, "is not supported");
    } else {
      fail(key, "is not supported");
    }
  }
  const bool sample = do_sample.value_or(temperature.has_value() && *temperature > 0);
  if (temperature && (!std::isfinite(*temperature) || *temperature < 0))
    fail("temperature", "must be >= 0, got " + params.at("temperature").dump());
  s.temperature = sample ? static_cast<float>(temperature.value_or(1.0)) : 0.0f;
  if (r.min_new_tokens > r.max_new_tokens)
    fail("min_new_tokens", "(" + std::to_string(r.min_new_tokens) +
                               ") must be <= max_new_tokens (" + std::to_string(r.max_new_tokens) +
                               ")");
  try {
    s.validate();
  } catch (const std::invalid_argument& e) {
    throw ParameterError(std::string("parameter ") + e.what());
  }
}

}  // namespace saker::cli
