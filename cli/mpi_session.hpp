// cli/mpi_session.hpp — what every MPI command of the CLI (train, calibrate, validate) does the
// same way: initialise MPI once and finalise it on the way out, and check its inputs on every rank
// without communication so that a bad input ends every rank with the same exit code, no hang.
// For: cli/*_command.cpp. Not for: MPI calls themselves (train/comm.hpp).
#pragma once
#include <exception>
#include <functional>

namespace scanshard {

// MPI_Init unless already initialised; MPI_Finalize at scope exit unless already finalised.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

// 2 for input errors (ConfigError, PlanError), 1 for anything else — the CLI's exit codes.
int exit_code_of(const std::exception& e);

// Runs `checks` (deterministic, identical on every rank, no communication). When they throw,
// exit_on_every_rank: rank 0 prints the message, every rank exits with the same code.
void check_inputs_on_every_rank(int rank, const std::function<void()>& checks);

// For an error every rank of MPI_COMM_WORLD has (collective): rank 0 prints it as main would
// ("scanshard: error: ..." for input errors), flushed, before any rank exits — a barrier — then
// every rank finalises MPI and exits with exit_code_of(e).
[[noreturn]] void exit_on_every_rank(int rank, const std::exception& e);

// The message main prints for `e`, on stderr, flushed.
void print_error(const std::exception& e);

// Ends this rank with `code` after finalising MPI (for failures every rank has agreed on).
[[noreturn]] void finalize_and_exit(int code);

}  // namespace scanshard
