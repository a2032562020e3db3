// cli/plan_command.cpp — `scanshard plan`: search the sharding space for a model on a cluster and
// explain the choice: top-k table, Pareto front (step time vs memory), why-not lines, the chosen
// plan as YAML (stdout or --out FILE, written atomically) that simulate/train accept unchanged.
// --workload generate --latency-budget S searches serving layouts instead (cli/serving_commands.hpp).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/plan_options.hpp"
#include "cli/serving_commands.hpp"
#include "planner/search.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "reports/format.hpp"
#include "reports/progress.hpp"

namespace scanshard {
namespace {

struct PlanCmdOptions {
  std::string model, cluster, fix, out, dtype = "bf16";
  std::int64_t devices = 0, global_batch = 0, seq_len = 2048;
  double max_memory_fraction = kMaxMemoryFraction;
  std::size_t top = 10;
  bool json = false, quiet = false;
  PlanServing serving;  // --workload generate --latency-budget S (cli/serving_commands.hpp)
};

Table candidates_table(const std::vector<Candidate>& cs, bool scan) {
  Table t({"#", "plan", "step time", "tokens/s", "MFU", "memory/device", "bottleneck"}, {true, false, true, true, true, true, false});
  int i = 0;
  for (const auto& c : cs) {
    char mfu[16];
    std::snprintf(mfu, sizeof mfu, "%.1f %%", 100 * c.mfu);
    t.add({std::to_string(++i), plan_summary(c.plan, false, scan), format_seconds(c.step_seconds), format_si(c.tokens_per_s, ""), mfu,
           format_bytes(c.memory_bytes), c.bottleneck});
  }
  return t;
}

nlohmann::json candidate_json(const Candidate& c, bool scan) {
  return {{"mesh", c.plan.mesh.describe()}, {"summary", plan_summary(c.plan, false, scan)}, {"plan", plan_json(c.plan)}, {"step_seconds", c.step_seconds},
          {"tokens_per_s", c.tokens_per_s}, {"mfu", c.mfu}, {"memory_bytes", c.memory_bytes}, {"bottleneck", c.bottleneck}};
}

// --fix tensor=4,pipeline=2: only the axes named are fixed (an axis may be fixed to 1); 0 = free.
std::array<std::int64_t, kAxisCount> fixed_axes(const std::string& fix) {
  std::array<std::int64_t, kAxisCount> fixed{};
  if (fix.empty()) return fixed;
  parse_mesh(fix, "--fix");  // the whole list once: an axis named twice is an error
  std::stringstream ss(fix);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const Mesh one = parse_mesh(item, "--fix");
    const auto axis = static_cast<std::size_t>(parse_choice(kAxisNames, item.substr(0, item.find('=')), "--fix"));
    fixed[axis] = one.size[axis];
  }
  return fixed;
}

void run_plan(const PlanCmdOptions& o) {
  if (o.model.empty()) throw ConfigError("--model: required");
  if (o.cluster.empty()) throw ConfigError("--cluster: required");
  if (!o.out.empty()) check_output_file(o.out);  // before the search: a bad --out refuses at once
  const ModelSpec m = load_model(o.model);
  const ClusterSpec c = cluster_slice(load_cluster(o.cluster), o.devices);
  const std::array<std::int64_t, kAxisCount> fixed = fixed_axes(o.fix);
  const DType dtype = parse_choice(kDTypeNames, o.dtype, "--dtype");
  if (o.serving.flags.active())
    return run_plan_serving(o.serving, m, c, fixed, o.top, dtype, o.json, o.out, o.model, o.cluster,
                            o.devices && o.devices != load_cluster(o.cluster).devices() ? o.devices : 0);
  o.serving.flags.check_unused();
  if (o.serving.latency_budget_seconds != 0) throw ConfigError("--latency-budget: a serving flag; give --workload generate with it");
  SearchOptions so;
  so.global_batch = o.global_batch ? o.global_batch : c.devices();
  so.seq_len = o.seq_len;
  if (!(o.max_memory_fraction > 0 && o.max_memory_fraction <= 1)) throw ConfigError("--max-memory-fraction: must be in (0, 1]");
  so.max_memory_fraction = o.max_memory_fraction;
  so.top = o.top;
  so.dtype = dtype;
  so.fixed = fixed;
  // Progress with the time left (search() reports after about a second, then every half second):
  // on a terminal one line rewritten in place; otherwise (a log, a batch job) a line after 10 s,
  // then every 30 s — a short search prints nothing.
  bool shown = false;
  const bool terminal = isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  ProgressPacer pacer(terminal ? 0.0 : 10.0, terminal ? 0.0 : 30.0);
  std::size_t width = 0;
  if (!o.quiet)
    so.progress = [&](double f) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!pacer.due(elapsed)) return;
      const std::string line = fraction_line("searching", f, elapsed);
      if (terminal) {
        width = std::max(width, line.size());
        std::fprintf(stderr, "\r%-*s", static_cast<int>(width), line.c_str());
      } else {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
      std::fflush(stderr);
      shown = terminal;
    };
  const SearchResult r = search(m, c, so);
  if (shown) std::fprintf(stderr, "\r%*s\r", static_cast<int>(width), "");
  // The chosen plan: the fastest (with --top 0 the Pareto front's fastest, which is the same plan).
  const Candidate* fastest = !r.top.empty() ? &r.top.front() : nullptr;
  for (const auto& cnd : r.pareto)
    if (!fastest || cnd.step_seconds < fastest->step_seconds) fastest = &cnd;
  Plan best;
  if (fastest) {
    best = fastest->plan;
    best.model = o.model;
    best.cluster = o.cluster;
    best.devices = o.devices && o.devices != load_cluster(o.cluster).devices() ? o.devices : 0;
  }
  if (o.json) {
    nlohmann::json j = {{"model", m.name}, {"cluster", c.name}, {"considered", r.considered}, {"illegal", r.illegal},
                        {"pruned", r.pruned}, {"over_memory", r.over_memory}, {"bounded", r.bounded}, {"priced", r.priced},
                        {"seconds", r.seconds},
                        {"why_not", r.why_not}};
    if (!r.blocking.empty()) j["blocking_rule"] = r.blocking;
    j["top"] = nlohmann::json::array();
    for (const auto& cnd : r.top) j["top"].push_back(candidate_json(cnd, m.has_scan()));
    j["pareto"] = nlohmann::json::array();
    for (const auto& cnd : r.pareto) j["pareto"].push_back(candidate_json(cnd, m.has_scan()));
    if (fastest) j["plan_yaml"] = plan_to_yaml(best);
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "model " << m.name << " on " << c.name << " (" << c.devices() << " x " << c.chip.name << "), batch "
              << so.global_batch << " x " << so.seq_len << " tokens\n";
    char stats[256];
    std::snprintf(stats, sizeof stats,
                  "considered %lld plans: %lld illegal, %lld pruned by the memory bound, %lld over memory, %lld skipped by the "
                  "step-time bound, %lld priced in %.2f s\n\n",
                  static_cast<long long>(r.considered), static_cast<long long>(r.illegal), static_cast<long long>(r.pruned),
                  static_cast<long long>(r.over_memory), static_cast<long long>(r.bounded), static_cast<long long>(r.priced), r.seconds);
    std::cout << stats;
    if (!fastest) {
      if (!r.blocking.empty()) std::cout << "NO LEGAL PLAN: every plan breaks the rule " << r.blocking << "\n";
      else std::cout << "NO LEGAL PLAN FITS.\n";
      if (!r.why_not.empty()) std::cout << "Why, per family (the rule that fails on all its meshes, or its smallest memory need):\n";
      for (const auto& w : r.why_not) std::cout << "  " << w << "\n";
    } else {
      if (!r.top.empty()) std::cout << "fastest plans\n" << candidates_table(r.top, m.has_scan()).str() << "\n";
      std::cout << "Pareto front: step time vs memory per device\n" << candidates_table(r.pareto, m.has_scan()).str() << "\n";
      std::cout << "why not\n";
      for (const auto& w : r.why_not) std::cout << "  " << w << "\n";
      if (o.out.empty()) std::cout << "\nchosen plan (save with --out FILE):\n" << plan_to_yaml(best);
    }
  }
  if (!o.out.empty() && fastest) {
    Plan saved = best;  // a model or cluster path, relative to the plan file (load_plan reads it so)
    saved.model = path_for_file(best.model, o.out);
    saved.cluster = path_for_file(best.cluster, o.out);
    write_output_file(o.out, plan_to_yaml(saved));
    if (!o.json) std::cout << "\nchosen plan written to " << o.out << "\n";
  }
  if (!fastest) throw ConfigError("no legal plan fits " + m.name + " on " + c.name + " (see the reasons above)");
}

}  // namespace

