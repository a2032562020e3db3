// cli/plan_options.cpp — see plan_options.hpp.
#include "cli/plan_options.hpp"

#include <cstdlib>
#include <sstream>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {

void PlanOptions::add_to(CLI::App& cmd) {
  cmd.add_option("--model", model, "Model preset or YAML file (or `model:` in the plan)");
  cmd.add_option("--cluster", cluster, "Cluster preset or YAML file (or `cluster:` in the plan)");
  cmd.add_option("--plan", plan_file, "Plan YAML (see configs/plans/)");
  cmd.add_option("--mesh", mesh, "Mesh axes, e.g. data=8,tensor=4 (others 1)");
  cmd.add_option("--global-batch", global_batch, "Sequences per step");
  cmd.add_option("--micro-batch", micro_batch, "Sequences per micro-batch per data replica");
  cmd.add_option("--seq-len", seq_len, "Tokens per sequence");
  cmd.add_option("--zero", zero_stage, "ZeRO stage over the fsdp axis (0-3)");
  cmd.add_option("--remat", remat, "none | selective (attention core) | elementwise | block");
  cmd.add_option("--tensor-comm", tensor_comm, "Tensor-parallel communication: allreduce | rs_ag (sequence parallelism)");
  cmd.add_option("--attention", attention, "Attention core: flash | materialized | flash_v1 | flash_v2 | flash_triton (flash priced at that kernel's measured rate)");
  cmd.add_option("--virtual-stages", virtual_stages, "Interleaved 1F1B: model chunks per pipeline stage");
  cmd.add_option("--scan", scan, "naive | sequential | chunked | associative");
  cmd.add_option("--carry", carry, "Sequence-parallel carry exchange: ring | allgather");
  cmd.add_option("--schedule", schedule, "Pipeline schedule: gpipe | 1f1b");
  cmd.add_option("--dtype", dtype, "Parameters and activations: bf16 | fp32");
  cmd.add_option("--gradient-sync", gradient_sync,
                 "ZeRO-2/3 gradient reduce-scatter: every_microbatch (default) | last_microbatch (once per step)");
  cmd.add_option("--grad-accumulation", grad_accumulation,
                 "Micro-batch gradient accumulation: separate (default) | hook (Megatron main_grad) | autograd (.grad) | fused (in the weight-gradient GEMMs)");
  cmd.add_option("--overlap", overlap, "Overlap gradient reduction with backward (true/false)");
}

void PlanOptions::check(const ModelSpec& m, const Plan& p, std::int64_t devices) const {
  try {
    check_plan(m, p, devices);
  } catch (const PlanError& e) {
    throw plan_file_error(plan_file, e);
  }
}

Plan PlanOptions::load_base() const {
  if (plan_file.empty()) return Plan{};
  return load_plan(plan_file);
}

std::string pick_preset(const std::string& flag, const std::string& from_plan, const char* what, const std::string& plan_file) {
  if (!flag.empty() && !from_plan.empty() && !same_config(flag, from_plan))
    throw ConfigError(plan_file + ": " + what + ": the plan was made for '" + from_plan + "' but --" + what + " is '" + flag + "'");
  if (!flag.empty()) return flag;
  if (!from_plan.empty()) return from_plan;
  throw ConfigError(std::string("--") + what + ": required (or give `" + what + ":` in the plan file)");
}

ModelSpec PlanOptions::resolve_model(const Plan& p) const {
  return load_model(pick_preset(model, p.model, "model", plan_file), model.empty() ? plan_file + ": model" : "--model");
}
ClusterSpec load_plan_cluster(const std::string& name, bool from_flag, const Plan& p, const std::string& plan_file) {
  return cluster_slice(load_cluster(name, from_flag ? "--cluster" : plan_file + ": cluster"), p.devices, plan_file + ": devices");
}
ClusterSpec PlanOptions::resolve_cluster(const Plan& p) const {
  return load_plan_cluster(pick_preset(cluster, p.cluster, "cluster", plan_file), !cluster.empty(), p, plan_file);
}

