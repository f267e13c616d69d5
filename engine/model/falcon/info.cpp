#include "engine/model/falcon/info.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <utility>

#include "engine/model/falcon/config.h"
#include "engine/model/falcon/shard_plan.h"
#include "engine/model/inventory.h"

namespace saker {
namespace {

using json = nlohmann::json;

std::string with_commas(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

std::string billions(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f B", static_cast<double>(v) / 1e9);
  return buf;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::int64_t parameter_count_of(const ExpectedTensor& t) {
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  return n;
}

const char* block_name(BlockKind b) {
  switch (b) {
    case BlockKind::kParallelOneNorm:
      return "parallel, 1 LayerNorm";
    case BlockKind::kParallelTwoNorm:
      return "parallel, ln_attn + ln_mlp";
    case BlockKind::kSequential:
      return "sequential";
  }
  return "?";
}

// Per-rank shards: elements of every tensor the rank reads, at `elem` bytes each.
json rank_table(const FalconConfig& c, const ShardPlan& plan, bool lm_head_stored,
                std::uint64_t elem) {
  const auto shapes = expected_tensors(c, lm_head_stored);
  json ranks = json::array();
  for (const RankShard& s : plan.ranks()) {
    std::uint64_t rank_bytes = 0;
    for (const auto& t : shapes)
      rank_bytes +=
          static_cast<std::uint64_t>(plan.tp() > 1 ? plan.elements(s.rank, t.name, t.shape)
                                                   : parameter_count_of(t)) *
          elem;
    ranks.push_back({{"rank", s.rank},
                     {"heads", {s.heads.begin, s.heads.end}},
                     {"kv_heads", {s.kv_groups.begin, s.kv_groups.end}},
                     {"ffn", {s.ffn.begin, s.ffn.end}},
                     {"vocab", {s.vocab.begin, s.vocab.end}},
                     {"weight_bytes", rank_bytes}});
  }
  return ranks;
}

// What the KV cache costs per token on the rank holding the most (its KV heads and weights), and
// how many tokens and full-context sequences fit on an 80 GiB GPU per rank at each element size:
// 90 % (the default --kv-cache-fraction) of what the rank's weights leave, before workspaces.
json kv_capacity(const FalconConfig& c, const ShardPlan& plan, const json& ranks) {
  std::int64_t kv_heads = 0;
  std::uint64_t weights = 0;
  for (const RankShard& s : plan.ranks()) kv_heads = std::max(kv_heads, s.local_kv_heads());
  for (const auto& r : ranks) weights = std::max(weights, r["weight_bytes"].get<std::uint64_t>());
  constexpr double kGpu = 80.0 * (1ull << 30), kFraction = 0.9;
  const double free = std::max(0.0, kGpu - static_cast<double>(weights)) * kFraction;
  json j = {{"gpu_bytes", kGpu}, {"kv_cache_fraction", kFraction}, {"dtypes", json::array()}};
  // Element bytes, and the bytes of the scale each head vector of a token carries (the 8-bit
  // forms' fp32 scale per token per KV head).
  struct Form {
    const char* name;
    int elem, scale;
  };
  for (const auto& [name, elem, scale] :
       {Form{"fp32", 4, 0}, Form{"bf16/fp16", 2, 0}, Form{"8-bit", 1, 4}}) {
    const auto per_token =
        static_cast<std::uint64_t>(2 * c.layers * kv_heads * (c.head_dim * elem + scale));
    const auto tokens = static_cast<std::uint64_t>(free / static_cast<double>(per_token));
    j["dtypes"].push_back(
        {{"dtype", name},
         {"bytes_per_token_per_rank", per_token},
         {"tokens_per_gpu", tokens},
         {"full_context_sequences_per_gpu", tokens / static_cast<std::uint64_t>(c.max_positions)}});
  }
  return j;
}

std::string kv_text(const json& kv, std::int64_t context) {
  std::ostringstream out;
  out << "\nKV cache per rank, and what fits on an 80 GiB GPU per rank (90 % of what the "
         "weights leave):\n"
      << "dtype             bytes/token   tokens          sequences of " << context << "\n";
  for (const auto& d : kv["dtypes"]) {
    char line[200];
    std::snprintf(line, sizeof line, "%-17s %-13s %-15s %s\n",
                  d["dtype"].get<std::string>().c_str(),
                  with_commas(d["bytes_per_token_per_rank"].get<std::uint64_t>()).c_str(),
                  with_commas(d["tokens_per_gpu"].get<std::uint64_t>()).c_str(),
                  with_commas(d["full_context_sequences_per_gpu"].get<std::uint64_t>()).c_str());
    out << line;
  }
  return out.str();
}

std::string text_of(const std::string& model_dir, const FalconConfig& c, const json& j,
                    bool lm_head_stored) {
  const auto params = j["parameters"].get<std::uint64_t>();
  std::ostringstream out;
  out << "model:        " << model_dir << "\n"
      << "variant:      " << c.variant() << "\n"
      << "model_type:   " << c.model_type << (c.new_arch ? " (new decoder architecture)" : "")
      << "\n"
      << "layers:       " << c.layers << "\n"
      << "hidden size:  " << c.hidden << "\n"
      << "query heads:  " << c.heads << " (head dim " << c.head_dim << ")\n"
      << "KV heads:     " << c.kv_heads << "\n"
      << "ffn size:     " << c.ffn << "\n"
      << "vocabulary:   " << c.vocab_size << "\n"
      << "block:        " << block_name(c.block) << (c.bias ? ", biases" : "") << "\n"
      << "positions:    "
      << (c.alibi ? std::string("ALiBi") : "rotary, theta " + number(c.rope_theta)) << ", context "
      << c.max_positions << "\n"
      << "parameters:   " << billions(params) << " (" << with_commas(params) << ", lm_head "
      << (lm_head_stored || !c.tied_embeddings ? "included" : "tied to the embeddings") << ")\n"
      << "weight bytes: " << with_commas(j["weight_bytes"].get<std::uint64_t>()) << " ("
      << j["weight_bytes_source"].get<std::string>() << ")\n"
      << "checkpoint:   " << j["checkpoint"].get<std::string>() << "\n";
  const int tp = j["tp"].get<int>();
  if (tp <= 1) return out.str();
  out << "\ntensor parallel over " << tp << " ranks"
      << (j["kv_heads_replicated"].get<bool>() ? " (KV heads replicated)" : "") << ":\n"
      << "rank  query heads      KV heads   ffn rows          vocab rows        weight bytes\n";
  auto range = [](const json& v) {
    return "[" + std::to_string(v[0].get<std::int64_t>()) + ", " +
           std::to_string(v[1].get<std::int64_t>()) + ")";
  };
  for (const auto& r : j["ranks"]) {
    char line[200];
    std::snprintf(line, sizeof line, "%-5d %-16s %-10s %-17s %-17s %s\n", r["rank"].get<int>(),
                  range(r["heads"]).c_str(), range(r["kv_heads"]).c_str(), range(r["ffn"]).c_str(),
                  range(r["vocab"]).c_str(),
                  with_commas(r["weight_bytes"].get<std::uint64_t>()).c_str());
    out << line;
  }
  return out.str();
}

}  // namespace

ModelReport falcon_report(const std::string& model_dir, int tp) {
  const FalconConfig c = load_config(model_dir);
  const CheckpointInventory inv = inspect_checkpoint(model_dir);
  const bool lm_head_stored = inv.tensor_names.count("lm_head.weight") > 0;
  const auto params = static_cast<std::uint64_t>(parameter_count(c, lm_head_stored));
  // Bytes: what the checkpoint says, else parameters at the config's dtype (bf16 by default).
  const std::uint64_t elem = c.torch_dtype == "float32" ? 4 : 2;
  const std::uint64_t bytes = inv.total_bytes.value_or(params * elem);
  const char* bytes_source = inv.total_bytes ? "checkpoint" : "estimated from torch_dtype";

  ModelReport report;
  json& j = report.json;
  j = {{"model", model_dir},
       {"model_type", c.model_type},
       {"variant", c.variant()},
       {"layers", c.layers},
       {"hidden_size", c.hidden},
       {"heads", c.heads},
       {"kv_heads", c.kv_heads},
       {"head_dim", c.head_dim},
       {"ffn_hidden_size", c.ffn},
       {"vocab_size", c.vocab_size},
       {"block", block_name(c.block)},
       {"new_decoder_architecture", c.new_arch},
       {"alibi", c.alibi},
       {"bias", c.bias},
       {"tied_embeddings", c.tied_embeddings},
       {"lm_head_stored", lm_head_stored || !c.tied_embeddings},
       {"rope_theta", c.alibi ? 0.0 : c.rope_theta},
       {"max_position_embeddings", c.max_positions},
       {"eos_token_ids", c.eos_token_ids},
       {"parameters", params},
       {"weight_bytes", bytes},
       {"weight_bytes_source", bytes_source},
       {"checkpoint", inv.format},
       {"loadable", inv.loadable}};
  const ShardPlan plan(c, tp);
  j["tp"] = tp;
  j["kv_heads_replicated"] = plan.kv_replicated();
  j["ranks"] = rank_table(c, plan, lm_head_stored, elem);
  j["kv_cache"] = kv_capacity(c, plan, j["ranks"]);
  report.text = text_of(model_dir, c, j, lm_head_stored) + kv_text(j["kv_cache"], c.max_positions);
  return report;
}

}  // namespace saker
