// `saker info` for a Falcon model: config, parameter and byte counts, and the shard plan.
#pragma once

#include <string>

#include "engine/model_info.h"

namespace saker {

ModelReport falcon_report(const std::string& model_dir, int tp);

}  // namespace saker
