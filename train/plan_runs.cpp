// train/plan_runs.cpp — see plan_runs.hpp.
#include "train/plan_runs.hpp"

#include <chrono>
#include <cmath>
#include <iostream>
#include <thread>

#include <mpi.h>

namespace scanshard::train {
namespace {

// A barrier that does not spin: ranks with nothing to run sleep between tests, leaving their core
// to the ranks that are measuring.
void quiet_barrier(const mpi::Comm& w) {
  MPI_Request req;
  SCANSHARD_MPI(MPI_Ibarrier(w.raw(), &req));
  for (;;) {
    int done = 0;
    SCANSHARD_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace

std::string why_not_runnable(const ModelSpec& m, const Plan& p, std::int64_t world_size, const ClusterSpec& cluster) {
  const std::int64_t n = p.mesh.devices();
  if (n > world_size) return "needs " + std::to_string(n) + " ranks (run under mpirun -n " + std::to_string(n) + ")";
  try {
    check_supported(m, p, n);
    check_plan(m, p, cluster_slice(cluster, n, "--cluster").devices());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::vector<PlanRuns> run_round_robin(const std::vector<PlanToRun>& plans, const std::vector<std::uint8_t>& data,
                                      const RoundRobinOptions& o, const mpi::Comm& world) {
  const int rank = world.rank(), W = world.size();
  std::vector<PlanRuns> runs(plans.size());
  try {
    for (int pass = 0; pass < o.passes; ++pass) {
      const auto pass_start = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < plans.size(); ++i) {
        if (!plans[i].run) continue;
        const std::int64_t n = plans[i].plan->mesh.devices();
        double probe_now = std::nan("");
        if (o.probe) {  // every rank at once, as calibrate ran it
          std::vector<double> probe = {o.probe()};
          world.allreduce_sum(std::span<double>(probe));
          probe_now = probe[0] / W;
        }
        const mpi::Comm sub = world.split(rank < n ? 0 : 1, rank);
        Result res;
        if (rank < n) res = run(*plans[i].model, *plans[i].plan, data, o.train, &sub);
        quiet_barrier(world);
        if (rank != 0) continue;
        runs[i].traces.push_back(std::move(res.trace));
        runs[i].probes.push_back(probe_now);
        if (o.run_done) o.run_done(pass, i);
      }
      if (rank == 0 && o.pass_done)
        o.pass_done(pass, std::chrono::duration<double>(std::chrono::steady_clock::now() - pass_start).count());
    }
  } catch (const std::exception& e) {
    if (W == 1) throw;
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return runs;
}

}  // namespace scanshard::train
