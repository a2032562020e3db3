// sim/simulate.cpp — see simulate.hpp.
#include "sim/simulate.hpp"

#include <algorithm>
#include <cstdio>

#include "sim/cost.hpp"

namespace scanshard {

const char* to_string(Bucket b) {
  static const char* names[] = {"gemm", "attention", "scan", "elementwise", "norm", "embedding", "recompute",
                                "optimizer", "comm data", "comm fsdp", "comm tensor", "comm sequence",
                                "comm pipeline", "pipeline bubble"};
  return names[static_cast<int>(b)];
}

std::vector<StepProgram> stage_programs(const ModelSpec& m, const Plan& p) {
  std::vector<StepProgram> out;
  for (std::int64_t s = 0; s < p.mesh[Axis::pipeline]; ++s) {
    std::array<std::int64_t, kAxisCount> c{};
    c[static_cast<int>(Axis::pipeline)] = s;
    c[static_cast<int>(Axis::sequence)] = p.mesh[Axis::sequence] - 1;
    out.push_back(lower(m, p, rank_of(p.mesh, c)));
  }
  return out;
}

namespace {

Bucket comm_bucket(Axis a) { return static_cast<Bucket>(static_cast<int>(Bucket::comm_data) + static_cast<int>(a)); }

Bucket compute_bucket(const Step& s) {
  if (s.phase == Phase::recompute) return Bucket::recompute;
  switch (s.cls) {
    case OpClass::gemm: return Bucket::gemm;
    case OpClass::attention: return Bucket::attention;
    case OpClass::scan: return Bucket::scan;
    case OpClass::norm: return Bucket::norm;
    case OpClass::embedding: return Bucket::embedding;
    case OpClass::optimizer: return Bucket::optimizer;
    default: return Bucket::elementwise;
  }
}

// One pass (forward or backward of a micro-batch): seconds per step, the pass time with
// overlappable communication hidden behind its compute, and the per-bucket split.
struct Pass {
  double seconds = 0;
  double compute = 0;
  std::array<double, kBucketCount> buckets{};
};

Pass price_pass(const std::vector<Step>& steps, const ClusterSpec& cl, const Network& net, DType dtype,
                std::vector<double>* per_step) {
  Pass p;
  double overlappable = 0;
  std::array<double, kAxisCount> hidden_by_axis{};
  for (const auto& s : steps) {
    double t = 0;
    if (s.kind == StepKind::compute) {
      t = compute_seconds(s, cl.chip, dtype);
      p.compute += t;
      p.buckets[static_cast<int>(compute_bucket(s))] += t;
    } else {
      t = comm_seconds(s, net.axis(s.axis));
      if (s.overlappable) {
        overlappable += t;
        hidden_by_axis[static_cast<int>(s.axis)] += t;
      } else {
        p.buckets[static_cast<int>(comm_bucket(s.axis))] += t;
      }
    }
    if (per_step) per_step->push_back(t);
  }
  const double exposed = std::max(0.0, overlappable - p.compute);
  if (overlappable > 0)  // attribute the exposed part to axes in proportion
    for (int a = 0; a < kAxisCount; ++a)
      p.buckets[static_cast<int>(comm_bucket(static_cast<Axis>(a)))] += exposed * hidden_by_axis[a] / overlappable;
  for (double b : p.buckets) p.seconds += b;
  return p;
}

MemoryBreakdown memory_of(const StepProgram& prog, const Plan& p, const ChipSpec& chip) {
  MemoryBreakdown m;
  const double fs = static_cast<double>(p.mesh[Axis::fsdp]);
  const int zero = p.mesh[Axis::fsdp] > 1 ? p.zero_stage : 0;
  const double n = static_cast<double>(prog.local_params);
  m.params_bytes = n * bytes_of(p.param_dtype) / (zero >= 3 ? fs : 1);
  m.grads_bytes = n * 4 / (zero >= 2 ? fs : 1);  // fp32 gradient accumulation
  // AdamW: two fp32 moments, plus an fp32 master copy when parameters are bf16 (DESIGN §5).
  m.optimizer_bytes = n * (8 + (p.param_dtype == DType::bf16 ? 4 : 0)) / (zero >= 1 ? fs : 1);
  m.activations_bytes = prog.saved_activation_bytes * static_cast<double>(prog.in_flight_micro_batches);
  for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
    for (const auto& s : *list) {
      m.state_bytes = std::max(m.state_bytes, s.state_bytes);
      if (s.kind != StepKind::compute) m.buffers_bytes = std::max(m.buffers_bytes, s.comm_bytes);
    }
  m.total_bytes = m.params_bytes + m.grads_bytes + m.optimizer_bytes + m.activations_bytes + m.state_bytes + m.buffers_bytes;
  m.capacity_bytes = chip.memory_bytes;
  m.fits = m.total_bytes <= m.capacity_bytes;
  return m;
}

}  // namespace

Estimate simulate(const std::vector<StepProgram>& stages, const Plan& p, const ClusterSpec& cl, const Network& net) {
  Estimate e;
  const DType dtype = p.act_dtype;
  const double m = static_cast<double>(p.micro_batches());
  const double pp = static_cast<double>(p.mesh[Axis::pipeline]);
  // The slowest stage sets the pace.
  std::vector<Pass> fwd, bwd;
  for (std::size_t s = 0; s < stages.size(); ++s) {
    fwd.push_back(price_pass(stages[s].forward, cl, net, dtype, nullptr));
    bwd.push_back(price_pass(stages[s].backward, cl, net, dtype, nullptr));
    const double t = fwd.back().seconds + bwd.back().seconds;
    if (t > e.microbatch_seconds) { e.microbatch_seconds = t; e.critical_stage = static_cast<std::int64_t>(s); }
  }
  const auto crit = static_cast<std::size_t>(e.critical_stage);
  const StepProgram& prog = stages[crit];
  fwd[crit] = price_pass(prog.forward, cl, net, dtype, &e.forward_seconds);
  bwd[crit] = price_pass(prog.backward, cl, net, dtype, &e.backward_seconds);
  for (int b = 0; b < kBucketCount; ++b) e.seconds[b] = m * (fwd[crit].buckets[b] + bwd[crit].buckets[b]);
  e.seconds[static_cast<int>(Bucket::bubble)] = (pp - 1) * e.microbatch_seconds;

  // Once per step: gradient sync (hidden behind the last backward pass if overlapped), optimizer.
  double hide = bwd[crit].compute;
  for (const auto& s : prog.step_end) {
    double t = 0;
    if (s.kind == StepKind::compute) {
      t = compute_seconds(s, cl.chip, dtype);
      e.seconds[static_cast<int>(compute_bucket(s))] += t;
    } else {
      t = comm_seconds(s, net.axis(s.axis));
      double exposed = t;
      if (s.overlappable && p.overlap) {
        exposed = std::max(0.0, t - hide);
        hide = std::max(0.0, hide - t);
      }
      e.seconds[static_cast<int>(comm_bucket(s.axis))] += exposed;
    }
    e.step_end_seconds.push_back(t);
  }
  for (double b : e.seconds) e.step_seconds += b;
  e.tokens_per_s = prog.tokens_per_step / e.step_seconds;
  const double peak = matrix_peak_flops_per_s(cl.chip, dtype) * static_cast<double>(p.mesh.devices());
  e.mfu = prog.model_flops_per_step / (e.step_seconds * peak);
  // Memory: the stage that needs the most.
  for (const auto& s : stages) {
    const auto mem = memory_of(s, p, cl.chip);
    if (mem.total_bytes > e.memory.total_bytes) e.memory = mem;
  }
  int top = 0;
  for (int b = 1; b < kBucketCount; ++b) if (e.seconds[b] > e.seconds[top]) top = b;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s %.0f %%", to_string(static_cast<Bucket>(top)), 100 * e.seconds[top] / e.step_seconds);
  e.bottleneck = buf;
  return e;
}

Estimate simulate(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster) {
  check_plan(m, p, cluster.devices());
  const Network net(cluster, p.mesh);
  return simulate(stage_programs(m, p), p, cluster, net);
}

}  // namespace scanshard
