// The model families the engine can run, recognised by config.json: each entry says which
// `model_type` values (and, for configs without one, which `architectures` classes) it reads, and
// how to get its shape, a loaded model and its `saker info` report. A new family enters here
// (docs/adding-a-model.md); callers see ModelShape and Model, never a family's own types.
//
//   const ModelShape shape = load_model_shape(dir);            // config.json only
//   auto model = make_model(dir, checkpoint, backend, options, tp_comm);
//   KvCache cache(backend, model->kv_shape(), blocks, block_size);
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/checkpoint.h"
#include "engine/model/model.h"
#include "engine/model/model_shape.h"
#include "engine/model_info.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"

namespace saker {

struct ModelFamily {
  std::string name;                        // "falcon"
  std::vector<std::string> model_types;    // config.json model_type values it reads
  std::vector<std::string> architectures;  // config.json architectures, for configs without one
  // Reads DIR/config.json (and what else the family needs of the directory, never weights).
  ModelShape (*load_shape)(const std::filesystem::path& dir);
  // This rank's part of the model; tp_comm is null, or the tensor-parallel group (whose size and
  // rank pick the shard; the family makes its own shard plan). Throws ConfigError when the model
  // cannot be split over the group, before reading any weight.
  std::unique_ptr<Model> (*make)(const std::filesystem::path& dir, const Checkpoint& checkpoint,
                                 Backend& backend, const ModelOptions& options,
                                 Communicator* tp_comm);
  ModelReport (*report)(const std::string& dir, int tp);
};

// Every family, in the order the registry tries them.
const std::vector<ModelFamily>& model_families();

// The family DIR/config.json names: by model_type, else by architectures. ConfigError naming
// the file, the field and the supported values otherwise.
const ModelFamily& find_model_family(const std::filesystem::path& dir);

ModelShape load_model_shape(const std::filesystem::path& dir);

// tp_comm: null (or a group of one) for the whole model on this rank.
std::unique_ptr<Model> make_model(const std::filesystem::path& dir, const Checkpoint& checkpoint,
                                  Backend& backend, const ModelOptions& options,
                                  Communicator* tp_comm = nullptr);

}  // namespace saker
