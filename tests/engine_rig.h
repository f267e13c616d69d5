// A fixture model on one rank with a KV pool and a step runner: what the batch-engine tests drive.
#pragma once

#include <filesystem>

#include "engine/model/checkpoint.h"
#include "engine/model/falcon/config.h"
#include "engine/model/falcon/falcon.h"
#include "engine/step_runner.h"
#include "kernels/cpu/cpu_backend.h"

namespace saker::test {

struct EngineRig {
  FalconConfig config;
  Checkpoint checkpoint;
  CpuBackend backend;
  FalconModel model;
  KvCache cache;
  SingleRankCommunicator single;
  StepRunner runner;
  explicit EngineRig(const std::filesystem::path& dir, std::int64_t blocks = 128,
                     DType kv_dtype = DType::F32)
      : config(load_config(dir)),
        checkpoint(Checkpoint::open(dir)),
        backend(2, config.max_positions, 1),
        model(config, checkpoint, backend, ModelOptions{64, 32, 256}),
        cache(backend, with_dtype(model.kv_shape(), kv_dtype), blocks, 4),
        runner(model, cache, single) {}

 private:
  static KvShape with_dtype(KvShape s, DType t) {
    s.dtype = t;
    return s;
  }
};

}  // namespace saker::test
