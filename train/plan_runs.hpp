// train/plan_runs.hpp — run a list of (model, plan) pairs for real, round-robin, each on the first
// n world ranks (n = its mesh's devices), and hand back rank 0's traces: the measuring half of
// `scanshard validate` (the plan set and the scoring are reports/validation.hpp).
//
// Every plan runs once per pass (--passes passes of Options::steps steps each), so a slow minute of
// a shared machine touches one run of many plans rather than every run of a few. Ranks with nothing
// to run wait in a barrier that sleeps, leaving their core to the ranks that measure. Before each
// run every rank may call a probe (the machine-speed probe of calibrate); its mean over the ranks is
// recorded next to the run.
//
// A plan with a serving shape is decoded instead of trained (train/decode.hpp, as `scanshard
// generate` runs it, on deterministic random weights): its trace's step 0 is the prefill of the
// B prompts (P tokens each, taken from the data), then one step per sampled token (greedy on rank
// 0, broadcast), S steps at positions P … P+S−1; the ops are timed under phase "prefill" / "decode".
// For: validate. Not for: deciding which plans to run (the caller), comparing with the simulator
// (reports/compare.hpp).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "program/trace.hpp"
#include "train/comm.hpp"
#include "train/runner.hpp"

namespace scanshard::train {

// Why the runner cannot run (m, p) with `world_size` ranks available, or "" when it can: more ranks
// than the world has, or what check_supported or check_plan (on the cluster the prediction uses,
// sliced to the plan's devices) refuse. With a serving shape (`decode`): what serving_violations
// and check_decodable refuse, and replicas (validate decodes one replica). The same answer on
// every rank.
std::string why_not_runnable(const ModelSpec& m, const Plan& p, std::int64_t world_size, const ClusterSpec& cluster,
                             const ServingShape* decode = nullptr);

struct PlanToRun {
  const ModelSpec* model = nullptr;
  const Plan* plan = nullptr;
  bool run = true;  // false: skipped (no traces)
  const ServingShape* decode = nullptr;  // set: decode this shape instead of training
};

struct PlanRuns {
  std::vector<Trace> traces;   // rank 0: one per pass; other ranks: empty
  std::vector<double> probes;  // rank 0: the mean probe seconds before each run (NaN without a probe)
};

struct RoundRobinOptions {
  int passes = 1;
  Options train;                                        // steps per run, seeds (decode: the weights' seed), ...
  std::function<double()> probe;                        // may be empty: no probe
  std::function<void(int pass, double seconds)> pass_done;  // rank 0 only; may be empty
  std::function<void(int pass, std::size_t plan)> run_done;  // rank 0 only, after each plan's run; may be empty
};

// Decodes `s` under the serving plan on the ranks of `comm` (the plan's devices, tensor and
// pipeline axes) with deterministic random weights (`seed`): step 0 the prefill, then S sampled
// tokens (see above). Every rank returns its own trace. For: the round robin, calibrate.
Trace decode_run(const ModelSpec& m, const Plan& p, const ServingShape& s, const std::vector<std::uint8_t>& data,
                 unsigned seed, const mpi::Comm& comm);

// Runs the plans (every rank calls it with the same list). A failure on one rank of a multi-rank
// world aborts every rank (MPI_Abort) after printing it; on one rank it is rethrown.
std::vector<PlanRuns> run_round_robin(const std::vector<PlanToRun>& plans, const std::vector<std::uint8_t>& data,
                                      const RoundRobinOptions& o, const mpi::Comm& world);

}  // namespace scanshard::train
