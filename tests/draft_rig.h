// A draft model for speculative decoding on an EngineRig's backend, its KV pool as many blocks
// as the rig's, attached to the rig's step runner.
#pragma once

#include <filesystem>

#include "engine/speculative/speculation.h"
#include "tests/engine_rig.h"

namespace saker::test {

struct DraftRig {
  FalconConfig config;
  Checkpoint checkpoint;
  FalconModel model;
  KvCache cache;
  DraftRig(EngineRig& rig, const std::filesystem::path& dir, WeightQuant quant = WeightQuant::kNone)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        model(config, checkpoint, rig.backend, ModelOptions{64, 32, 256, quant}),
        cache(rig.backend, model.kv_shape(), rig.cache.num_blocks(), rig.cache.block_size()) {
    rig.runner.attach_draft(model, cache);
  }
};

// Exact, every step, K proposals (0: off) from the attached draft.
inline SpeculationConfig draft_spec(int k, SpecAcceptance a = SpecAcceptance::kExact) {
  return {k > 0 ? SpecMethod::kDraft : SpecMethod::kNone, k, 4, a, false};
}

}  // namespace saker::test
