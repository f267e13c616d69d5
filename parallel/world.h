// The MPI world: one process per device, laid out as a grid of tensor-parallel groups (one
// pipeline stage for now; a pipeline dimension splits the world further without changing this).
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "parallel/communicator.h"

namespace saker {

class MpiWorld {
 public:
  // Starts MPI when the process was launched by an MPI launcher (mpirun, srun); otherwise the
  // world is this process alone and MPI is never touched.
  MpiWorld(int& argc, char**& argv);
  ~MpiWorld();
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  bool uses_mpi() const { return mpi_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank among the processes of this node, which picks the device (OMPI_COMM_WORLD_LOCAL_RANK,
  // SLURM_LOCALID, else asked of MPI).
  int local_rank() const { return local_rank_; }

  // Processors this rank may use by default: its affinity set, divided evenly among the ranks of
  // this node whose sets overlap it (mpirun --bind-to none, or to a socket, gives several ranks
  // the same processors; bound to cores, each has its own). Outside MPI, the affinity set.
  unsigned cpu_share() const { return cpu_share_; }

  // The tensor-parallel group of this rank (the whole world while there is one stage).
  Communicator& tensor_parallel() { return *tp_; }

  // Ends every rank of the job with `code`; a single process just exits. Safe from any thread:
  // on the thread that started MPI it calls MPI_Abort; on another (a watchdog's) it must not call
  // MPI at all (MPI_THREAD_FUNNELED), so it ends this process at once with `code`, and mpirun
  // ends the other ranks of a job one of whose processes exited non-zero without MPI_Finalize.
  [[noreturn]] void abort(int code) const;

 private:
  bool mpi_ = false;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  unsigned cpu_share_ = 1;
  std::unique_ptr<Communicator> tp_;
  // The thread that made the world (and called MPI_Init_thread): the only one to call MPI.
  std::thread::id main_thread_ = std::this_thread::get_id();
};

// True when the environment says an MPI launcher started this process.
bool launched_by_mpi();

}  // namespace saker
