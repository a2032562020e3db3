// measure/microbench.hpp — the measuring half of `scanshard calibrate`: micro-benchmarks on the
// local ranks, one thread each (one rank = one core = one device), whose results reports/
// calibration.hpp fits into a cluster file.
//   * OpenBLAS cblas_sgemm at several shapes (bench_sgemm), a STREAM triad at working sets from
//     L2-sized to DRAM-sized (bench_triad), the decoder's one-row linear over weights of the same
//     sizes (bench_gemv), the decode attention kernel at G = 1 … 8 query heads per K/V head
//     (bench_decode_attention_rows), an FMA loop on registers (bench_vector_flops), a tiny
//     kernel call (bench_launch_overhead): the best of repeated runs (other processes only ever slow
//     a run down);
//   * per op class: the runner's executor itself (train::run, one rank each, no MPI) on calibrate's
//     own small plans (reports/calibration.hpp calibration_plan_set), every rank running the same
//     plan at once (one core each, as validate's 2-rank plans keep both busy), a few passes of a
//     few steps; the step trace gives each benchmark's and each GEMM step's seconds (the median
//     step after each run's warm-up, mean over ranks) — the code it times is the code that trains;
//   * MPI (N > 1): all-reduce, all-gather, reduce-scatter and ring send/recv at 8 B … 64 MiB, each
//     call timed as a step makes it: after a stretch of sgemm, the ranks released together by a
//     barrier (bench_mpi); the all-reduce back to back, as a decode step calls it
//     (bench_all_reduce_back_to_back); calibrate's training plans trained as replicas
//     (run_replica_plans): the wait at a step's loss all-reduce (measure_jitter) and the gradient
//     all-reduces as a step runs them (traced_all_reduce), which the island link is fitted from.
// Means over ranks where the ranks measure alike (mean_over_ranks).
// For: calibrate. Not for: fitting (reports/calibration.hpp), printing (cli/calibrate_command.cpp).
#pragma once
#include <vector>

#include "reports/calibration.hpp"
#include "train/comm.hpp"

namespace scanshard::measure {

std::vector<GemmSample> bench_sgemm(bool quick);
// a = b + s·c over three float arrays of `bytes` in total; counts 12 bytes per element.
std::vector<TriadSample> bench_triad(bool quick);
// The decoder's one-row linear (kernels/linear.hpp fast::linear_forward with M = 1: cblas_sgemv)
// over weight matrices of `bytes` in total at the triad's working sets (`sizes`: its samples'
// bytes), each read once per sweep as a batch-1 decode step reads its weights; bytes = the weights.
std::vector<TriadSample> bench_gemv(const std::vector<double>& sizes, bool quick);
// The decode attention kernel (kernels/kv_cache.hpp fast::attention_decode, the shape and form
// program/inference.hpp decode_attention_gemms gives it) at G = 1, 2, 4, 8 query heads per K/V
// head: 4 sequences, one K/V head, head size 32, 1032 keys (C10's cache), the cache in L2, best of
// repeated calls: seconds per key and query head.
std::vector<DecodeAttentionRowsSample> bench_decode_attention_rows(bool quick);
// Multiply-adds on 128 independent lanes held in registers: the vector unit's FLOP/s.
double bench_vector_flops(bool quick);
// Per-call cost of a kernel on a tiny input (what a step costs beyond its FLOPs and bytes).
double bench_launch_overhead();

// Runs every calibration plan `quick ? 1 : 10` times (2 or 4 steps each) on every rank at once;
// traces[i]: plan i's runs on this rank. With `probes`, the machine-speed probe runs before each
// pass and its seconds are appended.
std::vector<std::vector<Trace>> run_calibration_plans(const mpi::Comm& world, const std::vector<CalibrationPlan>& plans, bool quick,
                                                      std::vector<double>* probes = nullptr);
struct KernelTiming {
  // each rank's own sum of the kernel benchmarks' seconds, in rank order (the same work on every
  // rank at once: how far the ranks' speeds differ)
  std::vector<double> rank_kernel_seconds;
  // the machine-speed probe (measure/probe.hpp) before each pass: median over the passes, mean
  // over ranks — validate's drift reference, taken in the minutes the kernels were timed
  double probe_seconds = 0;
};
// Runs them and fills KernelBench::seconds and GemmStepSample::seconds (read_traces, mean over
// ranks). Every rank calls it.
KernelTiming time_calibration_plans(const mpi::Comm& world, const std::vector<CalibrationPlan>& plans, std::vector<KernelBench>& benches,
                                    std::vector<GemmStepSample>& gemms, bool quick);

// The collectives at growing message sizes, each fitted (fit_collective). Needs ≥ 2 ranks.
std::vector<CommFit> bench_mpi(const mpi::Comm& w, bool quick);
// One bench_mpi all-reduce sample: seconds of an all-reduce of `bytes` per rank (floats), timed as
// bench_mpi times it. validate's network-drift check calls it at calibrate's sample sizes.
double time_all_reduce(const mpi::Comm& w, double bytes, bool quick);
// The all-reduce as a decode step calls it: back to back, a ~2 µs GEMV between calls, no barrier
// (8 B … 64 KiB), fitted like bench_mpi's. Needs ≥ 2 ranks.
CommFit bench_all_reduce_back_to_back(const mpi::Comm& w, bool quick);
// Every training plan of `plans` trained as P replicas (data = P, every rank its own sequences;
// the same compute per rank as run_calibration_plans' runs), `quick ? 1 : 3` passes of
// `quick ? 3 : 6` steps; traces[i]: plan i's runs on this rank (none for a decode plan, or on one
// rank). Their traces hold a training step's collectives: its loss all-reduce (measure_jitter) and
// its gradient all-reduce (traced_all_reduce), in the cache state the step leaves them.
std::vector<std::vector<Trace>> run_replica_plans(const mpi::Comm& w, const std::vector<CalibrationPlan>& plans, bool quick);
// compute_jitter (see jitter_from) from the replica runs of one plan: the wait at the step's loss
// all-reduce against the step's compute (medians over steps); latency_seconds is the smallest
// all-reduce sample. Needs ≥ 2 ranks (else {}).
Jitter measure_jitter(const mpi::Comm& w, const std::vector<Trace>& runs, double latency_seconds);
// The gradient all-reduces every replica run traced (traced_collective_samples over all of them):
// per size the median, the max over ranks (as bench_mpi's). std::runtime_error when the ranks
// traced different sizes.
std::vector<std::pair<double, double>> traced_all_reduce(const mpi::Comm& w, const std::vector<std::vector<Trace>>& traces);

// Mean over ranks, in place.
void mean_over_ranks(const mpi::Comm& w, std::vector<double>& v);

}  // namespace scanshard::measure
