// The model seam as the rest of the program sees it: a checkpoint is opened, the registry picks
// the family from config.json and loads this rank's part as a Model, and the KV pool is sized from
// the Model's shape. Frontends and the launcher include this header, not engine/model/*, so that
// no code outside the engine depends on one family.
#pragma once

#include "engine/model/checkpoint.h"   // IWYU pragma: export
#include "engine/model/kv_cache.h"     // IWYU pragma: export
#include "engine/model/model.h"        // IWYU pragma: export
#include "engine/model/model_shape.h"  // IWYU pragma: export
#include "engine/model/registry.h"     // IWYU pragma: export
