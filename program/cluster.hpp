// program/cluster.hpp — chip and cluster specifications (DESIGN §5), read from YAML.
//
// For: the typed description of hardware that sim/ prices against and planner/ places onto:
// per-chip peaks, memory, per-op-class efficiencies, and the network (torus or islands joined
// by a fat tree). Not for: cost formulas (sim/) or building the topology graph (sim/).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "program/names.hpp"

namespace scanshard {

// Achieved fraction of peak per op class; the defaults are assumptions until `calibrate`.
struct Efficiency {
  double gemm = 0.6;
  double elementwise = 0.7;
  double scan = 0.7;
  double attention = 0.5;
  double norm = 0.7;
  double memory = 0.85;    // fraction of memory_bytes_per_s reached by streaming ops
  // Optional: fraction of vector_flops_per_s reached by the attention core's per-score work
  // (scale, max, exp, sum, normalise; its vector_flops), 0 = the elementwise value, as every other
  // step that carries matrix FLOPs. On a CPU it is the larger part of a small head's attention:
  // per score ~2 ns forward and ~5 ns backward against ~13 ps per matrix FLOP (this machine), so
  // one `attention` value fitted at head size 32 priced head size 16 30 % fast. `scanshard
  // calibrate` fits it beside `attention` from attention at two head sizes.
  double attention_softmax = 0;
  double network = 0.85;   // fraction of link bandwidth reached by collectives
  // Optional shape dependence of `gemm`: (FLOPs of one GEMM 2·m·n·k, fraction of peak) points,
  // FLOPs increasing; between points the fraction is interpolated linearly in log(FLOPs), beyond
  // them held at the end value. Empty: every GEMM reaches `gemm`.
  std::vector<std::pair<double, double>> gemm_curve;
  [[nodiscard]] double gemm_at(double gemm_flops) const {  // inline: the planner prices millions of steps
    return gemm_curve.empty() ? gemm : curve_at(gemm_curve, gemm_flops);
  }
  // Optional working-set dependence of `memory`: (bytes a step reads and writes, fraction of
  // memory_bytes_per_s) points, bytes increasing, interpolated as gemm_curve. On a CPU the
  // roofline's bandwidth is the in-cache one and a step streaming tens of MB reaches a tenth of
  // it; `scanshard calibrate` writes it from its STREAM-triad working sets.
  std::vector<std::pair<double, double>> memory_curve;
  [[nodiscard]] double memory_at(double bytes) const {
    return memory_curve.empty() ? memory : curve_at(memory_curve, bytes);
  }
  // Optional: the memory curve of a GEMV (a one-row linear: batch-1 decoding, each weight read
  // once per token through cblas_sgemv), (bytes of the weights it cycles through, fraction of
  // memory_bytes_per_s), interpolated as memory_curve; empty: memory_curve. One read stream where
  // the triad has two reads and a write: beyond the last-level cache it reached ~0.6 of the
  // triad's rate at the same working set (2026-12-07, Zen 4 VM, D09: 50 MB of weights per token).
  // `scanshard calibrate` writes it from the decoder's linear kernel at the triad's working sets.
  std::vector<std::pair<double, double>> gemv_memory_curve;
  [[nodiscard]] double gemv_memory_at(double bytes) const {
    return gemv_memory_curve.empty() ? memory_at(bytes) : curve_at(gemv_memory_curve, bytes);
  }
  // Optional: the memory curve of the decode attention kernel (attention.decode: a step's K/V
  // cache rows read through small GEMMs, kernels/kv_cache.hpp), (bytes of the working set a token
  // cycles through, the step's reuse_bytes, fraction of memory_bytes_per_s), interpolated as
  // memory_curve; empty: memory_curve. The kernel's compute value (ops attention.decode) comes from
  // a cache in L2; with a cache of several MB per rank (both ranks' in the shared L3) the same
  // kernel ran ~1.7x slower per FLOP (2026-12-07, Zen 4 VM, D08) while the triad's rate at that
  // working set still left it compute-bound. `scanshard calibrate` writes one point per decode
  // attention benchmark (C10: in L2, C14: several MB; fit_decode_attention_memory_curve).
  std::vector<std::pair<double, double>> decode_attention_memory_curve;
  [[nodiscard]] double decode_attention_memory_at(double bytes) const {
    return decode_attention_memory_curve.empty() ? memory_at(bytes) : curve_at(decode_attention_memory_curve, bytes);
  }
  // Optional: the decode attention kernel's rate against G, the query heads that share one K/V
  // head (the rows of its two GEMMs per (sequence, K/V head): Step::m of an attention.decode
  // step), as (G, fraction of its rate per key and query head at the G of the benchmark that fits
  // ops attention.decode — C10, G = 4 — at most 1), interpolated as
  // gemm_curve (linear in log G, held beyond the points); empty: every G at 1. Its FLOPs are
  // 4·G·keys·N per pair whatever G, but the kernel is not: G = 1 runs GEMVs (~2x the time per
  // FLOP), and G = 2 ran 1.13-1.15x the time per key and head of G = 4 in a hot loop with the
  // cache in L2 (2026-12-07, Zen 4 VM, one thread, bench/bench_decode_attention.cpp), so the one
  // attention.decode value, fitted on C10 (G = 4), priced G = 2 plans (D05) fast. compute_seconds
  // divides the step's compute time (GEMMs and softmax) by this value at the step's G.
  // `scanshard calibrate` writes it from the kernel at G = 1, 2, 4, 8 (a hot loop, one thread;
  // fit_decode_attention_rows_curve).
  std::vector<std::pair<double, double>> decode_attention_rows_curve;
  [[nodiscard]] double decode_attention_rows_at(double rows) const {
    return decode_attention_rows_curve.empty() || !(rows > 0) ? 1.0 : curve_at(decode_attention_rows_curve, rows);
  }
  // A non-empty curve's value at x: linear in log(x) between points, held beyond them.
  [[nodiscard]] static double curve_at(const std::vector<std::pair<double, double>>& curve, double x);
  // Optional per-kernel values that replace their class's for steps with that op or kernel (the
  // vocabulary of program/lower.cpp and traces). Only kernels whose work per priced FLOP or byte
  // is far from the rest of their class (kTunedOps): the recurrence kernels (an RG-LRU step
  // against a 64 x 64 matrix-state WKV: 10x or more per element), the RG-LRU's block-diagonal
  // gates (thin Rb x Rb GEMMs at a fraction of a square GEMM's rate) and AdamW (a long chain of
  // dependent operations per parameter, priced with the elementwise class otherwise), and the
  // elementwise and norm kernels calibrate times on their own (RoPE with its sin/cos runs at 1/25
  // of a residual add's rate per priced FLOP; the recurrent gate's fused gelu ⊙, gelu_mul, at 2x
  // the class value; LayerNorm at 2-3x RMSNorm's), and the runner's gradient accumulation
  // (grad_accumulate: a clear and a sum over every parameter per micro-batch, at 1/2-1/3 of the
  // class value) and the clear of a layer's gradient buffers (zero: cold memory, ~1/5 of the
  // rate the memory curve gives its size), and RWKV's token shifts (token_shift) and RWKV-6's
  // data-dependent mixes (ddlerp), each ~1/2 of the class value, and the embedding lookup with
  // its scatter-add into the table's gradient (embedding) and the learned positions (add_positions):
  // class embedding, priced with the elementwise value otherwise; and the decode step's attention
  // (attention.decode: one query row per sequence against its cache, dot products one head wide,
  // not the training kernel's tiles), and the decode step's recurrences (rglru.decode, wkv4.decode,
  // wkv6.decode: one token per call, where the training kernels' values come from 96-token calls).
  // `scanshard calibrate` measures them; presets leave them out.
  std::map<std::string, double, std::less<>> ops;
  // Optional measured rates of named blockwise attention kernels (plan `attention:` flash_v1,
  // flash_v2, flash_triton; plan.hpp's has_measured_rate), as a fraction of the matrix peak: the kernel's
  // published forward + backward speed in matmul FLOP/s (4·N per visible (query, key) pair
  // forward, 2.5× that backward with its recompute of QKᵀ: the FLOPs program/lower counts) over
  // the peak. The measurement is the whole kernel's, softmax included, so a step priced with it
  // adds no separate vector time. A kernel without an entry is priced as plain `flash`.
  std::map<std::string, double, std::less<>> attention_kernels;
};
inline constexpr std::array<const char*, 23> kTunedOps = {
    "rglru.scan", "wkv4.scan", "wkv6.scan", "wkv6.chunked", "blockdiag",       "adamw", "conv1d",      "rope",   "softmax_xent",
    "add",        "rmsnorm",   "layernorm", "gelu_mul",     "grad_accumulate", "zero",  "token_shift", "ddlerp", "embedding",
    "add_positions", "attention.decode", "rglru.decode", "wkv4.decode", "wkv6.decode"};

struct ChipSpec {
  std::string name;
  std::string source;
  std::string preset;  // the chip preset a cluster file named (`chip: a100-sxm-80gb`); empty when inline
  std::map<std::string, double, std::less<>> peak_flops_per_s;  // matrix unit per dtype: "bf16", "fp32", ...
  double vector_flops_per_s = 0;    // vector unit / plain SIMD (elementwise, scan)
  double memory_bytes = 0;          // HBM / DRAM capacity
  double memory_bytes_per_s = 0;    // HBM / DRAM bandwidth
  double onchip_memory_bytes = 0;   // VMEM / SRAM / L2 that a fused scan can keep state in
  std::int64_t matrix_tile = 1;     // GEMM dims are padded up to this (128 on TPU MXU)
  // Optional wave quantization of GEMMs on a GPU (sim/cost.hpp wave_padded_gemm_flops): the output
  // is cut into gemm_tile_m x gemm_tile_n thread-block tiles (either orientation), one tile per SM
  // at a time, and a partly filled last wave costs a whole wave. 0: no wave model (matrix_tile
  // padding instead).
  std::int64_t sm_count = 0;
  std::int64_t gemm_tile_m = 0, gemm_tile_n = 0;
  double launch_overhead_seconds = 0;
  // Relative standard deviation of a compute stretch's duration from rank to rank (other processes,
  // interrupts, frequency changes): ranks that meet at a collective wait for the slowest, on
  // average compute_jitter · E[max of P standard normals] of the compute since they last met
  // (sim/cost.hpp sync_wait_seconds). 0 (presets): no such wait. `scanshard calibrate` measures it.
  double compute_jitter = 0;
  // Fraction by which compute slows while overlapped communication runs on the same device (on a
  // GPU the collective's kernels take SMs and HBM bandwidth from the GEMMs beside them): compute
  // that would take t alone takes t·(1 + overlap_compute_slowdown) while a collective runs
  // (sim/cost.hpp overlapped_seconds). 0 (default): overlap is free.
  double overlap_compute_slowdown = 0;
  Efficiency efficiency;

