// cli/mpi_session.cpp — see mpi_session.hpp.
#include "cli/mpi_session.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <mpi.h>

#include "program/plan.hpp"
#include "program/yaml_reader.hpp"
#include "train/comm.hpp"

namespace scanshard {

MpiSession::MpiSession() {
  int initialized = 0;
  SCANSHARD_MPI(MPI_Initialized(&initialized));
  if (!initialized) SCANSHARD_MPI(MPI_Init(nullptr, nullptr));
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int exit_code_of(const std::exception& e) {
  return dynamic_cast<const ConfigError*>(&e) || dynamic_cast<const PlanError*>(&e) ? 2 : 1;
}

void finalize_and_exit(int code) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  std::exit(code);
}

void print_error(const std::exception& e) {
  std::cerr << (exit_code_of(e) == 2 ? "scanshard: error: " : "scanshard: runtime failure: ") << e.what() << "\n" << std::flush;
  std::fflush(stderr);
}

void exit_on_every_rank(int rank, const std::exception& e) {
  // Rank 0 writes the message before any rank can exit: once a rank has exited with a non-zero
  // code, mpirun kills the others, and a rank 0 that had finalised but not yet printed (the
  // message used to be printed by main, after MPI_Finalize) lost it.
  if (rank == 0) print_error(e);
  MPI_Barrier(MPI_COMM_WORLD);
  finalize_and_exit(exit_code_of(e));
}

void check_inputs_on_every_rank(int rank, const std::function<void()>& checks) {
  try {
    checks();
  } catch (const std::exception& e) {
    exit_on_every_rank(rank, e);
  }
}

}  // namespace scanshard
