// cli/report_command.cpp — `scanshard report`, two modes:
//   report --plan P --trace T [--cluster C] [--out-dir D]: the measured trace of a `scanshard train`
//     run next to the simulator's prediction for the same plan, op group by op group (seconds per
//     step, reports/compare.hpp), with the total step time; also written as CSV and JSON.
//   report --validate DIR --html FILE [...]: the self-contained HTML page with gnuplot SVG charts
//     of a `scanshard validate` run plus the planner's Pareto front and a sequence-length sweep
//     (reports/html_report.hpp); CSV/JSON next to the page. No gnuplot on PATH: exit 2, nothing written.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <memory>

#include "cli/commands.hpp"
#include "cli/plan_options.hpp"
#include "reports/compare.hpp"
#include "reports/format.hpp"
#include "reports/html_report.hpp"
#include "program/lower.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/simulate.hpp"

namespace scanshard {
namespace {

struct ReportOptions {
  std::string plan_file, trace_file, cluster, out_dir;
  std::string validate_dir, html;
  HtmlReportOptions page;
};

void run_html_report(ReportOptions o) {
  if (!o.plan_file.empty() || !o.trace_file.empty() || !o.out_dir.empty() || !o.cluster.empty())
    throw ConfigError("report: --html renders a validate run (--validate DIR); --plan/--trace/--cluster/--out-dir belong to the "
                      "single-trace report");
  if (o.validate_dir.empty()) throw ConfigError("--html: needs --validate DIR (the output directory of `scanshard validate`)");
  if (o.html.empty()) throw ConfigError("--validate: needs --html FILE (the page to write)");
  o.page.validate_dir = o.validate_dir;
  o.page.html = o.html;
  const auto written = write_html_report(o.page);
  std::cout << "report: wrote " << written.front() << " (" << written.size() - 1 << " data files next to it:";
  for (std::size_t i = 1; i < written.size(); ++i) std::cout << " " << std::filesystem::path(written[i]).filename().string();
  std::cout << ")\n";
}

void run_report(const ReportOptions& o) {
  if (!o.html.empty() || !o.validate_dir.empty()) return run_html_report(o);
  if (o.plan_file.empty() || o.trace_file.empty())
    throw ConfigError("report: give --plan P --trace T (one train run), or --validate DIR --html FILE (the HTML report)");
  if (!o.out_dir.empty()) check_output_directory(o.out_dir, "--out-dir");
  const Plan p = load_plan(o.plan_file);
  if (p.model.empty()) throw ConfigError(o.plan_file + ": model: the plan must name its model for a report");
  const ModelSpec m = load_model(p.model, o.plan_file + ": model");
  // --cluster overrides the plan's cluster (the one the run used); neither: the local CPU.
  const std::string cluster_name = !o.cluster.empty() ? o.cluster : !p.cluster.empty() ? p.cluster : "cpu-local";
  const ClusterSpec c = load_plan_cluster(cluster_name, !o.cluster.empty(), p, o.plan_file);
  const TraceFile trace = load_trace(o.trace_file);  // untrusted: shape and values checked, then against the plan
  check_trace_plan(trace, o.trace_file, m, p);
  const auto steps = measured_steps(trace);

  try {
    check_plan(m, p, c.devices());
  } catch (const PlanError& e) {
    throw plan_file_error(o.plan_file, e, " (pick the cluster the run used with --cluster)");
  }
  // Predicted seconds per step and group on rank 0's program; measured: median over the steps
  // after the first (warm-up).
  const Comparison cmp = compare(m, p, c, steps);

  Table t({"op group", "predicted", "measured", "measured/predicted"}, {false, true, true, true});
  auto ms = [](double s) { char b[32]; std::snprintf(b, sizeof b, "%.3f ms", 1e3 * s); return std::string(b); };
  for (const auto& g : cmp.groups) {
    const double pr = g.predicted, me = g.measured;
    char ratio[32] = "-";
    if (pr > 0 && me > 0) std::snprintf(ratio, sizeof ratio, "%.2f", me / pr);
    t.add({g.group, pr > 0 ? ms(pr) : "-", me > 0 ? ms(me) : "-", ratio});
  }
  const double wall = cmp.measured_step_seconds;
  const Estimate& est = cmp.estimate;
  std::cout << "report: " << m.name << ", plan " << o.plan_file << " (mesh " << p.mesh.describe() << "), cluster " << c.name
            << ", trace " << o.trace_file << " (" << steps.size() << " steps, first skipped as warm-up)\n\n"
            << t.str() << "\n";
  char total[200];
  std::snprintf(total, sizeof total, "step time: predicted %s, measured %s (wall, median) -> measured/predicted %.2f\n",
                ms(est.step_seconds).c_str(), ms(wall).c_str(), wall / est.step_seconds);
  std::cout << total;
  if (c.source.find("placeholder") != std::string::npos)
    std::cout << "note: " << c.name << " is an uncalibrated placeholder; `mpirun -n 2 scanshard calibrate` measures this machine\n";
  if (!o.out_dir.empty()) {
    make_output_directory(o.out_dir, "--out-dir");
    OutputFiles files;
    for (auto& [name, text] : comparison_files(cmp, m.name, p.mesh.describe(), c.name)) files.push_back({o.out_dir + "/" + name, std::move(text)});
    write_output_files(files);
    std::cout << "wrote " << o.out_dir << "/report.csv and report.json\n";
  }
}

}  // namespace

void register_report_command(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  auto* cmd = app.add_subcommand("report", "Measured vs predicted: one train trace (--plan --trace), or the HTML report of a "
                                           "validate run (--validate DIR --html FILE)");
  cmd->add_option("--plan", o->plan_file, "The plan the run used");
  cmd->add_option("--trace", o->trace_file, "Trace JSON written by `scanshard train --trace`");
  cmd->add_option("--cluster", o->cluster, "Cluster to predict on (default: the plan's, else cpu-local)");
  cmd->add_option("--out-dir", o->out_dir, "Also write report.csv and report.json here");
  cmd->add_option("--validate", o->validate_dir, "HTML mode: the output directory of `scanshard validate`");
  cmd->add_option("--html", o->html, "HTML mode: the page to write (CSV/JSON next to it); needs gnuplot");
  auto& pg = o->page;
  cmd->add_option("--pareto-model", pg.pareto_model, "HTML: model for the Pareto front")->capture_default_str();
  cmd->add_option("--pareto-cluster", pg.pareto_cluster, "HTML: cluster for the Pareto front (default: validate's)");
  cmd->add_option("--pareto-global-batch", pg.pareto_global_batch, "HTML: global batch for the Pareto front")->capture_default_str();
  cmd->add_option("--pareto-seq-len", pg.pareto_seq_len, "HTML: sequence length for the Pareto front")->capture_default_str();
  cmd->add_option("--pareto-dtype", pg.pareto_dtype, "HTML: fp32 or bf16 for the Pareto front")->capture_default_str();
  cmd->add_option("--sweep-models", pg.sweep_models, "HTML: models of the sequence-length sweep (first = baseline)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--sweep-cluster", pg.sweep_cluster, "HTML: cluster of the sweep")->capture_default_str();
  cmd->add_option("--sweep-mesh", pg.sweep_mesh, "HTML: mesh of the sweep")->capture_default_str();
  cmd->add_option("--sweep-seq", pg.sweep_seq, "HTML: sequence lengths of the sweep")->delimiter(',')->capture_default_str();
  cmd->add_option("--sweep-tokens", pg.sweep_tokens, "HTML: tokens per batch, fixed along the sweep")->capture_default_str();
  cmd->callback([o] { run_report(*o); });
}

}  // namespace scanshard
