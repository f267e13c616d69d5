// Catch2 under mpirun: every rank runs the same test cases in the same order, so the collectives
// inside them meet. Only rank 0 holds logits and checks them; every rank checks its own shard.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "parallel/world.h"
#include "tests/mpi_fixture.h"

namespace saker::test {
namespace {
MpiWorld* g_world = nullptr;
}
MpiWorld& world() {
  return *g_world;
}
}  // namespace saker::test

int main(int argc, char** argv) {
  saker::MpiWorld world(argc, argv);
  saker::test::g_world = &world;
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const int failed = session.run();
  // A failure on any rank fails the job (mpirun reports the first non-zero exit).
  return failed == 0 ? 0 : 1;
}
