// sim/cost.hpp — pure cost functions: numbers in, seconds out (DESIGN §5). No state, no I/O.
// For: pricing one compute step on a chip and one collective or p2p on an axis. Not for: walking
// programs or overlap (simulate.hpp).
#pragma once
#include <cstdint>

#include "program/cluster.hpp"
#include "program/lower.hpp"
#include "sim/network.hpp"

namespace scanshard {

// Matrix-unit peak for a dtype: the chip's entry, else bf16/4 for fp32 on bf16-only matrix units
// (multi-pass emulation, an assumption), else the fp32 entry for bf16 on fp32-only CPUs.
[[nodiscard]] double matrix_peak_flops_per_s(const ChipSpec& chip, DType dtype);

// GEMM FLOPs after padding m, n, k up to the matrix tile.
[[nodiscard]] double padded_gemm_flops(double flops, std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t tile);

// GEMM FLOPs after wave quantization on a GPU (chip.sm_count > 0; NVIDIA Deep Learning Performance
// Guide, "Matrix Multiplication Background" §3: tile and wave quantization). Each group's m x n output
// (groups = flops / 2mnk, a batched GEMM's) is cut into gemm_tile_m x gemm_tile_n tiles, in the
// orientation that wastes less; the SMs run one tile each at a time, and a wave costs a full wave's
// time however few tiles it holds: waves · sm_count · 2 · tile_m · tile_n · k. When the tiles do not
// fill one wave, k is split (split-K) into min(⌊SMs / tiles⌋, ⌊k / longer tile side⌋) slices, at
// least 1. Never less than `flops`.
[[nodiscard]] double wave_padded_gemm_flops(double flops, std::int64_t m, std::int64_t n, std::int64_t k, const ChipSpec& chip);

// A GEMM step of one row (m = 1): the linear kernel runs it as a GEMV (kernels/linear.cpp), whose
// memory traffic compute_seconds prices at efficiency.gemv_memory_curve.
[[nodiscard]] bool is_gemv(const Step& s);
// A decode step's attention (kernel attention.decode): its memory traffic, the K/V cache rows,
// compute_seconds prices at efficiency.decode_attention_memory_curve.
[[nodiscard]] bool is_decode_attention(const Step& s);

// Roofline: max(matrix time + vector time, memory time) + launch overhead. A scan whose state
// does not fit in on-chip memory pays its spill traffic. A decode attention step's compute time
// runs at efficiency.decode_attention_rows_at(its G = Step::m) of its kernel value.
[[nodiscard]] double compute_seconds(const Step& s, const ChipSpec& chip, DType dtype);

// Ring-based collectives over an axis. `bytes` is the full buffer per rank (for all-gather: the
// gathered result). All-reduce = reduce-scatter + all-gather.
[[nodiscard]] double all_gather_seconds(double bytes, const AxisNetwork& net);
[[nodiscard]] double reduce_scatter_seconds(double bytes, const AxisNetwork& net);
[[nodiscard]] double all_reduce_seconds(double bytes, const AxisNetwork& net);
// `hops` sequential neighbour transfers of `bytes` each.
[[nodiscard]] double p2p_seconds(double bytes, std::int32_t hops, const AxisNetwork& net);

[[nodiscard]] double comm_seconds(const Step& s, const AxisNetwork& net);

// E[max of P independent standard normals] (0 for P ≤ 1): exact values to P = 16 (Tippett 1925,
// Harter 1961 tables), beyond them the 16-rank value grown as √(ln P) (the extreme-value rate).
[[nodiscard]] double expected_max_standard_normal(std::int64_t P);
// What P ranks that synchronise after `compute_seconds` of work each lose, on average, waiting for
// the slowest when each rank's duration varies by `jitter` (relative standard deviation):
// jitter · compute_seconds · E[max of P standard normals]. Summed over a step's synchronisation
// points the compute stretches add up to the step's compute, so a step waits
// sync_wait_seconds(its compute, ...) in all (sim/simulate.cpp).
[[nodiscard]] double sync_wait_seconds(double compute_seconds, double jitter, std::int64_t P);

// The time a stretch of `compute_seconds` of work and `comm_seconds` of communication take when
// they run at once, compute slowed by the factor (1 + slowdown) while the communication runs
// (ChipSpec::overlap_compute_slowdown): max(comm, compute + min(comm, compute·(1+s))·s/(1+s)).
// With slowdown 0 it is max(compute, comm): overlap hides the shorter one completely.
[[nodiscard]] double overlapped_seconds(double compute_seconds, double comm_seconds, double slowdown);

// The same prices as straight lines in the bytes moved, for bounds (planner/): the formulas above
// regrouped as fixed + per_byte · bytes — equal in exact arithmetic, the last bits may differ.
// An all-gather and a reduce-scatter cost one all_gather_line, an all-reduce two; a p2p transfer
// costs `hops` p2p_hop_lines. Zero on an axis of size 1.
struct CommLine {
  double fixed = 0, per_byte = 0;
};
[[nodiscard]] CommLine all_gather_line(const AxisNetwork& net);
[[nodiscard]] CommLine p2p_hop_line(const AxisNetwork& net);

}  // namespace scanshard
