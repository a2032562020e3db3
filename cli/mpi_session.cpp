// cli/mpi_session.cpp — see mpi_session.hpp.
#include "cli/mpi_session.hpp"

#include <cstdlib>

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

void check_inputs_on_every_rank(int rank, const std::function<void()>& checks) {
  try {
    checks();
  } catch (const std::exception& e) {
    if (rank == 0) throw;
    finalize_and_exit(exit_code_of(e));
  }
}

}  // namespace scanshard
