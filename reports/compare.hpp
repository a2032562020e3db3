// reports/compare.hpp — a measured run next to the simulator's prediction for the same plan, op group
// by op group (seconds per step) and in total. Shared by `scanshard report` (one trace file) and
// `scanshard validate` (many plans run in-process).
//
// Groups: some program steps are fused into one kernel call (the gelu of the recurrent gate into
// gelu ⊙ h, the RG-LRU decay into the scan, the score recompute into the attention backward) and
// reports have always shown the gated MLP and the RG-LRU (gates + scan) as one group each, so both
// sides are summed to those groups (op_group). Each group gets the op class
// (gemm, scan, attention, elementwise, norm, embedding, optimizer, comm) of the steps that carry
// most of its predicted time. Measured: the median over the steps after the first (warm-up).
// Decoding compares the same way: a decode trace's steps are tokens, its first the prefill.
// For: report, validate, the HTML report. Not for: statistics over many plans (reports/stats.hpp).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "reports/trace_file.hpp"
#include "program/cluster.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "sim/inference.hpp"
#include "sim/simulate.hpp"
#include "program/trace.hpp"

namespace scanshard {

// One measured training step: wall seconds and seconds per step name ("mlp", "rec.scan", ...;
// step_name: the gradient synchronisation is "grads.sync").
struct MeasuredStep {
  double wall_seconds = 0;
  std::map<std::string, double> seconds_by_name;
};
// From a `scanshard train --trace` file (validated by load_trace, reports/trace_file.hpp) or from the
// runner's in-memory Trace.
std::vector<MeasuredStep> measured_steps(const TraceFile& trace);
std::vector<MeasuredStep> measured_steps(const Trace& trace);

// The name a step is compared under: its tensor name, except the gradient synchronisation, a
// collective on "grads" (or ZeRO-2/3's embed.grads, head.grads) like the runner's accumulation
// (op grad_accumulate): "grads.sync". As
// one group, the two were one row whose class flipped between comm and elementwise run to run.
std::string step_name(const std::string& op, const std::string& name);
// The step name -> the group both sides share ("mlp.w1" -> "mlp", "rec.scan" -> "rec.rglru").
std::string op_group(const std::string& name);

struct GroupRow {
  std::string group;
  std::string cls;         // op class of the group ("other" if the simulator has no such steps)
  double predicted = 0;    // seconds per step
  double measured = 0;     // seconds per step (median over the measured steps)
};

struct Comparison {
  std::vector<GroupRow> groups;      // largest first
  Estimate estimate;                 // the simulator's full estimate for the plan (training)
  std::optional<InferenceEstimate> inference;  // decode comparisons: the serving estimate instead
  double predicted_step_seconds = 0;
  double measured_step_seconds = 0;  // median wall seconds over the measured steps (after the warm-up)
  double fastest_step_seconds = 0;   // the fastest of those steps (least disturbed by other processes)
  std::size_t steps_used = 0;
  std::size_t steps_total = 0;
  // Per op class over the groups present on both sides (so an unmeasured group does not count).
  std::map<std::string, double> predicted_by_class, measured_by_class;
};

// Predicts (model, plan) on the cluster (rank 0's program) and lines it up with the measured
// steps. The plan must be legal on the cluster (check_plan with its device count). Needs ≥ 1 step.
// warm_up: the first step is a warm-up and not measured (when there are at least two); false
// when the caller already dropped each run's warm-up (validate's passes).
Comparison compare(const ModelSpec& m, const Plan& p, const ClusterSpec& c, const std::vector<MeasuredStep>& steps,
                   bool warm_up = true);

// Decode steps (train/plan_runs.hpp's decode trace: a step = one token of each of s.batch sequences)
// against sim/inference's mean per-token latency over the sample's positions (predicted step =
// per_token_seconds); each group's predicted seconds are the decode pass's steps at each position
// simulate_inference prices, averaged the same way. Pipeline = 1 (ConfigError otherwise).
Comparison compare_decode(const ModelSpec& m, const Plan& p, const ServingShape& s, const ClusterSpec& c,
                          const std::vector<MeasuredStep>& steps, bool warm_up = true);

// report.csv (group, class, predicted_seconds, measured_seconds per group) and report.json (the
// run's model, mesh, cluster, the step times and the groups) of one comparison, named without a
// directory.
std::vector<std::pair<std::string, std::string>> comparison_files(const Comparison& cmp, const std::string& model,
                                                                  const std::string& mesh, const std::string& cluster);

// The machine's 1-minute load average (/proc/loadavg), or −1 where unavailable. Recorded next to
// measurements: other processes on the same cores slow every timing down.
double load_average_1min();

}  // namespace scanshard
