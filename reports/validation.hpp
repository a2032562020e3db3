// reports/validation.hpp — the analysis half of `scanshard validate` (DESIGN §7): the built-in plan
// set, and the scoring of measured runs against the simulator: per plan the comparison op group by
// op group (compare.hpp), the step-time error statistics (median / max |relative error|, bias,
// Spearman rank correlation of plan order) against the median and against the fastest step, per op
// class, and with each prediction scaled by the machine-speed probe; and the files validate writes
// (validate.json, validate.csv, validate-groups.csv, validate-classes.csv).
//
// The plan set varies what the runner executes: family (griffin / hawk / mqa / rwkv4 / rwkv6 / a
// GPT-style transformer), width and depth, sequence length, batch, micro-batch, mesh axes at 1–2
// ranks (data, fsdp with ZeRO 0–3, tensor, sequence with the ring or all-gather carry or ring
// attention, a local-attention window longer than a shard, pipeline with 1F1B, interleaved 1F1B
// or GPipe, tensor_comm rs_ag for RWKV-4/6 and with an uneven vocabulary), remat policy (the executor re-runs the forward steps the
// lowering lists as recompute). The scan algorithm stays `sequential`: the executor runs the same
// fused scan kernel whatever the plan says (only the simulator's price changes), so comparing an
// unfused or associative prediction with it would measure nothing. Likewise every plan says
// overlap: false and fp32, because that is how the runner executes it (gradient reduction after
// the last backward; fp32 everywhere).
//
// Machine drift: on a shared VM the same plan's step time moves by 20–30 % over minutes with no
// code change, while the cluster file was measured earlier. With the probe calibrate recorded, each
// plan gets a speed factor (probe before its runs / probe at calibration) and a second summary
// scores predictions multiplied by it: one measured number per plan, the same formula for all, not
// a fitted correction. The primary statistics stay unscaled.
//
// Decode plans (decode_plan_set): serving plans decoded for real by the runner (train/decode.hpp,
// through train/plan_runs.hpp's round robin like the training plans) and compared with
// sim/inference's per-token latency and throughput, group by group (compare_decode); they are
// scored apart from the training plans (their own median / max |error|).
//
// For: validate (the CLI runs the plans with train/plan_runs.hpp and prints); tests. Not for:
// running anything (no MPI here), printing.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "reports/compare.hpp"
#include "reports/stats.hpp"

