// cli/serving_commands.hpp — the inference side of `simulate` and `plan` (--workload
// prefill|decode|generate): the flags, their checks (a bad value is a ConfigError naming the
// flag: exit 2) and the printing. The pricing is sim/inference.hpp, the search
// planner/search.hpp's search_serving.
#pragma once
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "program/cluster.hpp"
#include "program/inference.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"

namespace scanshard {

struct ServingFlags {
  std::string workload;  // "" = training
  std::optional<std::int64_t> prompt_len, sample_len;
  std::string batch;     // a positive integer, or "max" (simulate: the largest that fits)
  std::optional<std::int64_t> devices;  // simulate: run on the first N devices of the cluster

  void add_to(CLI::App& cmd, bool batch_flag);
  bool active() const { return !workload.empty(); }
  // ConfigError naming the flag for an unknown workload, a non-positive length, or a serving
  // flag given without --workload.
  Workload parsed_workload() const;
  void check_unused() const;
  // Prompt and sample lengths (defaults 2048 and 256) and the batch: --batch, else the plan's
  // global_batch per replica when the plan file gave one, else 1. batch_is_max: --batch max.
  ServingShape shape(const Plan& p, bool from_file, bool* batch_is_max = nullptr) const;
};

struct SimulateServing {
  ServingFlags flags;
  std::string sweep;  // sample_len=256,512,...
  bool json = false;
};
// `simulate --workload ...` for plan p of model m on cluster c.
void run_simulate_serving(const SimulateServing& o, const ModelSpec& m, const ClusterSpec& c, const Plan& p, bool from_file);

struct PlanServing {
  ServingFlags flags;
  double latency_budget_seconds = 0;
  std::int64_t max_batch = 0;
};
// `plan --workload generate --latency-budget S ...`: search and print (or --json).
void run_plan_serving(const PlanServing& o, const ModelSpec& m, const ClusterSpec& c, const std::array<std::int64_t, kAxisCount>& fixed,
                      std::size_t top, DType dtype, bool json, const std::string& out, const std::string& model_name,
                      const std::string& cluster_name, std::int64_t devices);

}  // namespace scanshard
