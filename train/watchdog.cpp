// train/watchdog.cpp — see watchdog.hpp.
#include "train/watchdog.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include <sched.h>
#include <unistd.h>

#include "train/comm.hpp"

namespace scanshard::mpi {
namespace {

constexpr int kPing = 1, kPong = 2;
constexpr double kGraceSeconds = 10;
constexpr double kStepFactor = 3;  // the timeout is at least this many times the slowest step

struct Watchdog {
  bool armed = false;
  MPI_Comm heartbeat = MPI_COMM_NULL;
  int rank = 0, size = 1;
  double timeout = 0, slowest_step = 0;
  std::vector<std::int64_t> pids;
  std::vector<std::string> hosts;
};
Watchdog& state() {
  static Watchdog w;
  return w;
}
const int kOne = 1;  // the ping and pong payload (a send buffer that outlives every send)

double effective_timeout() {
  const Watchdog& w = state();
  return std::max(w.timeout, kStepFactor * w.slowest_step);
}

// Answers every ping that has arrived (a pong to its sender). The pong is never waited for: it is
// one int, sent eagerly.
void serve_pings() {
  Watchdog& w = state();
  for (;;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kPing, w.heartbeat, &flag, &st) != MPI_SUCCESS || !flag) return;
    int v = 0;
    MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, kPing, w.heartbeat, MPI_STATUS_IGNORE);
    MPI_Request r = MPI_REQUEST_NULL;
    if (MPI_Isend(&kOne, 1, MPI_INT, st.MPI_SOURCE, kPong, w.heartbeat, &r) == MPI_SUCCESS) MPI_Request_free(&r);
  }
}

[[noreturn]] void diagnose_and_abort(const char* call, double waited) {
  Watchdog& w = state();
  const double grace = std::min(kGraceSeconds, w.timeout);
  std::vector<MPI_Request> pongs(static_cast<std::size_t>(w.size), MPI_REQUEST_NULL);
  std::vector<int> answered(static_cast<std::size_t>(w.size), 0), buf(static_cast<std::size_t>(w.size), 0);
  answered[static_cast<std::size_t>(w.rank)] = 1;
  for (int r = 0; r < w.size; ++r) {
    if (r == w.rank) continue;
    MPI_Request s = MPI_REQUEST_NULL;
    if (MPI_Isend(&kOne, 1, MPI_INT, r, kPing, w.heartbeat, &s) == MPI_SUCCESS) MPI_Request_free(&s);
    MPI_Irecv(&buf[static_cast<std::size_t>(r)], 1, MPI_INT, r, kPong, w.heartbeat, &pongs[static_cast<std::size_t>(r)]);
  }
  const double start = MPI_Wtime();
  int missing = w.size - 1;
  while (missing > 0 && MPI_Wtime() - start < grace) {
    for (int r = 0; r < w.size; ++r) {
      auto& req = pongs[static_cast<std::size_t>(r)];
      if (answered[static_cast<std::size_t>(r)] || req == MPI_REQUEST_NULL) continue;
      int done = 0;
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (done) answered[static_cast<std::size_t>(r)] = 1, --missing;
    }
    serve_pings();
    sched_yield();
  }
  std::string silent;
  for (int r = 0; r < w.size; ++r) {
    if (answered[static_cast<std::size_t>(r)]) continue;
    if (!silent.empty()) silent += ", ";
    silent += "rank " + std::to_string(r) + " (pid " + std::to_string(w.pids[static_cast<std::size_t>(r)]) + " on " +
              w.hosts[static_cast<std::size_t>(r)] + ")";
  }
  char head[256];
  std::snprintf(head, sizeof head, "scanshard: rank %d: watchdog: %s has waited %.0f s (timeout %.0f s, --watchdog-seconds); ",
                w.rank, call, waited, effective_timeout());
  std::string msg = head;
  if (!silent.empty())
    msg += silent + " did not answer a heartbeat within " + std::to_string(static_cast<int>(grace)) +
           " s: stopped (SIGSTOP), hung outside MPI or dead. Ending the job.\n";
  else
    msg += "every rank answered a heartbeat, so the job is deadlocked (ranks waiting in different calls). Ending the job.\n";
  std::fputs(msg.c_str(), stderr);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return; in case it does
}

}  // namespace

void arm_watchdog(MPI_Comm world, double timeout_seconds) {
  Watchdog& w = state();
  if (timeout_seconds <= 0 || w.armed) return;
  SCANSHARD_MPI(MPI_Comm_dup(world, &w.heartbeat));
  SCANSHARD_MPI(MPI_Comm_rank(world, &w.rank));
  SCANSHARD_MPI(MPI_Comm_size(world, &w.size));
  const std::int64_t pid = ::getpid();
  w.pids.assign(static_cast<std::size_t>(w.size), 0);
  SCANSHARD_MPI(MPI_Allgather(&pid, 1, MPI_INT64_T, w.pids.data(), 1, MPI_INT64_T, world));
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  SCANSHARD_MPI(MPI_Get_processor_name(name, &len));
  std::vector<char> all(static_cast<std::size_t>(w.size) * MPI_MAX_PROCESSOR_NAME, 0);
  SCANSHARD_MPI(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, world));
  for (int r = 0; r < w.size; ++r) w.hosts.emplace_back(all.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME);
  w.timeout = timeout_seconds;
  w.armed = true;
}

bool watchdog_armed() { return state().armed; }

void watchdog_note_step(double seconds) {
  Watchdog& w = state();
  w.slowest_step = std::max(w.slowest_step, seconds);
}

void watchdog_wait(std::vector<MPI_Request>& requests, const char* call) {
  if (requests.empty()) return;
  if (!state().armed) {
    check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), call, __FILE__, __LINE__);
    requests.clear();
    return;
  }
  const double start = MPI_Wtime();
  for (;;) {
    int done = 0;
    check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), call, __FILE__,
          __LINE__);
    if (done) break;
    serve_pings();
    const double waited = MPI_Wtime() - start;
    if (waited > effective_timeout()) diagnose_and_abort(call, waited);
    sched_yield();
  }
  requests.clear();
}

void watchdog_wait(MPI_Request& request, const char* call) {
  std::vector<MPI_Request> one{request};
  watchdog_wait(one, call);
  request = MPI_REQUEST_NULL;
}

}  // namespace scanshard::mpi