namespace scanshard {

struct PlanCase {
  std::string id;  // "P01", ... (training), "D01", ... (decoding)
  ModelSpec model;
  Plan plan;
  std::optional<ServingShape> decode;  // set: a serving plan, decoded (batch, prompt, sampled tokens)
};

// A preset with a different width / depth (recurrent width and MLP width follow the width).
ModelSpec validation_variant(const std::string& preset, std::int64_t width, std::int64_t depth);
// The built-in plan set (57 plans, ids P01..P57). quick: every third plan (P01, P04, ...).
std::vector<PlanCase> validation_plan_set(bool quick);
// The decode plan set (9 plans, ids D01..D09): every family at batch 1 and 4, tensor = 1 and 2,
// prompts of 16 to 2048 tokens (a global KV cache that grows, a local one capped at its window,
// fixed recurrent states), and one model too large for the cache (weights streamed from DRAM).
// quick: every other plan.
std::vector<PlanCase> decode_plan_set(bool quick);
// "griffin-tiny data=2 G=8 mb=4 T=128 ..." (the model name and plan_summary with the batch), or for
// a decode plan "griffin-tiny decode tensor=2 B=4 P=512 S=16".
std::string describe_plan(const PlanCase& c);

// The probe `scanshard calibrate` recorded in the cluster file (measurements: probe_seconds), or 0:
// presets and older files have none. `measurements:` is free-form, so it is read here rather than
// by the strict loader; a malformed value just means no reference.
double calibrated_probe_seconds(const std::string& cluster_arg);
// The same for the memory probe (measurements: memory_probe_seconds), or 0.
double calibrated_memory_probe_seconds(const std::string& cluster_arg);

// Network drift: calibrate's all-reduce samples (measurements: ranks, mpi: all_reduce: samples)
// re-measured by validate with the same benchmark (measure::time_all_reduce). On a VM the
// shared-memory all-reduce can run 3-4x faster or slower from one launch to the next
// (docs/validation.md, run J); a calibration taken in the other regime prices every collective
// wrong by that factor, and the comm groups' errors say so only indirectly.
struct NetworkDrift {
  std::vector<double> bytes, seconds_at_calibration, seconds_now;  // the re-measured sizes
  double ratio_median = 0, ratio_min = 0, ratio_max = 0;             // seconds_now / seconds_at_calibration
  [[nodiscard]] bool measured() const { return !bytes.empty(); }
};
// The samples to re-measure: calibrate's all-reduce samples from 64 KiB to 8 MiB (the plans'
// gradient and activation collectives; smaller ones are latency noise), when the file was
// calibrated on `ranks` ranks. Empty: a preset, another rank count, or no MPI measurements.
std::vector<std::pair<double, double>> calibrated_all_reduce_samples(const std::string& cluster_arg, int ranks);
// seconds_now[i] re-measures calibration[i] ((bytes, seconds)); the ratios' median, min and max.
NetworkDrift network_drift(const std::vector<std::pair<double, double>>& calibration, const std::vector<double>& seconds_now);
// Outside this band of a drift's ratio_median (network or memory) the predictions it concerns are
// off by the drift; validate says so.
inline constexpr double kDriftWarnLow = 0.67, kDriftWarnHigh = 1.5;
[[nodiscard]] inline bool drift_outside_band(double ratio_median) {
  return ratio_median < kDriftWarnLow || ratio_median > kDriftWarnHigh;
}

// Memory drift: the memory probe (measure/probe.hpp memory_probe_seconds: a triad beyond the
// last-level cache on every rank at once) calibrate recorded, re-measured by validate before and
// after its runs. The in-cache machine probe does not see the memory bus, whose rate other
// processes move by ±20 % within a minute on this VM; the memory-bound predictions (decode weight
// streaming, the decode attention beyond L2, large triad working sets) move with it.
struct MemoryDrift {
  double seconds_at_calibration = 0;
  std::vector<double> seconds_now;
  double ratio_median = 0, ratio_min = 0, ratio_max = 0;  // seconds_now / seconds_at_calibration
  [[nodiscard]] bool measured() const { return !seconds_now.empty(); }
};
// Not measured without a positive reference or any finite positive sample.
MemoryDrift memory_drift(double seconds_at_calibration, const std::vector<double>& seconds_now);

// One set of predictions against one set of measurements: |relative error| summary and the
// Spearman correlation of plan order (NaN, JSON null, below two plans).
struct Score {
  stats::ErrorSummary err;
  double rho = std::nan("");
  [[nodiscard]] nlohmann::json json() const;
};
Score score(const std::vector<double>& predicted, const std::vector<double>& measured);

// Rank 0's measurements of one plan: the steps after each run's warm-up, over all passes, and the
// probe seconds before each run (NaN without a calibrated probe).
struct PlanMeasurement {
  std::vector<MeasuredStep> steps;
  std::vector<double> probes;
};

struct PlanResult {
  const PlanCase* plan_case = nullptr;
  std::string cluster;              // the cluster slice the prediction used
  Comparison cmp;                   // decode plans: a step is one token of every sequence
  double error = 0;                 // relative error of the step time (median step; decode: per-token latency)
  double probe_seconds = std::nan("");  // median probe before its runs (NaN without a reference)
  double speed_factor = std::nan("");   // probe_seconds / the probe at calibration
  std::string worst_group;          // the group contributing most seconds to the step error ("" if none)
  double worst_group_error = 0;     // its relative error
};

struct ValidationResult {
  std::vector<PlanResult> plans;  // the plans that ran, in the set's order
  Score primary;                  // predicted vs the median measured step
  Score fastest;                  // predicted vs the fastest measured step of each plan
  std::map<std::string, stats::ErrorSummary> classes;  // per op class over the plans
  // With a calibrated probe: predictions scaled by each plan's speed factor.
  std::optional<Score> probe_scaled;
  double speed_min = 0, speed_max = 0, speed_median = 0;
  // Decode plans, scored apart (per-token latency; the primary statistics above are training's).
  std::vector<PlanResult> decode_plans;
  Score decode;
  Score decode_fastest;  // against each decode plan's fastest token (a multi-millisecond token is rarely spared a preemption on a loaded machine)
  std::map<std::string, stats::ErrorSummary> decode_classes;
};

// Scores the plans that ran (measured[i] empty: plan i was skipped). Each plan is predicted on the
// cluster sliced to its devices; probe_at_calibration: calibrated_probe_seconds (0: none). Decode
// plans (PlanCase::decode) go to decode_plans and are compared with compare_decode. Throws
// std::runtime_error when every plan was skipped.
ValidationResult score_validation(const std::vector<PlanCase>& cases, const std::vector<PlanMeasurement>& measured,
                                  const ClusterSpec& cluster, double probe_at_calibration);

// What validate.json records about the run besides the result.
struct ValidationRunInfo {
  std::string cluster_argument;  // as given, or its absolute path when it is a file
  int ranks = 1;
  std::int64_t steps = 0;
  int passes = 0;
  bool quick = false;
  double load_start = -1, load_end = -1, cores = 1;
  double probe_at_calibration = 0;
  NetworkDrift network;  // not measured: one rank, or no calibrated all-reduce samples
  MemoryDrift memory;    // not measured: no calibrated memory probe
  std::vector<std::string> skipped;  // "P03 (description): reason"
};

// The files validate writes: file name (no directory) -> contents: validate.json (its "decode"
// object: the decode plans and their summary), validate.csv, validate-groups.csv (training and
// decode plans' groups), validate-classes.csv, and with decode plans validate-decode.csv.
std::vector<std::pair<std::string, std::string>> validation_files(const ValidationResult& r, const ClusterSpec& cluster,
                                                                  const ValidationRunInfo& info);

}  // namespace scanshard
