// cli/report_command.cpp — `scanshard report --plan P --trace T`: the measured trace of a
// `scanshard train` run next to the simulator's prediction for the same plan, op group by op
// group (seconds per step), with the total step time; also written as CSV and JSON.
// Not yet: the HTML page with SVG charts and the multi-plan validate sweep (issue 9).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/simulate.hpp"

namespace scanshard {
namespace {

struct ReportOptions {
  std::string plan_file, trace_file, cluster, out_dir;
};

// Kernels fuse some program steps (the gated MLP, the RG-LRU gates + decay + scan); compare at the
// granularity both sides share.
std::string group_of(const std::string& name) {
  if (name.starts_with("mlp")) return "mlp";
  if (name == "rec.gate_a" || name == "rec.gate_x" || name == "rec.decay" || name == "rec.scan" || name == "scan.carry_fix")
    return "rec.rglru";
  if (name == "rec.gate" || name == "rec.gated") return "rec.gate";
  if (name.ends_with(".residual")) return "residual";
  return name;
}

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the trace file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path + ": not a JSON trace: " + e.what());
  }
}

void run_report(const ReportOptions& o) {
  const Plan p = load_plan(o.plan_file);
  if (p.model.empty()) throw ConfigError(o.plan_file + ": model: the plan must name its model for a report");
  const ModelSpec m = load_model(p.model, o.plan_file + ": model");
  const std::string cluster_name = !o.cluster.empty() ? o.cluster : !p.cluster.empty() ? p.cluster : "cpu-local";
  const ClusterSpec c = load_cluster(cluster_name, o.cluster.empty() ? o.plan_file + ": cluster" : "--cluster");
  const auto trace = load_json(o.trace_file);
  if (!trace.contains("steps") || !trace["steps"].is_array() || trace["steps"].empty())
    throw ConfigError(o.trace_file + ": steps: missing or empty (write one with `scanshard train --trace`)");
  if (trace.value("model", std::string()) != m.name)
    throw ConfigError(o.trace_file + ": model: the trace is of '" + trace.value("model", std::string("?")) + "', the plan of '" + m.name + "'");
  if (trace.value("mesh", std::string()) != p.mesh.describe())
    throw ConfigError(o.trace_file + ": mesh: the trace ran mesh " + trace.value("mesh", std::string("?")) + ", the plan says " + p.mesh.describe());

  // Predicted seconds per step and group, on rank 0's program.
  try {
    check_plan(m, p, c.devices());
  } catch (const PlanError& e) {
    throw ConfigError(o.plan_file, 0, 0, e.key(), std::string(e.what()) + " (pick the cluster the run used with --cluster)");
  }
  const Network net(Topology(c), c, p.mesh, p.placement);
  const StepProgram prog = lower(m, p, 0);
  std::map<std::string, double> predicted, measured;
  const double mb = static_cast<double>(p.micro_batches());
  for (const auto* list : {&prog.forward, &prog.backward}) {
    const auto secs = step_seconds(*list, c, net, p.act_dtype);
    for (std::size_t i = 0; i < list->size(); ++i) predicted[group_of((*list)[i].name)] += mb * secs[i];
  }
  const auto end_secs = step_seconds(prog.step_end, c, net, p.act_dtype);
  for (std::size_t i = 0; i < prog.step_end.size(); ++i) predicted[group_of(prog.step_end[i].name)] += end_secs[i];
  const Estimate est = simulate(m, p, c);

  // Measured: mean over the steps after the first (warm-up).
  const auto& steps = trace["steps"];
  const std::size_t first = steps.size() > 1 ? 1 : 0;
  double wall = 0;
  for (std::size_t s = first; s < steps.size(); ++s) {
    wall += steps[s].value("wall_seconds", 0.0);
    for (const auto& op : steps[s]["ops"]) measured[group_of(op.value("name", std::string()))] += op.value("seconds", 0.0);
  }
  const double n = static_cast<double>(steps.size() - first);
  wall /= n;
  for (auto& [k, v] : measured) v /= n;

  std::set<std::string> groups;
  for (const auto& [k, v] : predicted) groups.insert(k);
  for (const auto& [k, v] : measured) groups.insert(k);
  std::vector<std::string> order(groups.begin(), groups.end());
  std::sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return std::max(predicted[a], measured[a]) > std::max(predicted[b], measured[b]);
  });
  Table t({"op group", "predicted", "measured", "measured/predicted"}, {false, true, true, true});
  nlohmann::json rows = nlohmann::json::array();
  std::string csv = "group,predicted_seconds,measured_seconds\n";
  auto ms = [](double s) { char b[32]; std::snprintf(b, sizeof b, "%.3f ms", 1e3 * s); return std::string(b); };
  for (const auto& g : order) {
    const double pr = predicted.count(g) ? predicted[g] : 0, me = measured.count(g) ? measured[g] : 0;
    char ratio[32] = "-";
    if (pr > 0 && me > 0) std::snprintf(ratio, sizeof ratio, "%.2f", me / pr);
    t.add({g, pr > 0 ? ms(pr) : "-", me > 0 ? ms(me) : "-", ratio});
    rows.push_back({{"group", g}, {"predicted_seconds", pr}, {"measured_seconds", me}});
    csv += g + "," + std::to_string(pr) + "," + std::to_string(me) + "\n";
  }
  std::cout << "report: " << m.name << ", plan " << o.plan_file << " (mesh " << p.mesh.describe() << "), cluster " << c.name
            << ", trace " << o.trace_file << " (" << steps.size() << " steps, first skipped as warm-up)\n\n"
            << t.str() << "\n";
  char total[200];
  std::snprintf(total, sizeof total, "step time: predicted %s, measured %s (wall, mean) -> measured/predicted %.2f\n",
                ms(est.step_seconds).c_str(), ms(wall).c_str(), wall / est.step_seconds);
  std::cout << total;
  if (c.source.find("placeholder") != std::string::npos)
    std::cout << "note: " << c.name << " is an uncalibrated placeholder; `scanshard calibrate` (not built yet) will measure it\n";
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    std::ofstream(o.out_dir + "/report.csv") << csv;
    std::ofstream(o.out_dir + "/report.json")
        << nlohmann::json{{"model", m.name}, {"mesh", p.mesh.describe()}, {"cluster", c.name},
                          {"predicted_step_seconds", est.step_seconds}, {"measured_step_seconds", wall}, {"groups", rows}}
               .dump(2)
        << "\n";
    std::cout << "wrote " << o.out_dir << "/report.csv and report.json\n";
  }
}

}  // namespace

void register_report_command(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  auto* cmd = app.add_subcommand("report", "Measured trace of a train run next to the simulator's prediction");
  cmd->add_option("--plan", o->plan_file, "The plan the run used")->required();
  cmd->add_option("--trace", o->trace_file, "Trace JSON written by `scanshard train --trace`")->required();
  cmd->add_option("--cluster", o->cluster, "Cluster to predict on (default: the plan's, else cpu-local)");
  cmd->add_option("--out-dir", o->out_dir, "Also write report.csv and report.json here");
  cmd->callback([o] { run_report(*o); });
}

}  // namespace scanshard
