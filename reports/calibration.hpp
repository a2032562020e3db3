// reports/calibration.hpp — the fitting half of `scanshard calibrate` (DESIGN §7): from the raw
// measurements (sgemm rates, STREAM-triad working sets, kernel times, collective times) to the
// ChipSpec and topology of a cluster file, and that file's text.
//
//   * peaks: peak_flops_per_s.fp32 = the best sgemm rate; memory_bytes_per_s = the best triad rate
//     (the roofline ceiling) and efficiency.memory_curve = each working set's rate as a fraction
//     of it; efficiency.memory = the largest working set's fraction.
//   * per op class, the efficiency at which the roofline price (sim/cost.hpp compute_seconds) of
//     a benchmark's program steps equals its measured time (fit_efficiency: bisection in log
//     space, clamped to [1e-4, 1]); a class's value prices all its benchmarks' steps together
//     (time-weighted). Order: elementwise, norm, gemm, scan, attention; then attention and
//     attention_softmax together (fit_attention_softmax), then the tuned kernels' own values
//     (efficiency.ops, kTunedOps) once every class is known.
//   * each collective's samples fitted to latency + bytes/bandwidth on relative residuals, and the
//     island link implied through the simulator's formula for that collective on P devices
//     (all-reduce 2(P−1)/P·b/bw + 2(P−1)·lat; all-gather, reduce-scatter (P−1)/P·b/bw + (P−1)·lat;
//     send/recv lat + b/bw).
//   * compute_jitter = mean wait at an all-reduce / (mean compute stretch · E[max of P standard
//     normals]), capped at 0.5.
//
// For: calibrate (which measures, then calls these), tests. Not for: measuring (no kernels, no
// MPI here: cli/calibrate_command.cpp times them), printing.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "program/cluster.hpp"
#include "program/lower.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "reports/stats.hpp"

namespace scanshard {

struct GemmSample { std::int64_t m, n, k; double seconds, flops_per_s; };
struct TriadSample { double bytes, bytes_per_s; };

// One kernel benchmark: which program steps it stands for (the description, filled by whoever
// builds the closures), the closure that runs them (measurement side), and the fit (this file).
struct KernelBench {
  std::string cls;      // efficiency field fitted: elementwise, norm, gemm, scan, attention
  std::string model;    // preset whose shapes (and lowering) are used
  std::string group;    // label: the program steps the kernels implement
  std::vector<std::string> names;  // those steps' names (forward and backward of one layer)
  std::function<void()> run;  // the kernels train/executor.cpp calls for them, one micro-batch
  double seconds = 0;   // measured (median of repeated cold calls, mean over ranks)
  double efficiency = 0;
  bool clamped = false;
  std::string op{};  // non-empty: fits efficiency.ops[op], its own value (kTunedOps) ...
  bool also_class = false;  // ... and, if set, joins its class's fit too (else only its own)
  // Inputs that the step's previous op has just written (the forward input, the incoming
  // gradient): rewritten, untimed, after the eviction pass, so they are in cache as in a step.
  std::vector<std::pair<float*, std::size_t>> hot{};
  ScanAlgo scan = ScanAlgo::sequential;  // the plan whose lowering prices it
};

// The benchmarks' shapes: 4 sequences x 128 tokens, one micro-batch, fp32.
inline constexpr std::int64_t kBenchBatch = 4, kBenchSeq = 128;
Plan bench_plan(const std::string& model, ScanAlgo scan = ScanAlgo::sequential);

// Compute steps named in `names` (forward, backward and step end), of the first layer that has
// them (−1 for the embedding, head, loss and optimizer). std::runtime_error when there are none.
std::vector<Step> named_steps(const ModelSpec& m, const std::vector<std::string>& names,
                              ScanAlgo scan = ScanAlgo::sequential);

// The efficiency field `cls` names: an op class, or a tuned kernel's op (efficiency.ops).
double& efficiency_field(Efficiency& e, const std::string& cls);

// The efficiency at which the roofline price of `steps` equals `measured` (bisection in log space;
// the price falls as the efficiency grows). Clamped to [1e-4, 1] (*clamped says so).
double fit_efficiency(const std::vector<Step>& steps, ChipSpec chip, const std::string& cls, double measured, bool* clamped);

// efficiency.attention and efficiency.attention_softmax together, from the attention benchmarks
// (see calibration.cpp). Needs ≥ 2 attention benchmarks (else leaves the chip as it is).
void fit_attention_softmax(std::vector<KernelBench>& benches, ChipSpec& chip);

// The op classes calibrate fits, in its order. Steps of the other compute classes (embedding, optimizer) are priced
// with the elementwise value (sim/cost.cpp).
inline constexpr std::array<const char*, 5> kCalibratedClasses = {"elementwise", "norm", "gemm", "scan", "attention"};

// The tuned kernels' own values, then every class value and attention_softmax, from the benchmarks'
// measured seconds; records each benchmark's own efficiency. A benchmark's steps of another class
// that has a tuned value (the gemm benchmark's gelu ⊙) are priced with that value while its class
// is fitted, as the simulator prices them.
void fit_kernel_efficiencies(std::vector<KernelBench>& benches, ChipSpec& chip);

// The chip from its peaks: the best sgemm and triad rates, the memory curve. memory_bytes and
// onchip_memory_bytes as given (the caller reads them from the machine).
ChipSpec chip_from_peaks(const std::vector<GemmSample>& gemm, const std::vector<TriadSample>& triad, double vector_flops_per_s,
                         double launch_overhead_seconds);

struct CommFit {
  std::string kind;                                // all_reduce, all_gather, reduce_scatter, send_recv
  std::vector<std::pair<double, double>> samples;  // (bytes, seconds)
  stats::AffineFit fit;
  double link_bytes_per_s = 0, link_latency_seconds = 0;  // implied by the simulator's formula
};
// Fits `kind`'s samples (≥ 2, smallest message first) measured on P ranks. A negative fitted
// intercept (noise) falls back to half the smallest message's time; a non-positive slope gives no
// bandwidth (0).
CommFit fit_collective(const std::string& kind, std::vector<std::pair<double, double>> samples, int P);

struct Jitter {
  double jitter = 0, stretch_seconds = 0, wait_seconds = 0;
};
// From the mean compute stretch and the mean wait beyond the call's latency, over P ranks.
Jitter jitter_from(double stretch_seconds, double wait_seconds, int P);

// Everything calibrate measured (means over ranks).
struct CalibrationMeasurements {
  int ranks = 1;
  std::vector<GemmSample> gemm;
  std::vector<TriadSample> triad;
  double vector_flops = 0, launch = 0;
  double probe_seconds = 0;  // machine_probe_seconds() (measure/probe.hpp), mean over ranks
  std::vector<KernelBench> kernels;
  std::vector<CommFit> comm;
  Jitter jitter;
  double seconds = 0;
  double load_start = -1, load_end = -1;  // machine load average around the run
};

// "%.6g"
std::string fmt6(double v);

// The cluster YAML calibrate writes: the chip, a one-island topology and the raw numbers under
// `measurements:` (free-form; the strict loader ignores it).
std::string calibrated_cluster_yaml(const std::string& name, bool quick, const CalibrationMeasurements& r, const ChipSpec& chip,
                                    const TopologySpec& topo, const std::string& host, const std::string& date);

}  // namespace scanshard
