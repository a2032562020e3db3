// train/plan_runs.cpp — see plan_runs.hpp.
#include "train/plan_runs.hpp"

#include <chrono>
#include <cmath>
#include <iostream>
#include <thread>

#include <mpi.h>

#include "program/param_layout.hpp"
#include "program/steps.hpp"
#include "program/yaml_reader.hpp"
#include "train/decode.hpp"
#include "train/executor.hpp"
#include "train/sampling.hpp"

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

Trace decode_run(const ModelSpec& m, const Plan& p, const ServingShape& s, const std::vector<std::uint8_t>& data,
                 unsigned seed, const mpi::Comm& comm) {
  const int rank = comm.rank();
  const auto coord = rank_coords(p.mesh, rank);
  const int tcoord = static_cast<int>(coord[static_cast<int>(Axis::tensor)]);
  const int scoord = static_cast<int>(coord[static_cast<int>(Axis::pipeline)]);
  const mpi::Comm tensor_group = comm.split(scoord, tcoord), stage_group = comm.split(tcoord, scoord);
  const Layout lay(m);
  const ShardLayout sl(m, lay, p.mesh[Axis::tensor], tcoord);
  DecodeWeights params(static_cast<std::size_t>(sl.total));  // huge pages: decode.hpp
  sl.extract(init_params(lay, seed).data(), params.data());
  const std::int64_t B = s.batch, P = s.prompt_len, V = m.vocab;
  Decoder dec(m, sl, params.data(), &tensor_group, B, s.context(), &stage_group);
  std::vector<std::int32_t> in;  // sequence b's prompt: the data from byte 7b on
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < P; ++i) in.push_back(data[static_cast<std::size_t>(7 * b + i) % data.size()] % V);
  std::mt19937_64 rng(seed);
  std::vector<float> logits;
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));
  Trace trace;
  for (std::int64_t i = 0; i <= s.sample_len; ++i) {
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    dec.feed(in.data(), i == 0 ? P : 1, logits, true, &trace);
    // the lowering's sample.token and sample.broadcast (program/inference.cpp), timed under their names
    const char* phase = i == 0 ? "prefill" : "decode";
    next.resize(static_cast<std::size_t>(B));  // (after the first swap it held the prompt: no allocation)
    if (rank == 0) {
      Trace::Scope sc(&trace, phase, ops::argmax, tensors::sample_token);
      for (std::int64_t b = 0; b < B; ++b) next[static_cast<std::size_t>(b)] = sample_token(logits.data() + b * V, V, {}, rng);
    }
    {
      Trace::Scope sc(&trace, phase, ops::broadcast, tensors::sample_broadcast);
      comm.broadcast(std::span<std::int32_t>(next), 0);
    }
    trace.end_step(i, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0);
    in.swap(next);
  }
  return trace;
}

std::string why_not_runnable(const ModelSpec& m, const Plan& p, std::int64_t world_size, const ClusterSpec& cluster,
                             const ServingShape* decode) {
  const std::int64_t n = p.mesh.devices();
  if (n > world_size) return "needs " + std::to_string(n) + " ranks (run under mpirun -n " + std::to_string(n) + ")";
  if (decode) {
    const auto rules = serving_violations(m, p, *decode, cluster_slice(cluster, n, "--cluster").devices());
    if (!rules.empty()) return std::string(rules.front().rule) + ": " + rules.front().detail;
    if (p.replicas() > 1) return "decodes one replica (data = 1)";
    try {
      check_decodable(m, p.mesh[Axis::tensor], "mesh");
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
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
        if (rank < n && plans[i].decode) res.trace = decode_run(*plans[i].model, *plans[i].plan, *plans[i].decode, data, o.train.seed, sub);
        else if (rank < n) res = run(*plans[i].model, *plans[i].plan, data, o.train, &sub);
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
