// sim/simulate.cpp — see simulate.hpp.
#include "sim/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>

#include "sim/cost.hpp"
#include "sim/schedule.hpp"

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

  void add(std::span<const Step> steps, double times, const ClusterSpec& cl, const Network& net, DType dtype) {
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

// The steps of list `all` that belong to model chunk j ([at[j], at[j + 1]); all of them when the
// stage has one chunk).
std::span<const Step> chunk_part(const std::vector<Step>& all, const std::vector<std::size_t>& at, std::size_t j) {
  if (at.size() < j + 2) return all;
  return std::span<const Step>(all).subspan(at[j], at[j + 1] - at[j]);
}

// One micro-batch's forward or backward pass through model chunk j of the stage: its receive or
// embedding, its layers, its send or head; overlappable communication hides behind this pass only.
Pass price_pass(const StageSummary& st, std::size_t j, bool forward, const ClusterSpec& cl, const Network& net, DType dtype,
                PriceCache* cache) {
  Pass p;
  const auto& at = st.chunk_at;
  p.add(forward ? chunk_part(st.pre_forward, at.pre_forward, j) : chunk_part(st.pre_backward, at.pre_backward, j), 1, cl, net, dtype);
  for (const auto& g : st.groups) {
    const auto count = static_cast<double>(g.chunk_count.size() > j && st.chunks > 1 ? g.chunk_count[j] : g.count);
    if (count == 0) continue;
    if (cache) p.add_cached(group_compute(*cache, *g.lowered, forward, cl, dtype), count, net);
    else p.add(forward ? g.lowered->forward : g.lowered->backward, count, cl, net, dtype);
  }
  p.add(forward ? chunk_part(st.post_forward, at.post_forward, j) : chunk_part(st.post_backward, at.post_backward, j), 1, cl, net, dtype);
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
  // gradient_sync: last_microbatch holds ZeRO-2/3's gradient (and ZeRO-3's parameters) whole
  // through the step: the stage that holds during it (lower.hpp zero_stage_during_step)
  const StateBytes states = state_bytes(static_cast<double>(prog.local_params), p.param_dtype, zero_stage_during_step(p),
                                        static_cast<double>(p.mesh[Axis::fsdp]));
  m.params_bytes = states.params;
  m.grads_bytes = states.grads;
  m.optimizer_bytes = states.optimizer;
  // The activations the plan's schedule holds at once (GPipe: all micro-batches; 1F1B: p − stage;
  // interleaved: Megatron-LM's warm-up, chunk by chunk — lower.hpp peak_held_bytes).
  const std::int64_t pp = p.mesh[Axis::pipeline];
  if (pp > 1 && prog.chunk_saved_bytes.size() == static_cast<std::size_t>(std::max<std::int64_t>(1, prog.chunks)))
    m.activations_bytes = peak_held_bytes(stage_orders(p.schedule, p.micro_batches(), pp, prog.chunks)[static_cast<std::size_t>(prog.stage)],
                                          prog.chunk_saved_bytes);
  else
    m.activations_bytes = prog.saved_activation_bytes * in_flight_micro_batches(p, prog.stage);
  m.state_bytes = prog.max_state_bytes;
  // The step end's collectives run after the last backward pass, or overlap it: beside one
  // micro-batch's activations and scan state at most (whether or not `overlap` is on: the planner
  // prices both overlaps on one memory figure). Their buffer counts only where it exceeds the
  // passes' peak (StageSummary::step_end_comm_bytes).
  const double end_peak = prog.step_end_comm_bytes + prog.saved_activation_bytes + m.state_bytes;
  m.buffers_bytes = std::max(prog.max_comm_bytes, end_peak - m.activations_bytes - m.state_bytes);
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
    const auto chunks = static_cast<std::size_t>(std::max<std::int64_t>(1, stages[s].chunks));
    std::vector<ChunkSeconds>& per_chunk = out.chunks.emplace_back(chunks);
    double t = 0, backward_compute = 0;
    std::array<double, kBucketCount> buckets{};
    for (std::size_t j = 0; j < chunks; ++j) {
      Pass f = price_pass(stages[s], j, true, cl, net, dtype, cache), b = price_pass(stages[s], j, false, cl, net, dtype, cache);
      per_chunk[j] = {f.finish(cl.chip.overlap_compute_slowdown), b.finish(cl.chip.overlap_compute_slowdown), std::min(f.overlappable, f.compute), std::min(b.overlappable, b.compute)};
      t += per_chunk[j].forward + per_chunk[j].backward;
      backward_compute += b.compute;
      for (int k = 0; k < kBucketCount; ++k) buckets[k] += f.buckets[k] + b.buckets[k];
    }
    out.stages_seconds += t;
    if (t > out.microbatch_seconds || s == 0) {
      out.microbatch_seconds = t;
      out.critical_stage = static_cast<std::int64_t>(s);
      out.backward_compute_seconds = backward_compute;
      out.per_microbatch = buckets;
    }
  }
  return out;
}

