// saker generate: one prompt (token ids or text) through the engine, on one rank or tensor-parallel
// under mpirun; with --input, an offline JSONL job (cmd_generate_jsonl.cpp).
#include <algorithm>
#include <cstring>
#include <iostream>
#include <optional>

#include "engine/engine.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "launcher/app/cli.h"
#include "launcher/app/engine_flags.h"
#include "parallel/world.h"

namespace saker::cli {
namespace {

struct Prompt {
  std::vector<std::int32_t> ids;
  std::optional<Tokenizer> tokenizer;  // with --prompt: the output is text too
};

// --prompt-ids as given, or --prompt encoded by DIR/tokenizer.json; exactly one of them.
Prompt read_prompt(const po::variables_map& vm, const std::string& model_dir, std::int64_t vocab) {
  const bool text = vm.count("prompt") > 0;
  if (text == (vm.count("prompt-ids") > 0))
    throw UsageError(text ? "--prompt and --prompt-ids cannot be used together"
                          : "one of --prompt or --prompt-ids is required");
  Prompt p;
  if (!text) {
    p.ids = parse_token_ids(vm["prompt-ids"].as<std::string>(), vocab, "--prompt-ids");
    return p;
  }
  p.tokenizer.emplace(Tokenizer::from_model_dir(model_dir));
  p.ids = p.tokenizer->encode(vm["prompt"].as<std::string>());
  if (p.ids.empty()) throw UsageError("--prompt gives no tokens");
  for (const std::int32_t id : p.ids)
    if (id >= vocab)
      throw std::runtime_error("tokenizer.json gives the prompt token id " + std::to_string(id) +
                               ", outside the model's vocabulary of " + std::to_string(vocab));
  return p;
}

struct GenerateFlags {
  std::string model_dir;
  std::int64_t max_new = 32, chunk = 256, block_size = 16;
  int threads = 0;
  std::string device, dtype = "auto", kv_cache_dtype = "auto", comm = "auto", cpu_matmul = "auto";
  SamplingParams sampling = greedy_sampling();
};

po::options_description generate_options(GenerateFlags& f) {
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&f.model_dir)->required(),
                                                 "Hugging Face model directory (safetensors)")(
      "prompt", po::value<std::string>(), "prompt text (DIR/tokenizer.json); prints text")(
      "prompt-ids", po::value<std::string>(), "prompt token ids: \"ID ID ...\"")(
      "print-ids", po::bool_switch(), "print the generated ids, also with --prompt")(
      "max-new-tokens", po::value(&f.max_new)->default_value(32), "tokens to generate")(
      "ignore-eos", po::bool_switch(), "keep generating past the end-of-sequence token")(
      "threads", po::value(&f.threads)->default_value(0),
      "CPU threads per rank (0: OMP_NUM_THREADS, else its share of the cores)")(
      "device", po::value(&f.device)->default_value(""), kDeviceHelp)(
      "comm", po::value(&f.comm)->default_value(f.comm), kCommHelp)(
      "cpu-matmul", po::value(&f.cpu_matmul)->default_value(f.cpu_matmul), kCpuMatmulHelp)(
      "dtype", po::value(&f.dtype)->default_value(f.dtype), kDtypeHelp)(
      "kv-cache-dtype", po::value(&f.kv_cache_dtype)->default_value(f.kv_cache_dtype),
      kKvCacheDtypeHelp)("prefill-chunk", po::value(&f.chunk)->default_value(256),
                         "prompt tokens per forward step")(
      "block-size", po::value(&f.block_size)->default_value(16), "KV cache block size (tokens)")(
      "stats", po::bool_switch(), "print timing and per-rank weight bytes to stderr");
  SamplingParams& sp = f.sampling;
  po::options_description sampling("sampling (default: greedy)");
  sampling.add_options()("temperature", po::value(&sp.temperature)->default_value(0.0f),
                         "0: greedy")("top-k", po::value(&sp.top_k)->default_value(0), "0: off")(
      "top-p", po::value(&sp.top_p)->default_value(1.0f), "nucleus mass, (0, 1]")(
      "typical-p", po::value(&sp.typical_p)->default_value(1.0f), "typical mass, (0, 1]")(
      "min-p", po::value(&sp.min_p)->default_value(0.0f), "relative to the best, [0, 1]")(
      "repetition-penalty", po::value(&sp.repetition_penalty)->default_value(1.0f),
      "HF's, over prompt and output")("presence-penalty",
                                      po::value(&sp.presence_penalty)->default_value(0.0f),
                                      "OpenAI's, [-2, 2]")(
      "frequency-penalty", po::value(&sp.frequency_penalty)->default_value(0.0f),
      "OpenAI's, [-2, 2]")("seed", po::value(&sp.seed)->default_value(0),
                           "draws depend on the seed and the position only");
  desc.add(sampling);
  return desc;
}

void check_flags(const GenerateFlags& f) {
  if (f.max_new < 0) throw UsageError("--max-new-tokens must be >= 0");
  if (f.comm != "auto" && f.comm != "nccl" && f.comm != "mpi")
    throw UsageError("--comm must be auto, nccl or mpi, not '" + f.comm + "'");
  if (f.chunk <= 0) throw UsageError("--prefill-chunk must be positive");
  if (f.block_size <= 0) throw UsageError("--block-size must be positive");
  try {
    f.sampling.validate();
  } catch (const std::invalid_argument& e) {
    // The parameter's name as the flag spells it: top_p -> --top-p.
    std::string msg = e.what();
    std::replace(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(msg.find(' ')), '_', '-');
    throw UsageError("--" + msg);
  }
}

