// sim/cost.cpp — see cost.hpp.
#include "sim/cost.hpp"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace scanshard {

double matrix_peak_flops_per_s(const ChipSpec& chip, DType dtype) {
  const auto& p = chip.peak_flops_per_s;
  const char* want = dtype == DType::bf16 ? "bf16" : "fp32";
  if (auto it = p.find(want); it != p.end()) return it->second;
  if (dtype == DType::fp32) return p.at("bf16") / 4;
  return p.at("fp32");
}

double padded_gemm_flops(double flops, std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t tile) {
  if (tile <= 1 || m <= 0 || n <= 0 || k <= 0) return flops;
  auto up = [tile](std::int64_t x) { return static_cast<double>((x + tile - 1) / tile * tile); };
  return flops * (up(m) / static_cast<double>(m)) * (up(n) / static_cast<double>(n)) * (up(k) / static_cast<double>(k));
}

double wave_padded_gemm_flops(double flops, std::int64_t m, std::int64_t n, std::int64_t k, const ChipSpec& chip) {
  const std::int64_t sms = chip.sm_count;
  if (sms <= 0 || chip.gemm_tile_m <= 0 || m <= 0 || n <= 0 || k <= 0 || flops <= 0) return flops;
  const double one = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const double groups = std::max(1.0, std::round(flops / one));
  auto padded = [&](std::int64_t tm, std::int64_t tn) {
    const double tiles = groups * static_cast<double>((m + tm - 1) / tm) * static_cast<double>((n + tn - 1) / tn);
    double splits = 1;
    if (tiles < static_cast<double>(sms))
      splits = std::max(1.0, std::min(std::floor(static_cast<double>(sms) / tiles),
                                      std::floor(static_cast<double>(k) / static_cast<double>(std::max(tm, tn)))));
    const double waves = std::ceil(tiles * splits / static_cast<double>(sms));
    return waves * static_cast<double>(sms) * 2.0 * static_cast<double>(tm * tn) * (static_cast<double>(k) / splits);
  };
  const double best = std::min(padded(chip.gemm_tile_m, chip.gemm_tile_n), padded(chip.gemm_tile_n, chip.gemm_tile_m));
  return std::max(flops, best * flops / (groups * one));
}

namespace {
double class_efficiency(OpClass c, const Efficiency& e) {
  switch (c) {
    case OpClass::gemm: return e.gemm;
    case OpClass::attention: return e.attention;
    case OpClass::scan: return e.scan;
    case OpClass::norm: return e.norm;
    default: return e.elementwise;
  }
}
}  // namespace

bool is_gemv(const Step& s) { return s.kind == StepKind::compute && s.cls == OpClass::gemm && s.m == 1; }

bool is_decode_attention(const Step& s) {
  return s.kind == StepKind::compute && s.kernel != nullptr && std::string_view(s.kernel) == ops::attention_decode;
}

double compute_seconds(const Step& s, const ChipSpec& chip, DType dtype) {
  const Efficiency& e = chip.efficiency;
  // GEMMs: the efficiency of one GEMM of this shape (groups of a block-diagonal GEMM count
  // separately: matmul_flops / (2·m·n·k) of them), from the chip's curve when it has one.
  const double one_gemm = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
  double eff = s.cls == OpClass::gemm && one_gemm > 0 ? e.gemm_at(one_gemm) : class_efficiency(s.cls, e);
  // a per-kernel value: the step's kernel tag's, else its op's (a decode step's tag, rglru.decode,
  // falls back to the training kernel's value when the chip has none for one token per call)
  if (!e.ops.empty()) {
    auto it = s.kernel ? e.ops.find(std::string_view(s.kernel)) : e.ops.end();
    if (it == e.ops.end()) it = e.ops.find(std::string_view(s.op));
    if (it != e.ops.end()) eff = it->second;
  }
  // a named attention kernel's measured rate: the whole kernel's, its softmax work included
  bool whole_kernel = false;
  if (s.cls == OpClass::attention && s.kernel && !e.attention_kernels.empty()) {
    if (auto it = e.attention_kernels.find(std::string_view(s.kernel)); it != e.attention_kernels.end()) {
      eff = it->second;
      whole_kernel = true;
    }
  }
  // (a GEMV is no tile grid: cuBLAS runs it as a GEMV kernel, bound by its memory traffic)
  const double mm = s.cls != OpClass::gemm ? s.matmul_flops
                    : chip.sm_count > 0     ? (is_gemv(s) ? s.matmul_flops : wave_padded_gemm_flops(s.matmul_flops, s.m, s.n, s.k, chip))
                                            : padded_gemm_flops(s.matmul_flops, s.m, s.n, s.k, chip.matrix_tile);
  const double matrix_s = mm / (matrix_peak_flops_per_s(chip, dtype) * eff);
  const double vector_eff = s.matmul_flops <= 0                                       ? eff
                            : s.cls == OpClass::attention && e.attention_softmax > 0 ? e.attention_softmax
                                                                                     : e.elementwise;
  const double vector_s = whole_kernel ? 0 : s.vector_flops / (chip.vector_flops_per_s * vector_eff);
  // the decode attention's rate at its G (query heads per K/V head: the rows of its GEMMs)
  const double rows_fraction = is_decode_attention(s) ? e.decode_attention_rows_at(static_cast<double>(s.m)) : 1.0;
  double bytes = s.bytes_read + s.bytes_written - s.unfused_bytes;
  if (s.state_bytes > chip.onchip_memory_bytes) bytes += s.spill_bytes;
  // the rate of the working set the data cycles through: the step's own bytes, or more (reuse_bytes);
  // a GEMV (a GEMM of one row: the linear kernel's sgemv path) and the decode attention (its K/V
  // cache through small GEMMs) at their own measured rates
  const double working_set = std::max(bytes, s.reuse_bytes);
  const double memory_fraction = is_gemv(s)                  ? e.gemv_memory_at(working_set)
                                 : is_decode_attention(s)    ? e.decode_attention_memory_at(working_set)
                                                             : e.memory_at(working_set);
  const double memory_s = bytes / (chip.memory_bytes_per_s * memory_fraction);
  const double unfused_s = s.unfused_bytes > 0 ? s.unfused_bytes / (chip.memory_bytes_per_s * e.memory_at(s.unfused_bytes)) : 0;
  return std::max((matrix_s + vector_s) / rows_fraction, memory_s) + unfused_s + chip.launch_overhead_seconds * s.calls;
}