Plan PlanOptions::resolve_plan(std::int64_t devices) const {
  Plan p = load_base();
  const bool from_file = !plan_file.empty();
  if (!mesh.empty()) p.mesh = parse_mesh(mesh, "--mesh");
  else if (!from_file) { p.mesh = Mesh{}; p.mesh[Axis::data] = devices; }
  if (seq_len) p.seq_len = *seq_len;
  else if (!from_file) p.seq_len = 2048;
  if (global_batch) p.global_batch = *global_batch;
  else if (!from_file) p.global_batch = p.replicas();
  if (micro_batch) p.micro_batch = *micro_batch;
  else if (!from_file || global_batch) p.micro_batch = default_micro_batch(p.local_batch(), p.mesh[Axis::pipeline]);
  if (zero_stage) p.zero_stage = static_cast<int>(*zero_stage);
  auto choose = [](const std::string& v, const char* flag, auto& field, const auto& names) {
    if (!v.empty()) field = parse_choice(names, v, flag);
  };
  choose(remat, "--remat", p.remat, kRematNames);
  choose(tensor_comm, "--tensor-comm", p.tensor_comm, kTensorCommNames);
  choose(attention, "--attention", p.attention, kAttentionNames);
  if (virtual_stages) {
    if (*virtual_stages < 1) throw ConfigError("--virtual-stages: must be a positive integer");
    p.virtual_stages = *virtual_stages;
  }
  choose(scan, "--scan", p.scan, kScanNames);
  choose(carry, "--carry", p.carry, kCarryNames);
  choose(schedule, "--schedule", p.schedule, kScheduleNames);
  choose(gradient_sync, "--gradient-sync", p.gradient_sync, kGradientSyncNames);
  choose(grad_accumulation, "--grad-accumulation", p.grad_accumulation, kGradAccumulationNames);
  if (!dtype.empty()) {
    choose(dtype, "--dtype", p.param_dtype, kDTypeNames);
    p.act_dtype = p.param_dtype;
  }
  if (overlap) p.overlap = *overlap;
  return p;
}

std::vector<std::int64_t> parse_sweep_values(const std::string& text, const std::string& key, const std::string& what) {
  const std::string prefix = key + "=";
  if (!text.starts_with(prefix)) throw ConfigError("--sweep: expected " + prefix + "V1,V2,..., got '" + text + "'");
  std::vector<std::int64_t> out;
  std::stringstream ss(text.substr(prefix.size()));
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end || v < 1) throw ConfigError("--sweep: '" + item + "' is not a positive " + what);
    out.push_back(v);
  }
  if (out.empty()) throw ConfigError("--sweep: no " + what + "s given");
  return out;
}

nlohmann::json plan_json(const Plan& p) {
  nlohmann::json mesh = nlohmann::json::object(), placement = nlohmann::json::array();
  for (int i = 0; i < kAxisCount; ++i) mesh[to_string(static_cast<Axis>(i))] = p.mesh.size[static_cast<std::size_t>(i)];
  for (Axis a : p.placement) placement.push_back(to_string(a));
  nlohmann::json j = {{"mesh", mesh},
                      {"zero_stage", p.zero_stage},
                      {"global_batch", p.global_batch},
                      {"micro_batch", p.micro_batch},
                      {"seq_len", p.seq_len},
                      {"schedule", to_string(p.schedule)},
                      {"virtual_stages", p.virtual_stages},
                      {"remat", to_string(p.remat)},
                      {"tensor_comm", to_string(p.tensor_comm)},
                      {"attention", to_string(p.attention)},
                      {"scan", to_string(p.scan)},
                      {"carry", to_string(p.carry)},
                      {"dtypes", {{"params", to_string(p.param_dtype)}, {"activations", to_string(p.act_dtype)},
                                  {"scan_state", to_string(p.state_dtype)}, {"grads", to_string(p.grad_dtype)}}},
                      {"gradient_sync", to_string(p.gradient_sync)},
                      {"grad_accumulation", to_string(p.grad_accumulation)},
                      {"overlap", p.overlap},
                      {"scatter_gather", p.scatter_gather},
                      {"async_tensor_comm", p.async_tensor_comm},
                      {"logit_metrics", p.logit_metrics},
                      {"placement", placement}};
  if (!p.model.empty()) j["model"] = p.model;
  if (!p.cluster.empty()) j["cluster"] = p.cluster;
  if (p.devices > 0) j["devices"] = p.devices;
  return j;
}

}  // namespace scanshard
