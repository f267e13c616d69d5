// saker info: the effective structure of a model, from its config (weights optional).
#include <cmath>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/model/falcon/config.h"
#include "engine/model/falcon/shard_plan.h"
#include "engine/model/inventory.h"
#include "launcher/app/cli.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

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

}  // namespace

int run_info(const std::vector<std::string>& args) {
  std::string model_dir;
  int tp = 0;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&model_dir)->required(),
                                                 "model directory (config.json; weights optional)")(
      "tp", po::value(&tp)->default_value(0),
      "print the shard plan for this tensor-parallel degree (default: the MPI world's size)")(
      "json", po::bool_switch(), "print JSON");
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: [mpirun -np N] saker info --model DIR [--tp N] [--json]"))
    return 0;
  if (tp < 0) throw UsageError("--tp must be positive");
  if (tp == 0) tp = world().size();

  const FalconConfig c = load_config(model_dir);
  const CheckpointInventory inv = inspect_checkpoint(model_dir);
  const bool lm_head_stored = inv.tensor_names.count("lm_head.weight") > 0;
  const auto params = static_cast<std::uint64_t>(parameter_count(c, lm_head_stored));
  // Bytes: what the checkpoint says, else parameters at the config's dtype (bf16 by default).
  const std::uint64_t elem = c.torch_dtype == "float32" ? 4 : 2;
  const std::uint64_t bytes = inv.total_bytes.value_or(params * elem);
  const char* bytes_source = inv.total_bytes ? "checkpoint" : "estimated from torch_dtype";

  nlohmann::json j = {{"model", model_dir},
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
  // Per-rank shards: elements of every tensor the rank reads, at the checkpoint's element size.
  const ShardPlan plan(c, tp);
  const auto shapes = expected_tensors(c, lm_head_stored);
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankShard& s : plan.ranks()) {
    std::uint64_t rank_bytes = 0;
    for (const auto& t : shapes)
      rank_bytes += static_cast<std::uint64_t>(tp > 1 ? plan.elements(s.rank, t.name, t.shape)
                                                      : parameter_count_of(t)) *
                    elem;
    ranks.push_back({{"rank", s.rank},
                     {"heads", {s.heads.begin, s.heads.end}},
                     {"kv_heads", {s.kv_groups.begin, s.kv_groups.end}},
                     {"ffn", {s.ffn.begin, s.ffn.end}},
                     {"vocab", {s.vocab.begin, s.vocab.end}},
                     {"weight_bytes", rank_bytes}});
  }
  j["tp"] = tp;
  j["kv_heads_replicated"] = plan.kv_replicated();
  j["ranks"] = ranks;
  // Under mpirun every rank computes this; rank 0 alone prints it.
  if (world().rank() != 0) return 0;
  if (vm["json"].as<bool>()) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "model:        " << model_dir << "\n"
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
            << (c.alibi ? std::string("ALiBi") : "rotary, theta " + number(c.rope_theta))
            << ", context " << c.max_positions << "\n"
            << "parameters:   " << billions(params) << " (" << with_commas(params) << ", lm_head "
            << (lm_head_stored || !c.tied_embeddings ? "included" : "tied to the embeddings")
            << ")\n"
            << "weight bytes: " << with_commas(bytes) << " (" << bytes_source << ")\n"
            << "checkpoint:   " << inv.format << "\n";
  if (tp > 1) {
    std::cout
        << "\ntensor parallel over " << tp << " ranks"
        << (plan.kv_replicated() ? " (KV heads replicated)" : "") << ":\n"
        << "rank  query heads      KV heads   ffn rows          vocab rows        weight bytes\n";
    auto range = [](const nlohmann::json& v) {
      return "[" + std::to_string(v[0].get<std::int64_t>()) + ", " +
             std::to_string(v[1].get<std::int64_t>()) + ")";
    };
    for (const auto& r : ranks) {
      char line[200];
      std::snprintf(line, sizeof line, "%-5d %-16s %-10s %-17s %-17s %s\n", r["rank"].get<int>(),
                    range(r["heads"]).c_str(), range(r["kv_heads"]).c_str(),
                    range(r["ffn"]).c_str(), range(r["vocab"]).c_str(),
                    with_commas(r["weight_bytes"].get<std::uint64_t>()).c_str());
      std::cout << line;
    }
  }
  return 0;
}

}  // namespace saker::cli
