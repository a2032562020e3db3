// planner/search.hpp — finds the fastest legal plan for a model on a cluster (DESIGN §1, §2).
//
// Enumerates every factorisation of the device count into data × fsdp × tensor × sequence ×
// pipeline, × ZeRO stage, micro-batch size, pipeline schedule, remat policy, scan algorithm,
// carry scheme, overlap and placement (which mesh axis sits innermost on the topology); rejects
// illegal plans by the divisibility rules; prunes by a cheap memory lower bound; skips plans whose
// lower bound on step time (compute and layer collectives from cached per-layer records) proves they
// cannot matter; prices the rest with sim/. Returns the top k, the Pareto front of step time vs
// memory per device and, for each family (an axis at a value, a remat policy, a scan algorithm, a
// ZeRO stage), why its best plan lost. Ties go to the plan enumerated first.
// Not for: printing (cli/plan_command.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "sim/simulate.hpp"

namespace scanshard {

struct SearchOptions {
  std::int64_t global_batch = 0;  // sequences per step
  std::int64_t seq_len = 2048;
  std::array<std::int64_t, kAxisCount> fixed{};  // 0 = free; else the axis must have this size
  double max_memory_fraction = kMaxMemoryFraction;  // of device memory a plan may use
  std::size_t top = 10;
  DType dtype = DType::bf16;
  std::function<void(double fraction)> progress;  // fraction done: after a second, then every half second
  // Skip plans whose lower bounds on step time and memory prove they cannot enter the top k, the
  // Pareto front or any family's best (the result is the same). false: price every plan — the
  // exhaustive reference the tests compare against.
  bool prune = true;
};

struct Candidate {
  Plan plan;
  double step_seconds = 0;
  double tokens_per_s = 0;
  double mfu = 0;
  double memory_bytes = 0;
  std::string bottleneck;
  std::array<double, kBucketCount> seconds{};
  double latency_seconds = 0;  // serving: per-token latency (mean over the sample)
  double ttft_seconds = 0;     // serving: time to first token
};

struct SearchResult {
  std::vector<Candidate> top;     // fastest first
  std::vector<Candidate> pareto;  // step time vs memory per device, by memory
  std::vector<std::string> why_not;
  // Set when no mesh passes one legality rule (e.g. seq_len beyond the model's position table):
  // "rule: numbers". The why-not lines then leave out the families that rule explains.
  std::string blocking;
  // considered = illegal + pruned + over_memory + bounded + priced
  std::int64_t considered = 0;    // plans enumerated
  std::int64_t illegal = 0;       // rejected by a divisibility rule (one per mesh)
  std::int64_t pruned = 0;        // rejected by the state-memory lower bound without lowering
  std::int64_t over_memory = 0;   // lowered and over the memory limit
  std::int64_t bounded = 0;       // skipped: the step-time bound shows they cannot matter (prune only)
  std::int64_t priced = 0;        // fully priced, within the memory limit
  double seconds = 0;
};

// Throws ConfigError for impossible constraints (a fixed axis that does not divide the devices).
SearchResult search(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o);

// Every legal plan of the search space on `devices` devices, in enumeration order, unpriced and
// without the memory limit: each mesh that passes plan_violation × ZeRO stage × micro-batch ×
// remat × scan × carry × tensor communication × chunks per stage × schedule × overlap — exactly
// the plans search() lowers and may return (o.global_batch, seq_len, fixed and dtype as there),
// but with the placement left at Plan's default: only the simulator's network reads it.
// For: the planner–runner property test (tests/mpi/test_plan_property.cpp), which runs samples of
// these plans. Throws like search() on impossible constraints.
void for_each_legal_plan(const ModelSpec& m, std::int64_t devices, const SearchOptions& o,
                         const std::function<void(const Plan&)>& fn);

// Serving (DESIGN §8): the data (replicas), tensor and pipeline layout and the batch per replica
// with the highest throughput of `workload` whose per-token latency is within the budget. Every
// legal mesh and placement, batches pp·2^k up to the largest that fits (and that one), each priced
// by simulate_inference. The result's candidates rank by inverse throughput (step_seconds = 1 /
// tokens_per_s); why-not lines per axis size and per batch ("batch=64: ... over the budget").
// In its SearchResult, `bounded` counts the plans over the latency budget, `pruned` none.
struct ServingSearchOptions {
  ServingShape shape;           // prompt and sample lengths (its batch is searched)
  Workload workload = Workload::generate;
  double latency_budget_seconds = 0;
  std::array<std::int64_t, kAxisCount> fixed{};  // 0 = free (fsdp and sequence are 1)
  std::int64_t max_batch = 0;   // 0: as large as memory allows
  std::size_t top = 10;
  DType dtype = DType::bf16;
};
SearchResult search_serving(const ModelSpec& m, const ClusterSpec& c, const ServingSearchOptions& o);

// Plans per axis order tried for placement: innermost axis first.
std::vector<std::array<Axis, kAxisCount>> placements();

}  // namespace scanshard
