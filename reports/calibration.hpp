// reports/calibration.hpp — the fitting half of `scanshard calibrate` (DESIGN §7): from the raw
// measurements (sgemm rates, STREAM-triad working sets, kernel times, collective times) to the
// ChipSpec and topology of a cluster file, and that file's text.
//
//   * peaks: peak_flops_per_s.fp32 = the best sgemm rate; memory_bytes_per_s = the best triad rate
//     (the roofline ceiling) and efficiency.memory_curve = each working set's rate as a fraction
//     of it; efficiency.memory = the largest working set's fraction; efficiency.gemv_memory_curve =
//     the one-row linear's (sgemv) rate at the same working sets as a fraction of that rate;
//     efficiency.decode_attention_memory_curve = the decode attention's cache rate, in L2 (C10)
//     and beyond it (C14), as fractions of that rate (fit_decode_attention_memory_curve).
//     efficiency.decode_attention_rows_curve = the decode attention kernel's rate per key and query
//     head at G = 1, 2, 4, 8 query heads per K/V head, as fractions of its rate at C10's G
//     (fit_decode_attention_rows_curve).
//   * per op class, the efficiency at which the roofline price (sim/cost.hpp compute_seconds) of
//     a benchmark's program steps equals the time the executor's trace gives them when it runs
//     calibrate's own plans (calibration_plan_set: small, one to three layers, not validate's;
//     fit_efficiency: bisection in log space, clamped to [1e-4, 1]); a class's value prices all
//     its benchmarks' steps together (time-weighted). Order: the tuned kernels' own values
//     (efficiency.ops, kTunedOps) first, then elementwise, norm, gemm, scan, attention; then
//     attention and attention_softmax together (fit_attention_softmax); then
//     efficiency.gemm_curve from every GEMM step of those plans by the FLOPs of one GEMM
//     (fit_gemm_curve).
//   * each collective's samples fitted to latency + bytes/bandwidth on relative residuals, and the
//     island link implied through the simulator's formula for that collective on P devices
//     (all-reduce 2(P−1)/P·b/bw + 2(P−1)·lat; all-gather, reduce-scatter (P−1)/P·b/bw + (P−1)·lat;
//     send/recv lat + b/bw). The island link is the all-reduce's fit over the gradient all-reduces
//     calibrate's plans traced as replicas (the cache state a training step leaves; the benchmark's
//     collectives run with hot caches, up to 3x faster: docs/validation.md runs Q/R) and the
//     benchmark's samples below their sizes (fit_collective_in_step).
//   * compute_jitter = median wait at a training step's loss all-reduce / (median compute of the
//     step · E[max of P standard normals]), capped at 0.5 (measure/microbench.hpp measure_jitter).
//
// For: calibrate (which measures, then calls these), tests. Not for: measuring (no kernels, no
// MPI here: measure/microbench.hpp runs the plans and the micro-benchmarks), printing.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <optional>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "program/lower.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "program/trace.hpp"
#include "reports/stats.hpp"