double pipelined_seconds(const PricedPasses& passes, const Plan& p) {
  const std::int64_t m = p.micro_batches();
  if (passes.chunks.size() <= 1) return static_cast<double>(m) * passes.microbatch_seconds;  // one stage never waits
  return pipeline_makespan(p.schedule, m, passes.chunks);
}

std::vector<StepEndCost> step_end_costs(const StageSummary& prog, const Plan& p, const ClusterSpec& cl, const Network& net,
                                        double hide_seconds) {
  std::vector<StepEndCost> out;
  double hide = hide_seconds;
  for (const auto& s : prog.step_end) {
    if (s.kind == StepKind::compute) {
      out.push_back({&s, compute_bucket(s), compute_seconds(s, cl.chip, p.act_dtype), 0});
      continue;
    }
    const double t = comm_seconds(s, net.axis(s.axis));
    double exposed = t;
    if (s.overlappable && p.overlap) {
      // While it runs, the compute beside it slows by (1 + slowdown) (sim/cost.hpp
      // overlapped_seconds); the compute left to hide the next one is what did not run beside it.
      const double slowdown = cl.chip.overlap_compute_slowdown;
      exposed = overlapped_seconds(hide, t, slowdown) - hide;
      hide = std::max(0.0, hide - std::min(t, hide * (1 + slowdown)) / (1 + slowdown));
    }
    out.push_back({&s, comm_bucket(s.axis), exposed, t - exposed});
  }
  return out;
}

Estimate finish_estimate(const PricedPasses& passes, const std::vector<StageSummary>& stages, const Plan& p,
                         const ClusterSpec& cl, const Network& net) {
  Estimate e;
  const DType dtype = p.act_dtype;
  const double m = static_cast<double>(p.micro_batches());
  e.microbatch_seconds = passes.microbatch_seconds;
  e.critical_stage = passes.critical_stage;
  const StageSummary& prog = stages[static_cast<std::size_t>(e.critical_stage)];
  for (int b = 0; b < kBucketCount; ++b) e.seconds[b] = m * passes.per_microbatch[b];
  // The bubble: what the slowest stage idles in the event-level schedule of its passes
  // (sim/schedule.hpp): the pipelined part of the step is that schedule's makespan.
  e.seconds[static_cast<int>(Bucket::bubble)] = std::max(0.0, pipelined_seconds(passes, p) - m * passes.microbatch_seconds);

  // Once per step: gradient sync (hidden behind the last backward pass if overlapped, which it
  // slows as a pass's hidden communication does: step_end_costs), optimizer.
  for (const StepEndCost& c : step_end_costs(prog, p, cl, net, passes.backward_compute_seconds))
    e.seconds[static_cast<int>(c.bucket)] += c.exposed;
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

Network plan_network(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster) {
  check_plan(m, p, cluster.devices());
  return Network(Topology(cluster), cluster, p.mesh, p.placement);
}

Estimate simulate(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster) {
  return simulate(stage_summaries(m, p), p, cluster, plan_network(m, p, cluster));
}

}  // namespace scanshard
