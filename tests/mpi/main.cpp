// tests/mpi/main.cpp — Catch2 main for MPI tests: wraps MPI_Init/MPI_Finalize, runs the tests on
// every rank, then agrees on the result so all ranks exit with the same status and names the
// ranks that failed. Only rank 0 prints Catch's summary unless a rank has failures.
// SCANSHARD_TEST_WATCHDOG_SECONDS > 0 arms the watchdog (train/watchdog.hpp) first, so every Comm
// call of the tests runs as its non-blocking form polled by the watchdog, as under `scanshard train`.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "train/watchdog.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (const char* w = std::getenv("SCANSHARD_TEST_WATCHDOG_SECONDS"))
    scanshard::mpi::arm_watchdog(MPI_COMM_WORLD, std::atof(w));

  Catch::Session session;
  int failed = session.applyCommandLine(argc, argv);
  if (failed == 0) failed = session.run();

  std::vector<int> all(static_cast<size_t>(size));
  MPI_Allgather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int any = 0;
  for (int r = 0; r < size; ++r) {
    if (all[static_cast<size_t>(r)] == 0) continue;
    any = 1;
    if (rank == 0) std::fprintf(stderr, "MPI test: rank %d of %d had %d failing test case(s)\n", r, size, all[static_cast<size_t>(r)]);
  }
  if (rank == 0 && !any) std::printf("MPI test: all %d ranks passed\n", size);
  MPI_Finalize();
  return any;
}
