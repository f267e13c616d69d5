// Offline JSONL jobs (launcher/offline/jsonl_job.cpp): the input is the --input file, one JSON
// request per line. A bad line is std::invalid_argument naming the file and line; every request
// of a job that reads must already have passed validate_request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/constraints/compiler.h"
#include "launcher/offline/jsonl_job.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;

namespace {

struct Rig {
  fuzz::ScratchDir dir;
  Tokenizer tok =
      Tokenizer::load(std::string(SAKER_FIXTURES_DIR) + "/tokenizers/small384/tokenizer.json");
  RequestLimits limits{tok.id_limit(), 2048, true, nullptr};
  Rig() {
    limits.constraints =
        std::make_shared<ConstraintCompiler>(tok, tok.id_limit(), std::vector<std::int64_t>{11});
  }
};

Rig& rig() {
  static Rig r;
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Rig& r = rig();
  const auto path = r.dir.write("job.jsonl", fuzz::as_text(data, size));
  try {
    const cli::JsonlJob job = cli::read_jsonl_job(path.string(), r.tok, r.limits, 30);
    if (job.requests.empty() || job.ids.size() != job.requests.size() ||
        job.logprobs.size() != job.requests.size())
      std::abort();
    try {
      for (const BatchRequest& q : job.requests) validate_request(q, r.limits);
    } catch (const RequestError&) {
      std::abort();  // the job let through a request the engine refuses
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
