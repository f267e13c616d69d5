// saker generate: greedy generation from token ids, on one rank or tensor-parallel under mpirun.
#include <algorithm>
#include <cstring>
#include <iostream>
#include <optional>

#include "engine/generate.h"
#include "engine/models.h"
#include "engine/step_runner.h"
#include "engine/tokenizer/streaming_detokenizer.h"
#include "launcher/app/cli.h"
#include "launcher/app/fault_hooks.h"
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

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  // An offline job (--input FILE) runs through the batch engine; a single prompt runs alone.
  for (const std::string& a : args)
    if (a == "--input" || a.starts_with("--input=")) return run_generate_jsonl(args);
  std::string model_dir;
  std::int64_t max_new = 32, chunk = 256, block_size = 16;
  int threads = 0;
  std::string device, dtype = "auto";
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&model_dir)->required(),
                                                 "Hugging Face model directory (safetensors)")(
      "prompt", po::value<std::string>(), "prompt text (DIR/tokenizer.json); prints text")(
      "prompt-ids", po::value<std::string>(), "prompt token ids: \"ID ID ...\"")(
      "print-ids", po::bool_switch(), "print the generated ids, also with --prompt")(
      "max-new-tokens", po::value(&max_new)->default_value(32), "tokens to generate")(
      "ignore-eos", po::bool_switch(), "keep generating past the end-of-sequence token")(
      "threads", po::value(&threads)->default_value(0),
      "CPU threads per rank (0: OMP_NUM_THREADS, else its share of the cores)")(
      "device", po::value(&device)->default_value(""), kDeviceHelp)(
      "dtype", po::value(&dtype)->default_value(dtype), kDtypeHelp)(
      "prefill-chunk", po::value(&chunk)->default_value(256), "prompt tokens per forward step")(
      "block-size", po::value(&block_size)->default_value(16), "KV cache block size (tokens)")(
      "stats", po::bool_switch(), "print timing and per-rank weight bytes to stderr");
  SamplingParams sampling = greedy_sampling();
  po::options_description sampling_desc("sampling (default: greedy)");
  sampling_desc.add_options()("temperature", po::value(&sampling.temperature)->default_value(0.0f),
                              "0: greedy")("top-k", po::value(&sampling.top_k)->default_value(0),
                                           "0: off")(
      "top-p", po::value(&sampling.top_p)->default_value(1.0f), "nucleus mass, (0, 1]")(
      "typical-p", po::value(&sampling.typical_p)->default_value(1.0f), "typical mass, (0, 1]")(
      "min-p", po::value(&sampling.min_p)->default_value(0.0f), "relative to the best, [0, 1]")(
      "repetition-penalty", po::value(&sampling.repetition_penalty)->default_value(1.0f),
      "HF's, over prompt and output")("presence-penalty",
                                      po::value(&sampling.presence_penalty)->default_value(0.0f),
                                      "OpenAI's, [-2, 2]")(
      "frequency-penalty", po::value(&sampling.frequency_penalty)->default_value(0.0f),
      "OpenAI's, [-2, 2]")("seed", po::value(&sampling.seed)->default_value(0),
                           "draws depend on the seed and the position only");
  desc.add(sampling_desc);
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "usage: [mpirun -np N] saker generate --model DIR (--prompt TEXT | --prompt-ids \"ID "
             "...\") [options]"))
    return 0;
  if (max_new < 0) throw UsageError("--max-new-tokens must be >= 0");
  if (chunk <= 0) throw UsageError("--prefill-chunk must be positive");
  if (block_size <= 0) throw UsageError("--block-size must be positive");
  try {
    sampling.validate();
  } catch (const std::invalid_argument& e) {
    // The parameter's name as the flag spells it: top_p -> --top-p.
    std::string msg = e.what();
    std::replace(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(msg.find(' ')), '_', '-');
    throw UsageError("--" + msg);
  }

  MpiWorld& mpi = world();
  Communicator& comm = mpi.tensor_parallel();
  const FaultHooks faults = FaultHooks::from_env(comm.rank());
  const ModelShape config = load_model_shape(model_dir);
  // Rank 0 alone reads the prompt (ranks > 0 hold no tokenizer) and sends the ids to the others,
  // which size their KV cache from its length.
  Prompt prompt_in;
  if (comm.rank() == 0) prompt_in = read_prompt(vm, model_dir, config.vocab_size);
  std::vector<std::byte> wire(prompt_in.ids.size() * sizeof(std::int32_t));
  std::memcpy(wire.data(), prompt_in.ids.data(), wire.size());
  comm.broadcast(wire, 0);
  std::vector<std::int32_t> prompt(wire.size() / sizeof(std::int32_t));
  std::memcpy(prompt.data(), wire.data(), wire.size());
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + max_new;
  if (total > config.max_positions)
    throw UsageError("prompt of " + std::to_string(prompt.size()) + " tokens + --max-new-tokens " +
                     std::to_string(max_new) + " must be <= the model's context of " +
                     std::to_string(config.max_positions) + " tokens");
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  const WeightQuant quant = parse_dtype(dtype, checkpoint);
  const auto backend_owner = make_backend(device, thread_count(threads), config.max_positions);
  Backend& backend = *backend_owner;
  // On GPUs the model's all-reduce runs over NCCL on the compute stream; plans still go by MPI.
  const auto model_comm = make_model_communicator(backend, comm);
  // Every rank checks the layout itself, so an impossible one fails everywhere with one message.
  const auto model_owner = make_model(model_dir, checkpoint, backend,
                                      ModelOptions{chunk, 1, config.max_positions, quant},
                                      model_comm ? model_comm.get() : &comm);
  Model& model = *model_owner;
  KvCache cache(backend, model.kv_shape(), (total + block_size - 1) / block_size, block_size);
  faults.after_load();
  StepRunner runner(model, cache, comm);
  runner.before_each_step([&faults](std::uint64_t step) { faults.before_step(step); });
  if (vm["stats"].as<bool>())
    std::cerr << "rank " << comm.rank() << " of " << comm.size() << ": " << model.weight_bytes()
              << " weight bytes read\n";
  if (!runner.is_driver()) {
    runner.serve();
    return 0;
  }

  GenerateOptions opt;
  opt.max_new_tokens = max_new;
  opt.ignore_eos = vm["ignore-eos"].as<bool>();
  opt.eos_token_ids = config.eos_token_ids;
  opt.sampling = sampling;
  // Text streams through the detokenizer, which holds back characters split across tokens.
  std::optional<StreamingDetokenizer> text;
  if (prompt_in.tokenizer && !vm["print-ids"].as<bool>()) text.emplace(*prompt_in.tokenizer, true);
  bool first = true;
  const GenerateResult res = generate_sequence(runner, prompt, opt, [&](std::int32_t id) {
    if (text)
      std::cout << text->push(id);
    else
      std::cout << (first ? "" : " ") << id;
    std::cout << std::flush;
    first = false;
  });
  runner.stop();
  if (text) std::cout << text->flush();
  std::cout << "\n";
  if (vm["stats"].as<bool>()) {
    const double n = static_cast<double>(res.tokens.size());
    std::cerr << "prompt " << prompt.size() << " tokens, prefill " << res.prefill_seconds * 1e3
              << " ms; generated " << res.tokens.size() << " tokens (" << res.finish_reason << ")";
    if (n > 1) std::cerr << ", decode " << (n - 1) / res.decode_seconds << " tokens/s";
    std::cerr << "\n";
  }
  return 0;
}

}  // namespace saker::cli
