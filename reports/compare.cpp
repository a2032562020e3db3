// reports/compare.cpp — see compare.hpp.
#include "reports/compare.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "program/inference.hpp"
#include "program/lower.hpp"
#include "program/yaml_reader.hpp"
#include "reports/stats.hpp"

namespace scanshard {

std::vector<MeasuredStep> measured_steps(const TraceFile& trace) {
  std::vector<MeasuredStep> out;
  for (const auto& s : trace.steps) {
    MeasuredStep m;
    m.wall_seconds = s.wall_seconds;
    for (const auto& op : s.ops) m.seconds_by_name[step_name(op.op, op.name)] += op.seconds;
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<MeasuredStep> measured_steps(const Trace& trace) {
  std::vector<MeasuredStep> out;
  for (const auto& s : trace.steps()) {
    MeasuredStep m;
    m.wall_seconds = s.wall;
    for (const auto& [key, cell] : s.cells) m.seconds_by_name[step_name(std::get<1>(key), std::get<2>(key))] += cell.seconds;
    out.push_back(std::move(m));
  }
  return out;
}

std::string step_name(const std::string& op, const std::string& name) {
  const bool grads = name == tensors::grads || name == tensors::embed_grads || name == tensors::head_grads;
  return grads && op != ops::grad_accumulate ? "grads.sync" : name;
}

std::string op_group(const std::string& name) {
  if (name.starts_with("mlp")) return "mlp";
  // scan.carry_fix is the carry fix's op, never a step name (the step carries its scan's name,
  // rec.scan); matching it here changes nothing and is kept as it was.
  if (name == tensors::rec_gate_a || name == tensors::rec_gate_x || name == tensors::rec_decay || name == tensors::rec_scan ||
      name == ops::scan_carry_fix)
    return "rec.rglru";
  if (name == tensors::rec_gate || name == tensors::rec_gated) return tensors::rec_gate;
  if (name == tensors::attn_scores_recompute) return tensors::attn_core;  // recomputed inside the attention backward
  if (name.ends_with(".residual")) return "residual";
  return name;
}

namespace {

// Sequence shards: the simulator prices the last shard (the slowest: it alone re-runs its WKV
// chunk from the true incoming state, and every later shard's work waits on the carry from the
// ones before), while the groups are rank 0's program. Rank 0's sends in forward do not wait
// (eager, nothing to receive from the right), so it runs ahead and waits at its first backward
// exchange with a later shard (the last layer's token-shift or Conv1D halo gradient, or the carry)
// for the difference. The trace measures that wait there, so the prediction puts it there.
void wait_for_later_shards(const StepProgram& prog, double step_seconds, std::map<std::string, double>& predicted,
                           std::map<std::string, std::map<std::string, double>>& class_seconds) {
  double own = 0;
  for (const auto& [g, s] : predicted) own += s;
  const double behind = step_seconds - own;
  if (behind <= 0) return;
  for (const auto& st : prog.backward)
    if (st.kind != StepKind::compute && st.axis == Axis::sequence) {
      const std::string g = op_group(step_name(st.op, st.name));
      predicted[g] += behind;
      class_seconds[g]["comm"] += behind;
      return;
    }
}

// The measured half of a comparison, shared by training and decode steps: the median over the
// steps after the warm-up, per group and for the wall time, next to the predicted seconds per
// group (`predicted`, with each group's seconds per op class in `class_seconds`); the rows, largest first.
void add_measured_groups(Comparison& out, std::map<std::string, double>& predicted,
                         std::map<std::string, std::map<std::string, double>>& class_seconds,
                         const std::vector<MeasuredStep>& steps, bool warm_up) {
  // Measured: median over the steps after the warm-up, per group and for the wall time.
  const std::size_t first = warm_up && steps.size() > 1 ? 1 : 0;
  out.steps_total = steps.size();
  out.steps_used = steps.size() - first;
  std::vector<double> walls;
  std::set<std::string> measured_groups;
  std::vector<std::map<std::string, double>> per_step;
  for (std::size_t s = first; s < steps.size(); ++s) {
    walls.push_back(steps[s].wall_seconds);
    std::map<std::string, double> g;
    for (const auto& [name, sec] : steps[s].seconds_by_name) g[op_group(name)] += sec;
    for (const auto& [k, v] : g) measured_groups.insert(k);
    per_step.push_back(std::move(g));
  }
  out.measured_step_seconds = stats::median(walls);
  out.fastest_step_seconds = *std::min_element(walls.begin(), walls.end());
  std::map<std::string, double> measured;
  for (const auto& g : measured_groups) {
    std::vector<double> v;
    for (const auto& st : per_step) v.push_back(st.count(g) ? st.at(g) : 0.0);
    measured[g] = stats::median(v);
  }

  std::set<std::string> groups(measured_groups);
  for (const auto& [k, v] : predicted) groups.insert(k);
  for (const auto& g : groups) {
    GroupRow r;
    r.group = g;
    r.predicted = predicted.count(g) ? predicted[g] : 0.0;
    r.measured = measured.count(g) ? measured[g] : 0.0;
    r.cls = "other";
    if (class_seconds.count(g)) {
      const auto& cs = class_seconds[g];
      r.cls = std::max_element(cs.begin(), cs.end(), [](const auto& a, const auto& b) { return a.second < b.second; })->first;
    }
    if (r.predicted > 0 && r.measured > 0) {
      out.predicted_by_class[r.cls] += r.predicted;
      out.measured_by_class[r.cls] += r.measured;
    }
    out.groups.push_back(std::move(r));
  }
  std::sort(out.groups.begin(), out.groups.end(), [](const GroupRow& a, const GroupRow& b) {
    const double x = std::max(a.predicted, a.measured), y = std::max(b.predicted, b.measured);
    return x != y ? x > y : a.group < b.group;
  });
}

}  // namespace

Comparison compare(const ModelSpec& m, const Plan& p, const ClusterSpec& c, const std::vector<MeasuredStep>& steps,
                   bool warm_up) {
  if (steps.empty()) throw ConfigError("compare: no measured steps");
  Comparison out;
  const Network net(Topology(c), c, p.mesh, p.placement);
  const StepProgram prog = lower(m, p, 0);
  std::map<std::string, double> predicted;
  std::map<std::string, std::map<std::string, double>> class_seconds;  // group -> class -> seconds
  // Each list priced once: (steps, seconds of each, times per step).
  struct Priced { const std::vector<Step>& list; std::vector<double> secs; double times; };
  const double mb = static_cast<double>(p.micro_batches());
  const std::array<Priced, 3> passes = {Priced{prog.forward, step_seconds(prog.forward, c, net, p.act_dtype), mb},
                                        Priced{prog.backward, step_seconds(prog.backward, c, net, p.act_dtype), mb},
                                        Priced{prog.step_end, step_seconds(prog.step_end, c, net, p.act_dtype), 1.0}};
  for (const auto& [list, secs, times] : passes)
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string g = op_group(step_name(list[i].op, list[i].name));
      predicted[g] += times * secs[i];
      class_seconds[g][to_string(list[i].cls)] += times * secs[i];
    }
  out.estimate = simulate(m, p, c);
  out.predicted_step_seconds = out.estimate.step_seconds;
  // Rank 0 of a pipeline (stage 0) waits for the later stages in its gradient receives: the
  // bubble and the slower stages' surplus, the step's time beyond its own work. The trace
  // measures that wait there, so the prediction puts it there too.
  if (p.mesh[Axis::pipeline] > 1) {
    double own = 0;
    for (const auto& [g, s] : predicted) own += s;
    const double wait = out.predicted_step_seconds - own;
    if (wait > 0) {
      predicted[tensors::pipeline_recv_gradients] += wait;
      class_seconds[tensors::pipeline_recv_gradients]["comm"] += wait;
    }
  } else if (const double wait = out.estimate.seconds[static_cast<int>(Bucket::sync_wait)]; wait > 0) {
    // Elsewhere ranks wait for the slowest at every collective or transfer (the sync wait: jitter
    // times the compute between meetings), and the trace measures each wait inside that meeting's
    // group. Each meeting gets the wait of the compute since the previous one, in the runner's
    // order (forward, backward, the step's end; what follows the last meeting goes to the first).
    std::map<std::string, double> before;  // group -> compute seconds leading up to its meetings
    std::string first;                     // the first meeting's group
    double run = 0, total = 0;
    for (const auto& [list, secs, times] : passes)
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (list[i].kind == StepKind::compute) {
          run += times * secs[i];
        } else {
          const std::string g = op_group(step_name(list[i].op, list[i].name));
          if (first.empty()) first = g;
          before[g] += run;
          total += run;
          run = 0;
        }
      }
    if (!first.empty()) before[first] += run, total += run;
    for (const auto& [g, share] : before)
      if (total > 0) {
        predicted[g] += wait * share / total;
        class_seconds[g]["comm"] += wait * share / total;
      }
  }

  if (p.mesh[Axis::pipeline] == 1 && p.mesh[Axis::sequence] > 1) wait_for_later_shards(prog, out.predicted_step_seconds, predicted, class_seconds);

  add_measured_groups(out, predicted, class_seconds, steps, warm_up);
  return out;
}

Comparison compare_decode(const ModelSpec& m, const Plan& p, const ServingShape& s, const ClusterSpec& c,
                          const std::vector<MeasuredStep>& steps, bool warm_up) {
  if (steps.empty()) throw ConfigError("compare: no measured steps");
  if (p.mesh[Axis::pipeline] > 1) throw ConfigError("compare: decode steps of a pipelined plan are not compared (pipeline = 1)");
  Comparison out;
  const Network net(Topology(c), c, p.mesh, p.placement);
  out.inference = simulate_inference(m, p, c, net, s);
  const ClusterSpec dc = decode_cluster(c);  // the groups priced as simulate_inference prices a decode step
  const Network dnet(Topology(dc), dc, p.mesh, p.placement);
  out.predicted_step_seconds = out.inference->per_token_seconds;
  // each decode position simulate_inference averages over, its pass priced step by step
  std::map<std::string, double> predicted;
  std::map<std::string, std::map<std::string, double>> class_seconds;
  const auto positions = decode_positions(s.prompt_len, s.sample_len, kDecodePoints);
  const double share = 1.0 / static_cast<double>(positions.size());
  for (const std::int64_t n : positions) {
    const InferencePass pass = lower_decode(m, p, 0, s.batch, n);
    pass.for_each_list([&](const std::vector<Step>& list, std::int64_t times) {
      const std::vector<double> secs = step_seconds(list, dc, dnet, p.act_dtype);
      for (std::size_t i = 0; i < list.size(); ++i) {
        const std::string g = op_group(step_name(list[i].op, list[i].name));
        predicted[g] += share * static_cast<double>(times) * secs[i];
        class_seconds[g][to_string(list[i].cls)] += share * static_cast<double>(times) * secs[i];
      }
    });
  }
  add_measured_groups(out, predicted, class_seconds, steps, warm_up);
  return out;
}

std::vector<std::pair<std::string, std::string>> comparison_files(const Comparison& cmp, const std::string& model,
                                                                  const std::string& mesh, const std::string& cluster) {
  nlohmann::json rows = nlohmann::json::array();
  std::string csv = "group,class,predicted_seconds,measured_seconds\n";
  for (const auto& g : cmp.groups) {
    rows.push_back({{"group", g.group}, {"class", g.cls}, {"predicted_seconds", g.predicted}, {"measured_seconds", g.measured}});
    csv += g.group + "," + g.cls + "," + std::to_string(g.predicted) + "," + std::to_string(g.measured) + "\n";
  }
  const nlohmann::json doc = {{"model", model}, {"mesh", mesh}, {"cluster", cluster},
                              {"predicted_step_seconds", cmp.estimate.step_seconds},
                              {"measured_step_seconds", cmp.measured_step_seconds}, {"groups", rows}};
  return {{"report.csv", csv}, {"report.json", doc.dump(2) + "\n"}};
}

double load_average_1min() {
  std::ifstream f("/proc/loadavg");
  double v = -1;
  if (!(f >> v)) return -1;
  return v;
}

}  // namespace scanshard
