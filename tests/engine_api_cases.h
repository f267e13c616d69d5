// Engine API cases shared by the one-rank tests (test_engine_api.cpp) and the tensor-parallel
// ones under mpirun (test_tensor_parallel.cpp): every rank builds the engine and calls its loops;
// rank 0 alone submits and records what came back, and the checks run after the collective work.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "tests/golden.h"

namespace saker::test {

// The events one request's sink heard, in order.
struct Heard {
  std::vector<RequestEvent> events;
  EventSink sink() {
    return [this](RequestEvent&& e) { events.push_back(std::move(e)); };
  }
  std::vector<std::int32_t> tokens() const {
    std::vector<std::int32_t> t;
    for (const RequestEvent& e : events)
      if (e.token >= 0) t.push_back(e.token);
    return t;
  }
  const RequestEvent& last() const { return events.back(); }
  bool finished() const { return !events.empty() && events.back().finish != FinishReason::kNone; }
};

// A small engine on a fixture: a KV pool of 128 blocks of 4 tokens, 8 sequences, 32-token steps.
inline EngineOptions engine_options(const std::filesystem::path& dir) {
  EngineOptions o;
  o.model_dir = dir.string();
  o.threads = 1;
  o.max_batch_size = 8;
  o.max_batch_tokens = 32;
  o.block_size = 4;
  o.kv_cache_tokens = 512;
  o.text = false;
  return o;
}

// transformers' greedy continuations of a fixture: (prompt, 40 generated ids) per case.
struct Reference {
  std::vector<std::int32_t> prompt, greedy;
};
inline std::vector<Reference> references(const std::filesystem::path& dir) {
  std::vector<Reference> out;
  const nlohmann::json ref = read_reference(dir);
  for (const auto& c : ref["cases"])
    out.push_back({c["prompt_ids"].get<std::vector<std::int32_t>>(),
                   c["greedy_ids"].get<std::vector<std::int32_t>>()});
  return out;
}

inline BatchRequest request(Engine& engine, const std::vector<std::int32_t>& prompt,
                            std::int64_t max_new) {
  BatchRequest r;
  r.id = engine.requests().next_id();
  r.prompt = prompt;
  r.max_new_tokens = max_new;
  r.ignore_eos = true;
  return r;
}

// Every reference case submitted at once, and one more that its own sink cancels after its
// third token; run to the end on every rank.
struct StreamRun {
  std::vector<Reference> refs;
  std::vector<std::unique_ptr<Heard>> heard;  // per reference case
  Heard cancelled;
  EngineSnapshot after;
};
inline StreamRun stream_and_cancel(Engine& engine, const std::filesystem::path& dir) {
  StreamRun run;
  run.refs = references(dir);
  if (engine.is_driver()) {
    for (const Reference& ref : run.refs) {
      run.heard.push_back(std::make_unique<Heard>());
      engine.submit(request(engine, ref.prompt, static_cast<std::int64_t>(ref.greedy.size())),
                    run.heard.back()->sink());
    }
    BatchRequest r = request(engine, run.refs.back().prompt, 40);
    const std::uint64_t id = r.id;
    engine.submit(std::move(r), [&run, &engine, id](RequestEvent&& e) {
      if (e.index == 2 && e.token >= 0) engine.cancel(id);  // from the engine thread, mid-run
      run.cancelled.events.push_back(std::move(e));
    });
  }
  engine.run();
  if (engine.is_driver()) run.after = engine.stats();
  return run;
}

// serve() with a request in flight when shutdown() comes (from the request's own first token):
// with a drain time, it finishes; with none, it is cancelled.
struct DrainRun {
  Heard heard;
  Admit after_shutdown = Admit::kQueued;
  Health health = Health::kLoading;
};
inline DrainRun drain(Engine& engine, const std::vector<std::int32_t>& prompt, double drain_s) {
  DrainRun run;
  if (engine.is_driver()) {
    engine.submit(request(engine, prompt, 24), [&run, &engine, drain_s](RequestEvent&& e) {
      if (e.index == 0 && e.token >= 0) engine.shutdown(drain_s);
      run.heard.events.push_back(std::move(e));
    });
  }
  engine.serve();
  if (engine.is_driver()) {
    run.health = engine.health();
    run.after_shutdown = engine.submit(request(engine, prompt, 4), [](RequestEvent&&) {});
  }
  return run;
}

}  // namespace saker::test
