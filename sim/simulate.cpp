// sim/simulate.cpp — see simulate.hpp.
#include "sim/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "sim/cost.hpp"

namespace scanshard {

const char* to_string(Bucket b) {
  static const char* names[] = {"gemm", "attention", "scan", "elementwise", "norm", "embedding", "recompute",
                                "optimizer", "comm data", "comm fsdp", "comm tensor", "comm sequence",
                                "comm pipeline", "pipeline bubble", "sync wait"};
  return names[static_cast<int>(b)];
}

std::vector<StageSummary> stage_summaries(const ModelSpec& m, const Plan& p, LowerCache* cache) {
  std::vector<StageSummary> out;
  for (std::int64_t s = 0; s < p.mesh[Axis::pipeline]; ++s)
    out.push_back(lower_stage(m, p, s, p.mesh[Axis::sequence] - 1, cache));
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

// One pass (forward or backward of a micro-batch), accumulated group by group: compute and
// exposed communication per bucket; overlappable communication hides behind the pass's compute.
struct Pass {
  double compute = 0;
  double overlappable = 0;
  std::array<double, kAxisCount> hidden_by_axis{};
  std::array<double, kBucketCount> buckets{};

  void add(const std::vector<Step>& steps, double times, const ClusterSpec& cl, const Network& net, DType dtype) {
    for (const auto& s : steps) {
      if (s.kind == StepKind::compute) {
        const double t = times * compute_seconds(s, cl.chip, dtype);
        compute += t;
        buckets[static_cast<int>(compute_bucket(s))] += t;
      } else {
        const double t = times * comm_seconds(s, net.axis(s.axis));
        if (s.overlappable) {
          overlappable += t;
          hidden_by_axis[static_cast<int>(s.axis)] += t;
        } else {
          buckets[static_cast<int>(comm_bucket(s.axis))] += t;
        }
      }
    }
  }
  // A group whose compute was priced before: add it, then price only its communication.
  void add_cached(const GroupCompute& g, double times, const Network& net) {
    compute += times * g.compute;
    for (int b = 0; b < kBucketCount; ++b) buckets[b] += times * g.buckets[b];
    for (const Step* s : g.comm) {
      const double t = times * comm_seconds(*s, net.axis(s->axis));
      if (s->overlappable) {
        overlappable += t;
        hidden_by_axis[static_cast<int>(s->axis)] += t;
      } else {
        buckets[static_cast<int>(comm_bucket(s->axis))] += t;
      }
    }
  }
  // Charges what compute could not hide, and the compute's slowdown while the hidden communication
  // runs beside it (ChipSpec::overlap_compute_slowdown), to the axes in proportion.
  double finish(double slowdown) {
    const double exposed = overlapped_seconds(compute, overlappable, slowdown) - compute;
    if (overlappable > 0)
      for (int a = 0; a < kAxisCount; ++a)
        buckets[static_cast<int>(comm_bucket(static_cast<Axis>(a)))] += exposed * hidden_by_axis[a] / overlappable;
    double total = 0;
    for (double b : buckets) total += b;
    return total;
  }
};

const GroupCompute& group_compute(PriceCache& cache, const LayerLowering& l, bool forward, const ClusterSpec& cl, DType dtype) {
  auto [it, fresh] = cache.groups.try_emplace(&l);
  if (fresh) {
    for (int dir = 0; dir < 2; ++dir) {
      GroupCompute& g = it->second[static_cast<std::size_t>(dir)];
      for (const auto& s : dir ? l.forward : l.backward) {
        if (s.kind != StepKind::compute) { g.comm.push_back(&s); continue; }
        const double t = compute_seconds(s, cl.chip, dtype);
        g.compute += t;
        g.buckets[static_cast<int>(compute_bucket(s))] += t;
      }
    }
  }
  return it->second[forward ? 1 : 0];
}

Pass price_pass(const StageSummary& st, bool forward, const ClusterSpec& cl, const Network& net, DType dtype, PriceCache* cache) {
  Pass p;
  p.add(forward ? st.pre_forward : st.pre_backward, 1, cl, net, dtype);
  for (const auto& g : st.groups) {
    if (cache) p.add_cached(group_compute(*cache, *g.lowered, forward, cl, dtype), static_cast<double>(g.count), net);
    else p.add(forward ? g.lowered->forward : g.lowered->backward, static_cast<double>(g.count), cl, net, dtype);
  }
  p.add(forward ? st.post_forward : st.post_backward, 1, cl, net, dtype);
  return p;
}

}  // namespace

StateBytes state_bytes(double params, DType param_dtype, int zero_stage, double fsdp) {
  const int zero = fsdp > 1 ? zero_stage : 0;
  StateBytes b;
  b.params = params * bytes_of(param_dtype) / (zero >= 3 ? fsdp : 1);
  b.grads = params * 4 / (zero >= 2 ? fsdp : 1);
  b.optimizer = params * (8 + (param_dtype == DType::bf16 ? 4 : 0)) / (zero >= 1 ? fsdp : 1);
  return b;
}

namespace {

MemoryBreakdown memory_of(const StageSummary& prog, const Plan& p, const ChipSpec& chip) {
  MemoryBreakdown m;
  const StateBytes states = state_bytes(static_cast<double>(prog.local_params), p.param_dtype, p.zero_stage,
                                        static_cast<double>(p.mesh[Axis::fsdp]));
  m.params_bytes = states.params;
  m.grads_bytes = states.grads;
  m.optimizer_bytes = states.optimizer;
  // In-flight micro-batches follow the plan's schedule (GPipe: all; 1F1B: p − stage; interleaved:
  // lower.hpp).
  m.activations_bytes = prog.saved_activation_bytes * in_flight_micro_batches(p, prog.stage);
  m.state_bytes = prog.max_state_bytes;
  m.buffers_bytes = prog.max_comm_bytes;
  m.total_bytes = m.params_bytes + m.grads_bytes + m.optimizer_bytes + m.activations_bytes + m.state_bytes + m.buffers_bytes;
  m.capacity_bytes = chip.memory_bytes;
  m.limit_bytes = kMaxMemoryFraction * chip.memory_bytes;
  m.fits = m.total_bytes <= m.limit_bytes;
  return m;
}

}  // namespace

PricedPasses price_passes(const std::vector<StageSummary>& stages, const ClusterSpec& cl, const Network& net, DType dtype,
                          PriceCache* cache) {
  PricedPasses out;
  for (std::size_t s = 0; s < stages.size(); ++s) {  // the slowest stage sets the pace
    Pass f = price_pass(stages[s], true, cl, net, dtype, cache), b = price_pass(stages[s], false, cl, net, dtype, cache);
    const double t = f.finish(cl.chip.overlap_compute_slowdown) + b.finish(cl.chip.overlap_compute_slowdown);
    out.stages_seconds += t;
    if (t > out.microbatch_seconds || s == 0) {
      out.microbatch_seconds = t;
      out.critical_stage = static_cast<std::int64_t>(s);
      out.backward_compute_seconds = b.compute;
      for (int k = 0; k < kBucketCount; ++k) out.per_microbatch[k] = f.buckets[k] + b.buckets[k];
    }
  }
  return out;
}

Estimate finish_estimate(const PricedPasses& passes, const std::vector<StageSummary>& stages, const Plan& p,
                         const ClusterSpec& cl, const Network& net) {
  Estimate e;
  const DType dtype = p.act_dtype;
  const double m = static_cast<double>(p.micro_batches());
  const double pp = static_cast<double>(p.mesh[Axis::pipeline]);
  e.microbatch_seconds = passes.microbatch_seconds;
  e.critical_stage = passes.critical_stage;
  const StageSummary& prog = stages[static_cast<std::size_t>(e.critical_stage)];
  for (int b = 0; b < kBucketCount; ++b) e.seconds[b] = m * passes.per_microbatch[b];
  // The bubble: one micro-batch's pass through every stage but the slowest (the first micro-batch
  // reaches the slowest stage, the last one leaves it), 1/v of it with v interleaved chunks. With
  // identical micro-batches this is the makespan of a flow shop, Σ_s t_s + (m − 1)·max_s t_s; for
  // equal stages it is the familiar (p − 1)·t (Narayanan et al. 2021 §2.2.2: bubble fraction
  // (p − 1)/(v·m)). Priced as (p − 1) slots of the slowest stage, it over-priced a 2-stage plan
  // whose last stage also runs the head and loss by 12-19 % (validate P37-P39).
  const double v = pp > 1 ? static_cast<double>(std::max<std::int64_t>(1, p.virtual_stages)) : 1.0;
  e.seconds[static_cast<int>(Bucket::bubble)] = std::max(0.0, passes.stages_seconds - passes.microbatch_seconds) / v;

  // Once per step: gradient sync (hidden behind the last backward pass if overlapped, which it
  // slows as a pass's hidden communication does), optimizer.
  std::array<double, kAxisCount> hidden_by_axis{};
  double hidden = 0;
  for (const auto& s : prog.step_end) {
    if (s.kind == StepKind::compute) {
      e.seconds[static_cast<int>(compute_bucket(s))] += compute_seconds(s, cl.chip, dtype);
      continue;
    }
    const double t = comm_seconds(s, net.axis(s.axis));
    if (s.overlappable && p.overlap) {
      hidden += t;
      hidden_by_axis[static_cast<int>(s.axis)] += t;
    } else {
      e.seconds[static_cast<int>(comm_bucket(s.axis))] += t;
    }
  }
  if (hidden > 0) {
    const double hide = passes.backward_compute_seconds;
    const double exposed = overlapped_seconds(hide, hidden, cl.chip.overlap_compute_slowdown) - hide;
    for (int a = 0; a < kAxisCount; ++a)
      e.seconds[static_cast<int>(comm_bucket(static_cast<Axis>(a)))] += exposed * hidden_by_axis[a] / hidden;
  }
  // Waiting for the slowest rank: every compute stretch ends at some synchronisation (a collective,
  // a pipeline transfer or the gradient sync), so the step waits in all for its compute.
  if (p.mesh.devices() > 1) {
    double compute = 0;
    for (int b = 0; b < kBucketCount; ++b) compute += is_compute(static_cast<Bucket>(b)) ? e.seconds[b] : 0.0;
    e.seconds[static_cast<int>(Bucket::sync_wait)] = sync_wait_seconds(compute, cl.chip.compute_jitter, p.mesh.devices());
  }
  for (double b : e.seconds) e.step_seconds += b;
  e.tokens_per_s = prog.tokens_per_step / e.step_seconds;
  const double peak = matrix_peak_flops_per_s(cl.chip, dtype) * static_cast<double>(p.mesh.devices());
  e.mfu = prog.model_flops_per_step / (e.step_seconds * peak);
  e.memory = stage_memory(stages, p, cl.chip);
  return e;
}

MemoryBreakdown stage_memory(const std::vector<StageSummary>& stages, const Plan& p, const ChipSpec& chip) {
  MemoryBreakdown most;
  for (const auto& s : stages) {
    const auto mem = memory_of(s, p, chip);
    if (mem.total_bytes > most.total_bytes) most = mem;
  }
  return most;
}

std::string bottleneck_text(const std::array<double, kBucketCount>& seconds) {
  int top = 0;
  double total = 0;
  for (int b = 0; b < kBucketCount; ++b) {
    total += seconds[b];
    if (seconds[b] > seconds[top]) top = b;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s %.0f %%", to_string(static_cast<Bucket>(top)), 100 * seconds[top] / total);
  return buf;
}

Estimate simulate(const std::vector<StageSummary>& stages, const Plan& p, const ClusterSpec& cl, const Network& net) {
  Estimate e = finish_estimate(price_passes(stages, cl, net, p.act_dtype), stages, p, cl, net);
  // The files' ranges (program/cluster.cpp) keep every price finite; if one is not, no plan may
  // be ranked or printed with it.
  if (!std::isfinite(e.step_seconds) || !(e.step_seconds > 0))
    throw ConfigError(cl.origin, 0, 0, "", "the cluster's numbers give step time " + format_number(e.step_seconds) +
                                               " for mesh " + p.mesh.describe() + ": a rate, size or latency is out of any real range");
  e.bottleneck = bottleneck_text(e.seconds);
  return e;
}

double pass_seconds(const std::vector<Step>& steps, const ClusterSpec& cl, const Network& net, DType dtype) {
  Pass p;
  p.add(steps, 1, cl, net, dtype);
  return p.finish(cl.chip.overlap_compute_slowdown);
}

std::array<double, kBucketCount> pass_breakdown(const std::vector<TimedSteps>& lists, const ClusterSpec& cl, const Network& net,
                                                DType dtype) {
  Pass p;
  for (const auto& l : lists) p.add(*l.steps, l.times, cl, net, dtype);
  p.finish(cl.chip.overlap_compute_slowdown);
  return p.buckets;
}

std::vector<double> step_seconds(const std::vector<Step>& steps, const ClusterSpec& cl, const Network& net, DType dtype) {
  std::vector<double> out;
  out.reserve(steps.size());
  for (const auto& s : steps)
    out.push_back(s.kind == StepKind::compute ? compute_seconds(s, cl.chip, dtype) : comm_seconds(s, net.axis(s.axis)));
  return out;
}

Estimate simulate(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster) {
  check_plan(m, p, cluster.devices());
  const Network net(Topology(cluster), cluster, p.mesh, p.placement);
  return simulate(stage_summaries(m, p), p, cluster, net);
}

}  // namespace scanshard