  double peak(const std::string& dtype) const;  // throws if the chip has no such dtype
};

enum class TopologyKind { torus, islands };
inline constexpr Names<TopologyKind, 2> kTopologyNames{{{"torus", TopologyKind::torus}, {"islands", TopologyKind::islands}}};
const char* to_string(TopologyKind k);

struct TopologySpec {
  TopologyKind kind = TopologyKind::torus;
  // torus: chips along each dimension, wraparound per dimension, one-way bandwidth per link
  std::vector<std::int64_t> dims;
  std::vector<bool> wraparound;
  double link_bytes_per_s = 0;
  double hop_latency_seconds = 0;
  // torus pods (TPU slices) joined by the datacenter network: `pods` copies of the torus; a chip
  // reaches its counterpart in another pod over DCN at dcn_bytes_per_s per chip and direction
  // (devices are numbered pod by pod). One pod (the default) has no DCN.
  std::int64_t pods = 1;
  double dcn_bytes_per_s = 0;
  double dcn_latency_seconds = 0;
  // islands (NVLink/NVSwitch nodes, or one CPU host) joined by a fat tree
  std::int64_t islands = 0;
  std::int64_t devices_per_island = 0;
  double island_link_bytes_per_s = 0;      // per device, per direction, inside an island
  double island_latency_seconds = 0;
  // Optional: the island's per-hop latency when collectives follow one another a few µs apart, as
  // a decode step's do (sim/inference.hpp prices those with it). island_latency_seconds is what a
  // training step's collective sees after a stretch of compute, the ranks met at a barrier; back to
  // back the MPI progress engine and its buffers are still hot and a small all-reduce costs much
  // less (`scanshard calibrate` measures both). 0 (presets): island_latency_seconds.
  double island_latency_back_to_back_seconds = 0;
  double network_bytes_per_s = 0;          // per device, per direction, between islands
  double network_latency_seconds = 0;
  // Optional measured bus bandwidths of collectives (nccl-tests `busbw` at large messages, per
  // device): among the devices of one island, and per device's NIC between islands. A measured
  // rate already carries the protocol's overhead, so a level that has one prices its collectives
  // at it instead of link × efficiency.network. 0 (default): link × efficiency.network.
  // Point-to-point transfers keep link × efficiency.network either way.
  double island_busbw_bytes_per_s = 0;
  double network_busbw_bytes_per_s = 0;