namespace scanshard {

struct GemmSample { std::int64_t m, n, k; double seconds, flops_per_s; };
struct TriadSample { double bytes, bytes_per_s; };

// calibrate's own plans (not validate's: see calibration_plan_set), run by the executor on one
// rank each; their traces are what the fits below read.
struct CalibrationPlan {
  std::string id;  // "C01", ...
  ModelSpec model;
  Plan plan;
  std::optional<ServingShape> decode;  // set: decoded (train/plan_runs.hpp decode_run), not trained
  bool attention_only = false;  // times only its decode attention (C14): not a GEMM-curve sample
};
// One device each (data=1), one micro-batch, fp32, sequential scan, no overlap; one or few layers
// per family (griffin-tiny's 3 layers for its local-attention layer, the others 1), widths 64–256
// for the GEMM curve, 5 sequences x 96 tokens (and 3 x 64, 6 x 128 for smaller and larger GEMMs).
// Validate's 51 plans use other depths (2–6), batches and sequence lengths (none has 96 tokens,
// or a micro-batch of 3, 5 or 6), so the loop calibrates on one set of programs and is scored on
// another. Five decode plans (C10: one mqa-tiny layer, batch 1 after a 1024-token prompt: the
// decode attention kernel over a global cache and one-row GEMMs; C11: griffin-tiny at batch 4:
// four-row GEMMs and the RG-LRU at one token; C12, C13: one RWKV-4 and one RWKV-6 layer at batch 2:
// the WKV state updates at one token; C14: three transformer-tiny layers at batch 6 after a
// 768-token prompt, 7.2 MB of K/V cache per rank, the decode attention out of L2) time the
// decoder's kernels; validate's decode plans use other depths, batches and contexts.
std::vector<CalibrationPlan> calibration_plan_set();

// The compute steps of rank 0's program of (m, p) whose name is in `names`, every layer's, as
// many times as one training step runs them (forward and backward once per micro-batch, the
// step end once): what a trace sums under those names. std::runtime_error when there are none.
std::vector<Step> plan_steps(const ModelSpec& m, const Plan& p, const std::vector<std::string>& names);

// The compute steps named `names` of one decode step of (m, p, s) at the sample's middle position
// (decode prices are linear in the position, so this is the mean over the sampled tokens), each
// layer's: what a decode trace's step sums under those names. std::runtime_error when there are none.
std::vector<Step> decode_plan_steps(const ModelSpec& m, const Plan& p, const ServingShape& s, const std::vector<std::string>& names);
// Every compute step name of one decode step of decode plan `c` (at the sample's middle position)
// that is neither a GEMM the curve is fitted from (gemm_step_samples) nor attention or a recurrence
// (the decode kernels' own values: attention.decode, rglru.decode, wkv4/6.decode): the norms,
// residual adds, gates, Conv1D, embedding, logits and the sampling — the small calls whose price
// is mostly the per-call cost (fit_call_seconds).
std::vector<std::string> call_step_names(const CalibrationPlan& c);
// One kernel benchmark: a group of program steps of one calibration plan (forward and backward of
// every layer that has them), their priced steps, and their time in the executor's trace.
struct KernelBench {
  std::string cls;      // efficiency field fitted: elementwise, norm, gemm, scan, attention; "call": fit_call_seconds
  std::string plan;     // the calibration plan (CalibrationPlan::id) whose trace times it
  std::string model;    // that plan's model (a label)
  std::string group;    // label: the program steps the kernels implement
  std::vector<std::string> names;  // those steps' names
  std::vector<Step> steps{};  // plan_steps of them (lowered with `scan`)
  double seconds = 0;   // measured per training step (median over steps, mean over ranks)
  double efficiency = 0;
  bool clamped = false;
  std::string op{};  // non-empty: fits efficiency.ops[op], its own value (kTunedOps) ...
  bool also_class = false;  // ... and, if set, joins its class's fit too (else only its own)
  ScanAlgo scan = ScanAlgo::sequential;  // the lowering that prices it (the run is always sequential)
};

// calibrate's benchmarks on the calibration plans (steps filled, seconds 0).
std::vector<KernelBench> calibration_benches(const std::vector<CalibrationPlan>& plans);

// One GEMM step of a calibration plan as the trace keys it (phase, op, name): its priced steps
// (one per layer that has it), its measured seconds and the FLOPs of one of its GEMMs (2·m·n·k),
// the x of efficiency.gemm_curve.
struct GemmStepSample {
  std::string plan;
  Trace::Key key;
  std::vector<Step> steps;
  std::int64_t m = 0, n = 0, k = 0;
  double gemm_flops = 0;
  double seconds = 0;
  double efficiency = 0;  // its own value (fit_gemm_curve)
  bool clamped = false;
};
// Every pure GEMM step of the plans (class gemm, no vector work: not the logits with their softmax
// statistics; not a tuned kernel such as blockdiag).
std::vector<GemmStepSample> gemm_step_samples(const std::vector<CalibrationPlan>& plans);

// Seconds per training step of the trace cells `take` accepts: each cell's median over every run's
// steps after its first (a warm-up), all runs together (one Trace per run), summed over the cells
// (0 without any). Per cell, not the median of per-step sums: a process switch (~40-80 ms on a
// loaded machine) lands in one call, and in a sum over many cells it would spoil most steps.
double median_cell_seconds(const std::vector<Trace>& runs, const std::function<bool(const Trace::Key&)>& take);
// KernelBench::seconds and GemmStepSample::seconds from each calibration plan's traces
// (traces[i]: plan i's runs on this rank).
void read_traces(const std::vector<CalibrationPlan>& plans, const std::vector<std::vector<Trace>>& traces,
                 std::vector<KernelBench>& benches, std::vector<GemmStepSample>& gemms);

// The efficiency field `cls` names: an op class, or a tuned kernel's op (efficiency.ops).
double& efficiency_field(Efficiency& e, const std::string& cls);

// The efficiency at which the roofline price of `steps` equals `measured` (bisection in log space;
// the price falls as the efficiency grows). Clamped to [1e-4, 1] (*clamped says so).
double fit_efficiency(const std::vector<Step>& steps, ChipSpec chip, const std::string& cls, double measured, bool* clamped);

// efficiency.attention and efficiency.attention_softmax together, from the attention benchmarks
// (see calibration.cpp). Needs ≥ 2 attention benchmarks (else leaves the chip as it is).
void fit_attention_softmax(std::vector<KernelBench>& benches, ChipSpec& chip);

// KernelBench::cls of the per-call cost's benchmarks (fit_call_seconds), which fit no efficiency.
inline constexpr char kCallBenchClass[] = "call";
// KernelBench::cls of the decode attention's benchmark over a cache beyond L2 (C14), which fits
// a point of efficiency.decode_attention_memory_curve (its `efficiency`), no efficiency field.
inline constexpr char kDecodeAttentionMemoryClass[] = "decode_attention_memory";

// The op classes calibrate fits, in its order. Steps of the other compute classes (embedding, optimizer) are priced
// with the elementwise value (sim/cost.cpp).
inline constexpr std::array<const char*, 5> kCalibratedClasses = {"elementwise", "norm", "gemm", "scan", "attention"};

// The tuned kernels' own values, then every class value and attention_softmax, from the benchmarks'
// measured seconds; records each benchmark's own efficiency. A benchmark's steps of another class
// that has a tuned value (the gemm benchmark's gelu ⊙) are priced with that value while its class
// is fitted, as the simulator prices them.
void fit_kernel_efficiencies(std::vector<KernelBench>& benches, ChipSpec& chip);

// efficiency.decode_attention_memory_curve: one point per decode attention benchmark (C10's own
// attention.decode value's and each kDecodeAttentionMemoryClass one), at the working set its
// steps cycle through (max of their bytes and reuse_bytes): the fraction of memory_bytes_per_s at
// which the steps' price (sim/cost.hpp compute_seconds with `chip`'s attention.decode value, that
// point alone on the curve) equals the measured time (bisection in log space, down to 1e-6) — or
// the triad curve's value there when the price already reaches the time at it (compute-bound,
// as C10 in L2; such a point's `clamped` is set). Points by working set; fewer than two: empty
// (the triad's curve, as without calibration). Called at the end of fit_kernel_efficiencies.
std::vector<std::pair<double, double>> fit_decode_attention_memory_curve(std::vector<KernelBench>& benches, const ChipSpec& chip);

// efficiency.gemm_curve from the executor's own GEMM steps: each sample's own value (the gemm
// efficiency at which its steps' roofline price equals its time, every other field as `chip` has
// it), then the samples whose value is not clamped (a memory-bound step's price does not depend on
// it) sorted by the FLOPs of one GEMM and pooled into bins no wider than a factor kGemmBinRatio;
// one point per bin, at the bin's time-weighted value (fit_efficiency on its steps together) and
// the geometric mean of its FLOPs. Empty without such samples.
inline constexpr double kGemmBinRatio = 1.5;
std::vector<std::pair<double, double>> fit_gemm_curve(std::vector<GemmStepSample>& samples, const ChipSpec& chip);

// The per-call cost of a kernel as a decode step calls it, one number for every class
// (ChipSpec::launch_overhead_seconds, which sim/cost.hpp adds per call to every compute step):
// over the call benchmarks (cls kCallBenchClass: the small kernels of calibrate's decode plans C10
// and C11, call_step_names, one benchmark per op group), each one's time beyond its roofline price
// per call, (measured − roofline price without any per-call cost) / calls, and their median — at
// least `floor_seconds` (the hot loop's cost of one tiny call: none is cheaper). The median, not
// the total: a group whose work is priced wrong at decode sizes (the RG-LRU's gates at 4 rows)
// must not become every kernel's per-call cost. The floor without call benchmarks.
double fit_call_seconds(const std::vector<KernelBench>& benches, const ChipSpec& chip, double floor_seconds);

// The chip from its peaks: the best sgemm and triad rates, the memory curve. memory_bytes and
// onchip_memory_bytes as given (the caller reads them from the machine).
ChipSpec chip_from_peaks(const std::vector<GemmSample>& gemm, const std::vector<TriadSample>& triad, double vector_flops_per_s,
                         double launch_overhead_seconds);

// efficiency.gemv_memory_curve: each GEMV sample's rate as a fraction of memory_bytes_per_s (at
// most 1), by its weight bytes. Empty without samples.
[[nodiscard]] std::vector<std::pair<double, double>> fit_gemv_memory_curve(const std::vector<TriadSample>& gemv,
                                                                           double memory_bytes_per_s);

// The decode attention kernel (kernels/kv_cache.hpp fast::attention_decode) with `rows` = G query
// heads per K/V head: seconds per key and query head (measure::bench_decode_attention_rows).
struct DecodeAttentionRowsSample {
  double rows = 0, seconds_per_key_head = 0;
};
// efficiency.decode_attention_rows_curve: each sample's rate (1 / seconds per key and query head)
// as a fraction of the rate at `reference_rows` — the G of the benchmark that fits the kernel's
// attention.decode value (decode_attention_reference_rows: C10), so that value stays the
// kernel's own at that G and a faster G is held at 1 (the loader's fractions are at most 1; a
// curve normalised to the fastest G put C10's fitted value at the clamp) — by rows increasing (a
// repeated or unmeasured G is skipped). Empty without samples or without one at reference_rows.
[[nodiscard]] std::vector<std::pair<double, double>> fit_decode_attention_rows_curve(
    const std::vector<DecodeAttentionRowsSample>& samples, double reference_rows);
// The G (Step::m) of the attention.decode steps of the benchmark that fits efficiency.ops
// attention.decode (cls attention, op attention.decode: C10); 0 without one.
[[nodiscard]] double decode_attention_reference_rows(const std::vector<KernelBench>& benches);

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

// The collectives of kind `kind` (ops::all_reduce, ...) that training steps traced, as (bytes of
// one call, seconds of one call): per size (a cell's bytes / calls), the median over every run's
// steps after its first (a warm-up), sorted by bytes. Not the step's loss all-reduce
// (step.metrics: where the ranks wait for the slowest, measure_jitter's sample). A cell without
// bytes (a trace that did not count them), without calls, or with a non-finite or non-positive
// time or size is ignored.
std::vector<std::pair<double, double>> traced_collective_samples(const std::vector<Trace>& runs, const std::string& kind);

// The all-reduce fit as a training step runs its collectives: the traced samples (a training step's
// own calls, traced_collective_samples, in the cache state the step leaves them) and, below the
// smallest traced message, the benchmark's samples of `bench` (its latency end), fitted together
// (fit_collective on P ranks). `bench` itself when nothing was traced or fewer than two samples
// result.
CommFit fit_collective_in_step(const CommFit& bench, const std::vector<std::pair<double, double>>& traced, int P);

// The island per-hop latency (TopologySpec::island_latency_seconds) from a collective fit's
// per-step latency: inside an island a ring step is two hops (device → switch → device,
// sim/network.cpp), so half the step.
[[nodiscard]] inline double island_hop_latency_seconds(const CommFit& f) { return f.link_latency_seconds / 2; }

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
  std::vector<TriadSample> gemv;  // measure::bench_gemv at the triad's working sets (empty: not measured)
  std::vector<DecodeAttentionRowsSample> decode_attention_rows;  // measure::bench_decode_attention_rows (empty: not measured)
  double memory_probe_seconds = 0;  // memory_probe_seconds() (measure/probe.hpp), mean over ranks and its two runs
  double vector_flops = 0, launch = 0;  // launch: the hot loop's cost of one tiny call (fit_call_seconds' floor)
  double probe_seconds = 0;  // machine_probe_seconds() (measure/probe.hpp), mean over ranks
  std::vector<KernelBench> kernels;
  std::vector<GemmStepSample> gemm_steps;
  std::vector<double> rank_kernel_seconds;  // each rank's own sum of the kernel benchmarks (same work, same time)
  std::vector<CommFit> comm;  // the benchmark's (bench_mpi)
  // the all-reduce samples calibrate's plans traced trained as replicas (traced_collective_samples,
  // max over ranks) and the fit the island link comes from (fit_collective_in_step)
  std::vector<std::pair<double, double>> traced_all_reduce;
  CommFit comm_in_step;
  CommFit comm_back_to_back;  // the all-reduce as a decode step calls it (empty samples: not measured)
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