// Rank 0's ids, on every rank (the others size their KV cache from its length).
std::vector<std::int32_t> share_prompt(Communicator& comm, const std::vector<std::int32_t>& ids) {
  std::vector<std::byte> wire(ids.size() * sizeof(std::int32_t));
  // Ranks > 0 pass no ids: memcpy from a null pointer is undefined even for 0 bytes.
  if (!wire.empty()) std::memcpy(wire.data(), ids.data(), wire.size());
  comm.broadcast(wire, 0);
  std::vector<std::int32_t> prompt(wire.size() / sizeof(std::int32_t));
  if (!wire.empty()) std::memcpy(prompt.data(), wire.data(), wire.size());
  return prompt;
}

// One sequence through the engine: a batch of one, prompts chunked like --prefill-chunk, a KV
// pool of exactly the tokens it needs.
EngineOptions one_sequence(const GenerateFlags& f, std::int64_t total) {
  EngineOptions o;
  o.model_dir = f.model_dir;
  o.device = f.device;
  o.dtype = f.dtype;
  o.threads = thread_count(f.threads);
  o.max_batch_size = 1;
  o.max_batch_tokens = f.chunk;
  o.block_size = f.block_size;
  o.kv_cache_tokens = total;
  o.kv_cache_dtype = f.kv_cache_dtype;
  o.comm = f.comm;
  o.cpu_matmul = f.cpu_matmul;
  o.text = false;  // the prompt's tokenizer is read here, on rank 0 only
  return o;
}

// Prints each token as it comes (text through the detokenizer, which holds back characters split
// across tokens, or ids) and keeps the result.
struct Printer {
  std::optional<StreamingDetokenizer> text;
  bool first = true;
  std::shared_ptr<const BatchResult> result;
  std::string error;
  void operator()(RequestEvent&& ev) {
    if (ev.token >= 0) {
      if (text)
        std::cout << text->push(ev.token);
      else
        std::cout << (first ? "" : " ") << ev.token;
      std::cout << std::flush;
      first = false;
    }
    if (ev.finish != FinishReason::kNone) {
      result = std::move(ev.result);
      error = std::move(ev.error);
    }
  }
};

void print_stats(std::size_t prompt_tokens, const BatchResult& res) {
  const double n = static_cast<double>(res.tokens.size());
  const double start = res.scheduled >= 0 ? res.scheduled : res.arrival;
  std::cerr << "prompt " << prompt_tokens << " tokens, prefill " << (res.first_token - start) * 1e3
            << " ms; generated " << res.tokens.size() << " tokens ("
            << finish_reason_name(res.finish) << ")";
  if (n > 1) std::cerr << ", decode " << (n - 1) / (res.finished - res.first_token) << " tokens/s";
  std::cerr << "\n";
}

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  // An offline job (--input FILE) runs through the rolling batch; a single prompt runs alone.
  for (const std::string& a : args)
    if (a == "--input" || a.starts_with("--input=")) return run_generate_jsonl(args);
  GenerateFlags f;
  const po::options_description desc = generate_options(f);
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker generate --model DIR (--prompt TEXT | --prompt-ids \"ID "
             "...\") [options]"))
    return 0;
  check_flags(f);

  Communicator& comm = world().tensor_parallel();
  const RequestLimits limits = read_model_limits(f.model_dir);
  // Rank 0 alone reads the prompt (ranks > 0 hold no tokenizer).
  Prompt prompt_in;
  if (comm.rank() == 0) prompt_in = read_prompt(vm, f.model_dir, limits.vocab);
  const std::vector<std::int32_t> prompt = share_prompt(comm, prompt_in.ids);
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + f.max_new;
  if (total > limits.max_context)
    throw UsageError("prompt of " + std::to_string(prompt.size()) + " tokens + --max-new-tokens " +
                     std::to_string(f.max_new) + " must be <= the model's context of " +
                     std::to_string(limits.max_context) + " tokens");
  if (f.max_new == 0) {
    if (comm.rank() == 0) std::cout << "\n";
    return 0;
  }
  const auto engine = make_engine(one_sequence(f, total), comm);
  const bool stats = vm["stats"].as<bool>();
  if (stats)
    std::cerr << "rank " << comm.rank() << " of " << comm.size() << ": " << engine->weight_bytes()
              << " weight bytes read\n";
  if (!engine->is_driver()) {
    engine->run();
    return 0;
  }
  BatchRequest r;
  r.id = engine->requests().next_id();
  r.prompt = prompt;
  r.max_new_tokens = f.max_new;
  r.ignore_eos = vm["ignore-eos"].as<bool>();
  r.sampling = f.sampling;
  auto printer = std::make_shared<Printer>();
  if (prompt_in.tokenizer && !vm["print-ids"].as<bool>())
    printer->text.emplace(*prompt_in.tokenizer, true);
  engine->submit(std::move(r), [printer](RequestEvent&& ev) { (*printer)(std::move(ev)); });
  engine->run();
  if (!printer->error.empty()) throw std::runtime_error(printer->error);
  if (printer->text) std::cout << printer->text->flush();
  std::cout << "\n";
  if (stats && printer->result) print_stats(prompt.size(), *printer->result);
  return 0;
}

}  // namespace saker::cli
