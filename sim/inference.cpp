// sim/inference.cpp — see inference.hpp.
#include "sim/inference.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

namespace scanshard {

double InferenceEstimate::tokens_per_s(Workload w) const {
  switch (w) {
    case Workload::prefill: return prefill_tokens_per_s;
    case Workload::decode: return decode_tokens_per_s;
    case Workload::generate: return generate_tokens_per_s;
  }
  return 0;
}

std::vector<std::int64_t> decode_positions(std::int64_t prompt_len, std::int64_t sample_len, std::int64_t points) {
  const std::int64_t k = std::max<std::int64_t>(1, std::min(sample_len, points));
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < k; ++i)
    out.push_back(prompt_len + static_cast<std::int64_t>((static_cast<double>(i) + 0.5) * static_cast<double>(sample_len) / static_cast<double>(k)));
  return out;
}

namespace {

std::array<double, kBucketCount> pass_buckets(const InferencePass& pass, const ClusterSpec& cl, const Network& net, DType dtype) {
  std::vector<TimedSteps> lists;
  pass.for_each_list([&](const std::vector<Step>& list, std::int64_t times) { lists.push_back({&list, static_cast<double>(times)}); });
  return pass_breakdown(lists, cl, net, dtype);
}

double total(const std::array<double, kBucketCount>& b) {
  double s = 0;
  for (double x : b) s += x;
  return s;
}

// The stages' passes combined: prefill as a flow shop of m micro-batches (flow = true), decode as
// the busy cycle max(Σ t_s, m·max t_s). The extra over the slowest stage's m passes is the bubble.
std::array<double, kBucketCount> pipeline_seconds(const std::vector<std::array<double, kBucketCount>>& stages, double m, bool flow) {
  std::size_t slowest = 0;
  double sum = 0;
  for (std::size_t s = 0; s < stages.size(); ++s) {
    sum += total(stages[s]);
    if (total(stages[s]) > total(stages[slowest])) slowest = s;
  }
  const double t_max = total(stages[slowest]);
  std::array<double, kBucketCount> out{};
  for (int b = 0; b < kBucketCount; ++b) out[b] = m * stages[slowest][b];
  const double wall = flow ? sum + (m - 1) * t_max : std::max(sum, m * t_max);
  out[static_cast<int>(Bucket::bubble)] += std::max(0.0, wall - m * t_max);
  return out;
}

}  // namespace

bool has_back_to_back_latency(const ClusterSpec& c) {
  const TopologySpec& t = c.topology;
  return t.kind == TopologyKind::islands && t.island_latency_back_to_back_seconds > 0 &&
         t.island_latency_back_to_back_seconds != t.island_latency_seconds;
}

ClusterSpec decode_cluster(const ClusterSpec& c) {
  ClusterSpec d = c;
  if (has_back_to_back_latency(c)) d.topology.island_latency_seconds = c.topology.island_latency_back_to_back_seconds;
  return d;
}

InferenceEstimate inference_memory_estimate(const ModelSpec& m, const Plan& p, const ServingShape& s, const ChipSpec& chip) {
  InferenceEstimate e;
  for (std::int64_t st = 0; st < p.mesh[Axis::pipeline]; ++st) {
    const InferenceMemory mem = inference_memory(m, p, st, s);
    if (st == 0 || mem.total_bytes() > e.memory.total_bytes()) {
      e.memory = mem;
      e.memory_stage = st;
    }
  }
  e.capacity_bytes = chip.memory_bytes;
  e.limit_bytes = kMaxMemoryFraction * chip.memory_bytes;
  e.fits = e.memory.total_bytes() <= e.limit_bytes;
  return e;
}