double all_gather_seconds(double bytes, const AxisNetwork& net) {
  if (net.size <= 1 || bytes <= 0) return 0;
  const CommLine l = all_gather_line(net);  // the price is linear in the bytes
  return l.fixed + l.per_byte * bytes;
}

double reduce_scatter_seconds(double bytes, const AxisNetwork& net) { return all_gather_seconds(bytes, net); }

double all_reduce_seconds(double bytes, const AxisNetwork& net) {
  return reduce_scatter_seconds(bytes, net) + all_gather_seconds(bytes, net);
}

double p2p_seconds(double bytes, std::int32_t hops, const AxisNetwork& net) {
  if (net.size <= 1 || hops <= 0) return 0;
  return hops * (net.p2p_latency_seconds + bytes / net.p2p_bytes_per_s);
}

double comm_seconds(const Step& s, const AxisNetwork& net) {
  switch (s.comm) {
    case CommKind::all_reduce: return all_reduce_seconds(s.comm_bytes, net);
    case CommKind::all_gather: return all_gather_seconds(s.comm_bytes, net);
    case CommKind::reduce_scatter: return reduce_scatter_seconds(s.comm_bytes, net);
    case CommKind::send_recv: return p2p_seconds(s.comm_bytes, s.hops, net);
    case CommKind::none: return 0;
  }
  return 0;
}

double expected_max_standard_normal(std::int64_t P) {
  static constexpr double table[] = {0,      0,      0.5642, 0.8463, 1.0294, 1.1630, 1.2672, 1.3522, 1.4236,
                                     1.4850, 1.5388, 1.5864, 1.6292, 1.6680, 1.7034, 1.7359, 1.7660};
  if (P <= 16) return table[std::max<std::int64_t>(P, 0)];
  return table[16] * std::sqrt(std::log(static_cast<double>(P)) / std::log(16.0));
}

double sync_wait_seconds(double compute_seconds, double jitter, std::int64_t P) {
  return jitter * compute_seconds * expected_max_standard_normal(P);
}

double overlapped_seconds(double compute_seconds, double comm_seconds, double slowdown) {
  if (comm_seconds <= 0) return compute_seconds;
  // While the communication runs, compute progresses at 1/(1+s) of its rate; once it ends, at the
  // full rate. The communication covers min(comm, compute·(1+s)) of the compute's stretch.
  const double shared = std::min(comm_seconds, compute_seconds * (1 + slowdown));
  return std::max(comm_seconds, compute_seconds + shared * slowdown / (1 + slowdown));
}

CommLine all_gather_line(const AxisNetwork& net) {
  CommLine l;
  if (net.size <= 1) return l;
  if (net.ring_bytes_per_s > 0) {  // one NCCL ring through the islands (network.hpp)
    // The ring visits all P = islands × inside members: P − 1 steps, of which (islands − 1)
    // cross the network and the rest stay inside an island — NCCL's own latency model
    // (src/graph/tuning.cc: nsteps = nRanks − 1, nInterSteps = nNodes − 1 for all-gather and
    // reduce-scatter; latency = (nsteps − nInterSteps)·intraLat + nInterSteps·interLat).
    const RingLevel& in = net.levels.front();
    const RingLevel& out = net.levels.back();
    l.fixed = static_cast<double>(out.members * (in.members - 1)) * in.step_latency_seconds +
              static_cast<double>(out.members - 1) * out.step_latency_seconds;
    const double P = static_cast<double>(net.size);
    l.per_byte = (P - 1) / P / net.ring_bytes_per_s;
    return l;
  }
  if (net.hierarchical) {
    // Levels in sequence, innermost first (torus pods: the in-pod rings, then one rank per pod
    // over DCN): the inner level gathers the whole buffer among its members, the level outside
    // moves only one inner member's share (each inner member exchanges its 1/P_in over its own
    // link with its counterparts elsewhere, not the whole buffer through one link). Island axes
    // with members on both levels take the one-ring price above instead.
    double share = 1;  // bytes moved per byte of the buffer, level by level
    for (const auto& lv : net.levels) {
      const double Pl = static_cast<double>(lv.members);
      l.per_byte += (Pl - 1) / Pl * share / lv.bytes_per_s;
      l.fixed += (Pl - 1) * lv.step_latency_seconds;
      share /= Pl;
    }
    return l;
  }
  double bw = 0;  // torus dimensions run concurrently
  for (const auto& lv : net.levels) {
    bw += lv.bytes_per_s;
    l.fixed += static_cast<double>(lv.members - 1) * lv.step_latency_seconds;
  }
  const double P = static_cast<double>(net.size);
  l.per_byte = (P - 1) / P / bw;
  return l;
}

CommLine p2p_hop_line(const AxisNetwork& net) {
  if (net.size <= 1) return {};
  return {net.p2p_latency_seconds, 1 / net.p2p_bytes_per_s};
}

}  // namespace scanshard
