// reports/sweep.hpp — a sequence-length sweep at fixed tokens per batch (the Griffin paper's
// Figure 3 setup): the plan at each length (program/plan.hpp at_seq_len: global batch = tokens / T,
// the micro-batch the largest divisor of the per-replica batch not above the base's), checked on
// the cluster and priced by sim/.
// For: `simulate --sweep` and the HTML report's sweep charts. Not for: printing or charts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "sim/simulate.hpp"

namespace scanshard {

struct SweepPoint {
  std::int64_t seq_len = 0;
  Plan plan;
  Estimate estimate;
};

// One point per length (each positive; the callers parse them), in the order given. A plan illegal
// on the cluster is a ConfigError "<flag>: <model> at seq_len T (batch B): <rule>" (flag: the
// option the caller lets choose the mesh or the lengths).
std::vector<SweepPoint> seq_len_sweep(const ModelSpec& m, const ClusterSpec& c, const Plan& base,
                                      const std::vector<std::int64_t>& lengths, double tokens_per_batch, const std::string& flag);

}  // namespace scanshard