  std::int64_t devices() const;
  std::int64_t pod_devices() const;  // chips of one pod (torus), or every device (islands)
  std::string describe() const;  // "torus 4x8x8 (wrap)", "2 pods x torus 12x16x16 (wrap) over DCN", "32 islands x 8, fat tree"
};

// YAML keys: name, source, chip (preset name or inline mapping), topology, and optionally
// measurements (free-form raw data from `scanshard calibrate`; accepted and ignored by the loader).
struct ClusterSpec {
  std::string name;
  std::string source;
  std::string origin;
  ChipSpec chip;
  TopologySpec topology;
  std::int64_t devices() const { return topology.devices(); }
};

// Resolves a chip preset name to (YAML node, file name) — provided by presets.hpp. Throws
// std::invalid_argument with the reason (e.g. the available names) when there is no such chip.
using ChipResolver = std::function<std::pair<YAML::Node, std::string>(const std::string& name)>;

ChipSpec parse_chip(const YAML::Node& node, const std::string& file, const std::string& path);
ClusterSpec parse_cluster(const YAML::Node& node, const std::string& file, const ChipResolver& chips);

// The first `devices` chips of a cluster (torus slice filled dimension by dimension, or part of
// one island / whole islands). ConfigError naming `flag` when no such slice exists.
ClusterSpec cluster_slice(const ClusterSpec& c, std::int64_t devices, const std::string& flag = "--devices");

}  // namespace scanshard