void register_plan_command(CLI::App& app) {
  auto o = std::make_shared<PlanCmdOptions>();
  auto* cmd = app.add_subcommand("plan", "Search data/fsdp/tensor/sequence/pipeline sharding, remat, micro-batching; explain the best plan");
  cmd->add_option("--model", o->model, "Model preset or YAML file")->required();
  cmd->add_option("--cluster", o->cluster, "Cluster preset or YAML file")->required();
  cmd->add_option("--devices", o->devices, "Use this many devices of the cluster (a slice)");
  cmd->add_option("--global-batch", o->global_batch, "Sequences per step (default: one per device)");
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence");
  cmd->add_option("--fix", o->fix, "Fix axes, e.g. tensor=4,pipeline=2");
  cmd->add_option("--max-memory-fraction", o->max_memory_fraction, "Fraction of device memory a plan may use (default 0.9, as simulate)");
  cmd->add_option("--top", o->top, "How many plans to list (default 10)");
  cmd->add_option("--dtype", o->dtype, "bf16 or fp32");
  cmd->add_option("--out", o->out, "Write the chosen plan YAML here (atomically)");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_flag("--quiet", o->quiet, "No progress indicator");
  o->serving.flags.add_to(*cmd, false);
  cmd->add_option("--latency-budget", o->serving.latency_budget_seconds, "Serving: per-token latency bound in seconds (with --workload)");
  cmd->add_option("--max-batch", o->serving.max_batch, "Serving: largest batch per replica to consider (default: what memory allows)");
  cmd->callback([o] { run_plan(*o); });
}

}  // namespace scanshard
