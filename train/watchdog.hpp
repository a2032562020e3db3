// train/watchdog.hpp — a rank that stops responding ends the job with a message naming it, instead
// of leaving the other ranks waiting forever in their next collective.
//
// For: `scanshard train` (arm_watchdog after the input checks) and Comm (comm.hpp), whose blocking
// calls become non-blocking ones completed by watchdog_wait while the watchdog is armed (also the
// executor's all-reduce of the vocab-sharded softmax statistics, a custom MPI_Op, and the
// checkpoint writer's own agreement all-reduce and broadcasts). Not for the MPI calls that have no
// non-blocking form or run inside a library: HDF5's collective I/O inside a checkpoint,
// MPI_Comm_split / MPI_Comm_dup (communicator setup, before the first step), MPI_Finalize — a rank
// that stops there still hangs the others (docs/timelines-2026-12-06.md lists them).
//
// How: while a rank waits for a collective or a message it polls the request and, every turn,
// answers heartbeat pings from other ranks (a duplicate of the world communicator, so they never
// match training traffic). When a wait exceeds the timeout — max(--watchdog-seconds, 3 × the
// slowest step so far, so slow steps do not trip it) — the rank pings every other rank and waits
// up to the grace period (min(10 s, timeout)) for the answers: a live rank answers from its own
// wait loop. It then prints, on stderr, which ranks did not answer (rank, pid, host), and calls
// MPI_Abort, which ends every rank. A rank stopped with SIGSTOP, spinning outside MPI or dead is
// named; if every rank answers, the message says the job is deadlocked instead.
// Blocking and non-blocking collectives never match each other (MPI-3 §5.12), so every rank of
// the job arms the watchdog at the same point or none does.
#pragma once
#include <vector>

#include <mpi.h>

namespace scanshard::mpi {

// Collective over `world`: duplicates it for the heartbeats and gathers every rank's pid and host
// name. timeout_seconds ≤ 0 leaves the watchdog off (Comm's calls stay blocking).
void arm_watchdog(MPI_Comm world, double timeout_seconds);
bool watchdog_armed();
// The runner reports each step's wall time; the timeout is at least 3 × the slowest.
void watchdog_note_step(double seconds);

// Completes `requests` (MPI_Waitall while disarmed), answering heartbeats; past the timeout ends
// the job as described above. `call` names the wait in the message ("MPI_Allreduce").
void watchdog_wait(std::vector<MPI_Request>& requests, const char* call);
void watchdog_wait(MPI_Request& request, const char* call);

}  // namespace scanshard::mpi
