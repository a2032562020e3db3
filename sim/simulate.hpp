// sim/simulate.hpp — prices StepPrograms on a cluster: step time with its breakdown, tokens/s,
// MFU and memory per device (DESIGN §5). simulate() is a pure function of its inputs.
//
// Timeline: each pipeline stage runs m micro-batches of (forward + backward) per model chunk in its
// schedule's order; the pipelined part of the step is the makespan of those passes' event-level
// schedule (sim/schedule.hpp), the bubble what the slowest stage idles in it ((p − 1) passes of a
// stage when the stages are equal, 1/v of it with v interleaved model chunks). Overlappable communication (ring-attention K/V, ZeRO-3
// gathers) hides behind the compute of the same pass; data/fsdp gradient reduction hides behind
// the last backward pass when the plan overlaps; tensor-parallel collectives are exposed.
// For: simulate, plan, validate. Not for: deciding plans (planner/).
#pragma once
#include <array>
#include <map>
#include <unordered_map>
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/lower.hpp"
#include "sim/network.hpp"
#include "sim/schedule.hpp"

namespace scanshard {

enum class Bucket : int {
  gemm, attention, scan, elementwise, norm, embedding, recompute, optimizer,
  comm_data, comm_fsdp, comm_tensor, comm_sequence, comm_pipeline, bubble,
  sync_wait  // ranks waiting for the slowest at collectives (ChipSpec::compute_jitter)
};
constexpr int kBucketCount = 15;
const char* to_string(Bucket b);
// Whether a bucket is time the device computes (not communication, bubble or waiting). A switch
// without default: a new bucket must be placed here (-Wswitch).
constexpr bool is_compute(Bucket b) {
  switch (b) {
    case Bucket::gemm: case Bucket::attention: case Bucket::scan: case Bucket::elementwise: case Bucket::norm:
    case Bucket::embedding: case Bucket::recompute: case Bucket::optimizer:
      return true;
    case Bucket::comm_data: case Bucket::comm_fsdp: case Bucket::comm_tensor: case Bucket::comm_sequence:
    case Bucket::comm_pipeline: case Bucket::bubble: case Bucket::sync_wait:
      return false;
  }
  return false;
}

struct MemoryBreakdown {
  double params_bytes = 0;
  double grads_bytes = 0;
  double optimizer_bytes = 0;
  double activations_bytes = 0;
  double state_bytes = 0;    // scan states kept on device
  double buffers_bytes = 0;  // largest communication buffer (and ZeRO-3 gathered layer)
  double total_bytes = 0;
  double capacity_bytes = 0;  // the chip's memory
  double limit_bytes = 0;     // what a plan may use: capacity × kMaxMemoryFraction
  bool fits = true;           // total ≤ limit
};

// Of a device's memory a plan may use, in `plan` and `simulate` alike; the rest is left to the
// runtime (CUDA/XLA context, allocator fragmentation, kernel workspaces). An assumption, not a
// measurement; `plan --max-memory-fraction` changes it for the search.
inline constexpr double kMaxMemoryFraction = 0.9;

// Per-device bytes of parameters, gradients and AdamW state for `params` local parameters under a
// ZeRO stage over `fsdp` ranks: parameters in their dtype (sharded at stage 3), fp32 gradient
// accumulation (stage ≥ 2), two fp32 moments plus an fp32 master copy when parameters are bf16
// (stage ≥ 1) — DESIGN §5. The one place these per-parameter byte counts live.
struct StateBytes {
  double params = 0, grads = 0, optimizer = 0;
  double total() const { return params + grads + optimizer; }
};
[[nodiscard]] StateBytes state_bytes(double params, DType param_dtype, int zero_stage, double fsdp);

struct Estimate {
  double step_seconds = 0;
  double tokens_per_s = 0;
  double mfu = 0;
  double microbatch_seconds = 0;       // slowest stage, one micro-batch forward + backward
  std::array<double, kBucketCount> seconds{};  // adds up to step_seconds
  MemoryBreakdown memory;              // of the stage that needs the most
  std::int64_t critical_stage = 0;
  std::string bottleneck;              // "scan 41 %" (simulate() fills it; finish_estimate() does not)
};

// "scan 41 %": the largest bucket and its share.
std::string bottleneck_text(const std::array<double, kBucketCount>& seconds);

// One summary per pipeline stage (the stage's last sequence shard: it sees the most keys).
std::vector<StageSummary> stage_summaries(const ModelSpec& m, const Plan& p, LowerCache* cache = nullptr);

// Prices the stages; each layer group is priced once and multiplied by its count.
Estimate simulate(const std::vector<StageSummary>& stages, const Plan& p, const ClusterSpec& cluster, const Network& net);

// The two halves of simulate(), for callers that vary only the schedule or overlap of a plan
// (they change activation memory and gradient-sync exposure, not the per-micro-batch passes).
struct PricedPasses {
  double microbatch_seconds = 0;  // of the slowest stage
  double stages_seconds = 0;      // Σ over stages of one micro-batch's forward + backward
  std::vector<std::vector<ChunkSeconds>> chunks;  // per stage and model chunk: one micro-batch's passes (schedule.hpp)
  std::int64_t critical_stage = 0;
  double backward_compute_seconds = 0;
  std::array<double, kBucketCount> per_microbatch{};
};
// Compute time of a layer group depends only on the chip, so a search can price it once and
// re-price only the group's communication per network. Keyed by the shared lowering.
struct GroupCompute {
  double compute = 0;
  std::array<double, kBucketCount> buckets{};
  std::vector<const Step*> comm;
};
struct PriceCache {
  std::unordered_map<const LayerLowering*, std::array<GroupCompute, 2>> groups;  // [backward, forward]
};
PricedPasses price_passes(const std::vector<StageSummary>& stages, const ClusterSpec& cluster, const Network& net, DType dtype,
                          PriceCache* cache = nullptr);
// The once-per-step work (StageSummary::step_end) of a stage, in order: per step the seconds it
// adds to the step (charged to `bucket`) and, for the overlappable gradient sync of a plan that
// overlaps, the seconds of it hidden behind the last backward pass (`hide_seconds` of compute).
struct StepEndCost {
  const Step* step = nullptr;
  Bucket bucket = Bucket::optimizer;
  double exposed = 0, hidden = 0;
};
std::vector<StepEndCost> step_end_costs(const StageSummary& prog, const Plan& p, const ClusterSpec& cluster, const Network& net,
                                        double hide_seconds);
// The pipelined part of a step: the event-level schedule's makespan of the plan's micro-batches
// over the stages' passes (m × the micro-batch time on one stage).
double pipelined_seconds(const PricedPasses& passes, const Plan& p);
Estimate finish_estimate(const PricedPasses& passes, const std::vector<StageSummary>& stages, const Plan& p,
                         const ClusterSpec& cluster, const Network& net);
// Memory per device of the stage that needs the most (Estimate::memory); depends on the plan's
// schedule and ZeRO stage, not on the network or overlap.
MemoryBreakdown stage_memory(const std::vector<StageSummary>& stages, const Plan& p, const ChipSpec& chip);
// One pass of a step list (a layer's forward or backward of one micro-batch) priced as a stage's
// pass prices it: compute, exposed communication, and overlappable communication beyond what the
// pass's compute hides.
double pass_seconds(const std::vector<Step>& steps, const ClusterSpec& cluster, const Network& net, DType dtype);
// A pass of several step lists, each run `times` times, per bucket (what pass_seconds sums):
// compute and exposed communication; overlappable communication beyond what the compute hides.
struct TimedSteps {
  const std::vector<Step>* steps;
  double times = 1;
};
std::array<double, kBucketCount> pass_breakdown(const std::vector<TimedSteps>& lists, const ClusterSpec& cluster,
                                                const Network& net, DType dtype);
// Seconds of every step of an expanded program, in order (for comparing with a measured trace).
std::vector<double> step_seconds(const std::vector<Step>& steps, const ClusterSpec& cluster, const Network& net, DType dtype);
// The plan checked against the cluster (check_plan), and its mesh placed on the cluster's topology.
Network plan_network(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster);
// Convenience: check the plan against the cluster, lower, build the network, price.
Estimate simulate(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster);

}  // namespace scanshard
