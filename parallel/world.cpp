#include "parallel/world.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>
#include <vector>

#include "parallel/mpi_communicator.h"

namespace saker {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

cpu_set_t affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n && i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  }
  return set;
}

// This rank's share of its affinity set among the node's ranks (`node`) whose sets overlap it:
// the set's size over their number, the first ranks taking one more when it does not divide.
unsigned share_of_cpus(MPI_Comm node) {
  cpu_set_t mine = affinity();
  int local = 0, locals = 1;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &locals);
  std::vector<cpu_set_t> all(static_cast<std::size_t>(locals));
  MPI_Allgather(&mine, sizeof(cpu_set_t), MPI_BYTE, all.data(), sizeof(cpu_set_t), MPI_BYTE, node);
  int sharers = 0, index = 0;
  for (int r = 0; r < locals; ++r) {
    cpu_set_t both;
    CPU_AND(&both, &mine, &all[static_cast<std::size_t>(r)]);
    if (CPU_COUNT(&both) == 0) continue;
    if (r < local) ++index;
    ++sharers;
  }
  const auto cpus = static_cast<unsigned>(std::max(1, CPU_COUNT(&mine)));
  const auto n = static_cast<unsigned>(std::max(1, sharers));
  return std::max(1u, cpus / n + (static_cast<unsigned>(index) < cpus % n ? 1u : 0u));
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var :
       {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

MpiWorld::MpiWorld(int& argc, char**& argv) {
  if (!launched_by_mpi()) {
    const cpu_set_t set = affinity();
    cpu_share_ = static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
    tp_ = std::make_unique<SingleRankCommunicator>();
    return;
  }
  // Only the engine thread calls MPI (frontends never do), so FUNNELED is enough.
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Init_thread failed");
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  local_rank_ = env_int("OMPI_COMM_WORLD_LOCAL_RANK", env_int("SLURM_LOCALID", -1));
  if (local_rank_ < 0) MPI_Comm_rank(node, &local_rank_);
  cpu_share_ = share_of_cpus(node);
  MPI_Comm_free(&node);
  tp_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

MpiWorld::~MpiWorld() {
  tp_.reset();
  if (!mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiWorld::abort(int code) const {
  if (std::this_thread::get_id() != main_thread_) {
    // Not the MPI thread: no MPI call, and no exit handlers racing the threads still running.
    std::fflush(nullptr);
    std::_Exit(code);
  }
  if (mpi_) {
    // MPI_Abort asks mpirun to end every rank; with the link to it down it may wait forever.
    // This rank ends anyway, a few seconds later.
    std::thread([code] {
      std::this_thread::sleep_for(std::chrono::seconds(5));
      std::fprintf(stderr,
                   "saker: MPI_Abort did not return in 5 s (mpirun unreachable?); exiting\n");
      std::_Exit(code);
    }).detach();
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  std::exit(code);
}

}  // namespace saker
