// sim/inference.hpp — prices serving a model (DESIGN §8): time to first token (prefill), per-token
// latency of decoding averaged over the sampled tokens, tokens/s, memory per device and the
// largest batch that fits. The passes come from program/inference.hpp; each stage's pass is
// priced as a training pass is (pass_breakdown: roofline per step, exposed collectives).
//
// Pipeline timeline: a replica's B sequences run as m micro-batches (m = p with p > 1 stages,
// serving_micro_batch). Prefill runs in passes of prefill_pass_batch sequences (a token budget),
// a flow shop over the stages: Σ_s t_s + (passes − 1)·max_s t_s (a last, smaller pass adds its
// slowest stage). Decoding keeps every
// stage busy: one token of every sequence takes max(Σ_s t_s, m·max_s t_s) — the stages' cycle.
// For: simulate --workload, plan --workload. Not for: the lowering (program/inference.hpp).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "sim/network.hpp"
#include "sim/simulate.hpp"

namespace scanshard {

struct InferenceEstimate {
  double ttft_seconds = 0;         // prefill of a replica's batch (its first sampled token)
  double per_token_seconds = 0;    // one decode round (a token of every sequence), mean over the sample
  double generate_seconds = 0;     // ttft + S × per_token
  double prefill_tokens_per_s = 0;  // B·P·replicas / ttft
  double decode_tokens_per_s = 0;   // B·replicas / per_token
  double generate_tokens_per_s = 0; // B·S·replicas / generate_seconds (sampled tokens only)
  std::array<double, kBucketCount> prefill_seconds{};  // adds up to ttft_seconds
  std::array<double, kBucketCount> decode_seconds{};   // adds up to per_token_seconds
  InferenceMemory memory;          // the stage that needs the most
  std::int64_t memory_stage = 0;
  double capacity_bytes = 0, limit_bytes = 0;
  bool fits = true;
  // The headline rate of a workload: prefill tokens/s, decode tokens/s, or generate tokens/s.
  double tokens_per_s(Workload w) const;
};

// Decode positions priced for the mean over a sample of S tokens from position P: the midpoints
// of min(S, points) equal slices of [P, P + S) (exact when S ≤ points; the decode time is
// piecewise linear in n, so a few dozen points suffice).
[[nodiscard]] std::vector<std::int64_t> decode_positions(std::int64_t prompt_len, std::int64_t sample_len, std::int64_t points);
inline constexpr std::int64_t kDecodePoints = 32;

// Memory of the stage that needs the most, against the chip's limit (kMaxMemoryFraction).
InferenceEstimate inference_memory_estimate(const ModelSpec& m, const Plan& p, const ServingShape& s, const ChipSpec& chip);
// The largest batch per replica (a multiple of p) whose memory fits, 0 if none; memory grows with
// the batch (weights fixed; caches, states and working sets per sequence).
[[nodiscard]] std::int64_t max_batch_that_fits(const ModelSpec& m, const Plan& p, const ServingShape& s, const ChipSpec& chip);

// The cluster as a decode step's collectives see it: the island latency of collectives that follow
// one another a few µs apart (TopologySpec::island_latency_back_to_back_seconds, when the cluster
// has it), not a training step's, which meet after a stretch of compute. A decode step has no
// such stretch: between two all-reduces of a layer run one to four rows of a few kernels, µs in
// all, so the MPI engine and its buffers stay hot. Prefill is priced with the cluster as it is
// (a training forward's pattern).
[[nodiscard]] ClusterSpec decode_cluster(const ClusterSpec& c);
[[nodiscard]] bool has_back_to_back_latency(const ClusterSpec& c);

// Prices prefill and decode of `s` under the serving plan (legal: serving_violations empty).
// `net`: the cluster's network for the plan's mesh (prefill); decode is priced on decode_cluster's.
InferenceEstimate simulate_inference(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster, const Network& net,
                                     const ServingShape& s, std::int64_t points = kDecodePoints);
InferenceEstimate simulate_inference(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster, const ServingShape& s);

}  // namespace scanshard
