// cli/plan_options.hpp — the plan-related flags shared by simulate (and later plan/train):
// --plan FILE plus overrides (--mesh, --global-batch, ...), resolved into a Plan.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "program/cluster.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"

namespace scanshard {

struct PlanOptions {
  std::string model, cluster, plan_file, mesh;
  std::optional<std::int64_t> global_batch, micro_batch, seq_len, zero_stage;
  std::string remat, scan, carry, schedule, dtype, tensor_comm, attention, gradient_sync, grad_accumulation;
  std::optional<bool> overlap;
  std::optional<std::int64_t> virtual_stages;

  void add_to(CLI::App& cmd);
  // Model and cluster from flags or the plan file (flags win; a mismatch is an error).
  ModelSpec resolve_model(const Plan& p) const;
  ClusterSpec resolve_cluster(const Plan& p) const;
  // The plan: file (if any), then flag overrides; defaults fill the rest for `devices`.
  Plan resolve_plan(std::int64_t devices) const;
  Plan load_base() const;  // the --plan file, or an empty plan
  // check_plan, reported as an input error naming the plan file (or the flags) and the key.
  void check(const ModelSpec& m, const Plan& p, std::int64_t devices) const;
};

// The model or cluster (`what`) a command uses: the flag's value or the plan file's, which must
// agree when both are given (ConfigError naming the plan file otherwise, or when neither is).
// Every field of a plan as a JSON object with the plan YAML's keys and value names (plan_to_yaml),
// for `plan --json` and `simulate --json`.
nlohmann::json plan_json(const Plan& p);

// "KEY=V1,V2,..." (a --sweep value) -> the positive integers; ConfigError naming --sweep, with
// `what` ("sequence length") for a bad item.
std::vector<std::int64_t> parse_sweep_values(const std::string& text, const std::string& key, const std::string& what);

std::string pick_preset(const std::string& flag, const std::string& from_plan, const char* what, const std::string& plan_file);

// The cluster `name` (from --cluster when from_flag, else the plan file's `cluster:`) sliced to
// the plan's devices: what simulate (resolve_cluster) and report run a plan on. Errors name the
// flag or the plan file's key.
ClusterSpec load_plan_cluster(const std::string& name, bool from_flag, const Plan& p, const std::string& plan_file);

}  // namespace scanshard
