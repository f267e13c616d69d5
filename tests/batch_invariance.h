// Batch invariance, shared by the single-rank and the tensor-parallel tests: a request's logits,
// bit for bit, and its tokens do not depend on what else is in the batch or on how its prompt is
// chunked.
#pragma once

#include <map>
#include <random>
#include <vector>

#include "engine/batch_engine.h"
#include "tests/reference_generate.h"

namespace saker::test {

struct Trace {
  std::map<std::int64_t, std::vector<float>> logits;  // by the position each row predicts
  std::vector<std::int32_t> tokens;
};

// 32 requests of varied lengths; 1 is greedy, 2 samples with a seed.
inline std::vector<BatchRequest> invariance_requests(std::int64_t vocab) {
  std::mt19937 rng(77);
  std::vector<BatchRequest> out;
  for (std::uint64_t id = 1; id <= 32; ++id) {
    BatchRequest r;
    r.id = id;
    r.prompt.resize(id <= 2 ? 27 : 1 + rng() % 30);
    for (auto& t : r.prompt)
      t = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(vocab));
    r.max_new_tokens = 4 + static_cast<std::int64_t>(rng() % 9);
    r.ignore_eos = true;
    if (id == 2 || id % 5 == 0) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 1000 + id;
    }
    out.push_back(r);
  }
  return out;
}

// Runs `reqs` on rank 0 with `budget` tokens per iteration (ranks > 0 execute the plans) and
// returns, on rank 0, what request `target` saw and generated.
inline Trace trace_run(StepRunner& runner, std::int32_t budget,
                       const std::vector<BatchRequest>& reqs, std::uint64_t target) {
  Trace t;
  if (!runner.is_driver()) {
    runner.serve();
    return t;
  }
  BatchEngine engine(runner, {32, budget, AdmissionPolicy::kMaxUtilization}, {});
  engine.observe_logits([&](std::uint64_t id, std::int64_t pos, std::span<const float> row) {
    if (id == target) t.logits[pos].assign(row.begin(), row.end());
  });
  for (const auto& r : reqs) engine.add(r);
  run_to_completion(engine);
  runner.stop();
  t.tokens = engine.results().at(target).tokens;
  return t;
}

}  // namespace saker::test
