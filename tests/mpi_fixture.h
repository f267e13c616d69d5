#pragma once

#include "parallel/world.h"

namespace saker::test {
MpiWorld& world();  // the world the MPI test main set up
}  // namespace saker::test