std::int64_t max_batch_that_fits(const ModelSpec& m, const Plan& p, const ServingShape& s, const ChipSpec& chip) {
  const std::int64_t unit = p.mesh[Axis::pipeline];  // the batch must split into p micro-batches
  auto fits = [&](std::int64_t units) {
    ServingShape x = s;
    x.batch = units * unit;
    return inference_memory_estimate(m, p, x, chip).fits;
  };
  // memory grows with the batch (weights fixed; caches, states, working sets per sequence):
  // double until it does not fit, then bisect
  if (!fits(1)) return 0;
  std::int64_t lo = 1, hi = 2;
  while (fits(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > (std::int64_t{1} << 40)) return lo * unit;
  }
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo * unit;
}

InferenceEstimate simulate_inference(const ModelSpec& m, const Plan& p, const ClusterSpec& cl, const Network& net,
                                     const ServingShape& s, std::int64_t points) {
  InferenceEstimate e = inference_memory_estimate(m, p, s, cl.chip);
  const std::int64_t pp = p.mesh[Axis::pipeline], b = serving_micro_batch(p, s.batch), bp = prefill_pass_batch(s.batch, s.prompt_len);
  const double micro = static_cast<double>(s.batch / b), replicas = static_cast<double>(p.replicas());
  const DType dtype = p.act_dtype;
  std::vector<std::array<double, kBucketCount>> stages;
  for (std::int64_t st = 0; st < pp; ++st) stages.push_back(pass_buckets(lower_prefill(m, p, st, bp, s.prompt_len), cl, net, dtype));
  e.prefill_seconds = pipeline_seconds(stages, static_cast<double>(s.batch / bp), true);
  if (const std::int64_t rest = s.batch % bp; rest > 0) {  // the last, smaller pass leaves the slowest stage last
    stages.clear();
    for (std::int64_t st = 0; st < pp; ++st) stages.push_back(pass_buckets(lower_prefill(m, p, st, rest, s.prompt_len), cl, net, dtype));
    const auto slowest = *std::max_element(stages.begin(), stages.end(), [](const auto& a, const auto& b) { return total(a) < total(b); });
    for (int k = 0; k < kBucketCount; ++k) e.prefill_seconds[k] += slowest[k];
  }
  // the decode step's collectives, back to back (decode_cluster)
  std::optional<ClusterSpec> dcl;
  std::optional<Network> dnet;
  if (has_back_to_back_latency(cl)) {
    dcl.emplace(decode_cluster(cl));
    dnet.emplace(Topology(*dcl), *dcl, p.mesh, p.placement);
  }
  const ClusterSpec& decode_cl = dcl ? *dcl : cl;
  const Network& decode_net = dnet ? *dnet : net;
  const auto positions = decode_positions(s.prompt_len, s.sample_len, points);
  for (const std::int64_t n : positions) {
    stages.clear();
    for (std::int64_t st = 0; st < pp; ++st) stages.push_back(pass_buckets(lower_decode(m, p, st, b, n), decode_cl, decode_net, dtype));
    const auto round = pipeline_seconds(stages, micro, false);
    for (int k = 0; k < kBucketCount; ++k) e.decode_seconds[k] += round[k] / static_cast<double>(positions.size());
  }
  e.ttft_seconds = total(e.prefill_seconds);
  e.per_token_seconds = total(e.decode_seconds);
  e.generate_seconds = e.ttft_seconds + static_cast<double>(s.sample_len) * e.per_token_seconds;
  const double B = static_cast<double>(s.batch) * replicas;
  e.prefill_tokens_per_s = B * static_cast<double>(s.prompt_len) / e.ttft_seconds;
  e.decode_tokens_per_s = B / e.per_token_seconds;
  e.generate_tokens_per_s = B * static_cast<double>(s.sample_len) / e.generate_seconds;
  return e;
}

InferenceEstimate simulate_inference(const ModelSpec& m, const Plan& p, const ClusterSpec& cl, const ServingShape& s) {
  const Network net(Topology(cl), cl, p.mesh, p.placement);
  return simulate_inference(m, p, cl, net, s);
}

}  // namespace scanshard
