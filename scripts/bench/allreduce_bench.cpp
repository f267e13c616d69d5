// All-reduce latency and bandwidth at the message sizes a Falcon step sends: hidden x tokens
// fp32 values per layer (the one all-reduce of a parallel block). Run under mpirun:
//   mpirun -np 2 build/scripts/bench/saker_allreduce_bench [hidden]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const long hidden = argc > 1 ? std::atol(argv[1]) : 2048;
  if (rank == 0)
    std::printf("MPI_Allreduce (sum, fp32) over %d ranks, hidden %ld\n%-8s %12s %12s %12s %12s\n",
                size, hidden, "tokens", "bytes", "p50 us", "min us", "algbw GB/s");
  for (long tokens : {1L, 8L, 32L, 64L, 256L}) {
    const long n = hidden * tokens;
    std::vector<float> buf(static_cast<std::size_t>(n), 1.0f);
    const int reps = tokens <= 8 ? 2000 : 200;
    std::vector<double> t(static_cast<std::size_t>(reps));
    for (int w = 0; w < 20; ++w)
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    for (int i = 0; i < reps; ++i) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
      t[static_cast<std::size_t>(i)] = MPI_Wtime() - t0;
    }
    std::sort(t.begin(), t.end());
    const double p50 = t[t.size() / 2], bytes = static_cast<double>(n) * sizeof(float);
    if (rank == 0)
      std::printf("%-8ld %12.0f %12.1f %12.1f %12.2f\n", tokens, bytes, p50 * 1e6, t[0] * 1e6,
                  bytes / p50 / 1e9);
  }
  // The logits of a step: each rank's vocabulary slice of every row, gathered to rank 0.
  const long vocab = argc > 2 ? std::atol(argv[2]) : 65024;
  if (rank == 0)
    std::printf("\nMPI_Gatherv of logits to rank 0, vocabulary %ld\n%-8s %12s %12s %12s\n", vocab,
                "rows", "bytes", "p50 us", "min us");
  for (long rows : {1L, 8L, 32L}) {
    const long local = rows * (vocab / size);
    std::vector<float> mine(static_cast<std::size_t>(local), 1.0f),
        all(static_cast<std::size_t>(local * size));
    std::vector<int> counts(static_cast<std::size_t>(size), static_cast<int>(local)),
        displs(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r)
      displs[static_cast<std::size_t>(r)] = static_cast<int>(r * local);
    std::vector<double> t(500);
    for (auto& ti : t) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Gatherv(mine.data(), static_cast<int>(local), MPI_FLOAT, all.data(), counts.data(),
                  displs.data(), MPI_FLOAT, 0, MPI_COMM_WORLD);
      ti = MPI_Wtime() - t0;
    }
    std::sort(t.begin(), t.end());
    if (rank == 0)
      std::printf("%-8ld %12ld %12.1f %12.1f\n", rows, local * size * 4, t[t.size() / 2] * 1e6,
                  t[0] * 1e6);
  }
  MPI_Finalize();
  return 0;
}
