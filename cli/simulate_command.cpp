// cli/simulate_command.cpp — `scanshard simulate`: price a plan for a model on a cluster, print
// step time, tokens/s, MFU, the per-bucket breakdown and memory per device; `--sweep seq=...`
// repeats it over sequence lengths at fixed tokens per batch (the Griffin paper's Figure 3 setup).
// --workload prefill|decode|generate prices serving instead (cli/serving_commands.hpp).
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "reports/format.hpp"
#include "cli/plan_options.hpp"
#include "cli/serving_commands.hpp"
#include "program/yaml_reader.hpp"
#include "reports/sweep.hpp"
#include "reports/timeline.hpp"
#include "program/output_file.hpp"
#include "sim/simulate.hpp"

namespace scanshard {
namespace {

struct SimulateOptions {
  PlanOptions plan;
  bool json = false;
  std::string sweep;
  ServingFlags serving;  // --workload ...: inference (cli/serving_commands.hpp)
  std::optional<std::int64_t> devices;
  std::string timeline;
};

nlohmann::json estimate_json(const Estimate& e, const Plan& p) {
  nlohmann::json breakdown = nlohmann::json::object();
  for (int b = 0; b < kBucketCount; ++b) breakdown[to_string(static_cast<Bucket>(b))] = e.seconds[b];
  const auto& m = e.memory;
  return {{"mesh", p.mesh.describe()}, {"seq_len", p.seq_len}, {"global_batch", p.global_batch},
          {"micro_batch", p.micro_batch}, {"plan", plan_json(p)}, {"step_seconds", e.step_seconds}, {"tokens_per_s", e.tokens_per_s},
          {"mfu", e.mfu}, {"bottleneck", e.bottleneck}, {"breakdown_seconds", breakdown},
          {"memory_bytes", {{"params", m.params_bytes}, {"grads", m.grads_bytes}, {"optimizer", m.optimizer_bytes},
                            {"activations", m.activations_bytes}, {"scan_state", m.state_bytes},
                            {"buffers", m.buffers_bytes}, {"total", m.total_bytes}, {"capacity", m.capacity_bytes}, {"limit", m.limit_bytes}}},
          {"fits", m.fits}};
}

void print_estimate(const Estimate& e, const ModelSpec& m, const ClusterSpec& c, const Plan& p) {
  std::cout << "model   " << m.name << "  (" << format_count(count_parameters(m).total) << " parameters)\n"
            << "cluster " << c.name << "  (" << c.devices() << " x " << c.chip.name << ", " << c.topology.describe() << ")\n"
            << "plan    mesh " << p.mesh.describe() << ", zero " << p.zero_stage
            << (p.gradient_sync != GradientSync::every_microbatch ? std::string(" (gradients: ") + to_string(p.gradient_sync) + ")" : "")
            << ", batch " << p.global_batch
            << " x " << p.seq_len << " tokens, micro-batch " << p.micro_batch << " (" << p.micro_batches()
            << " per step), remat " << to_string(p.remat);
  if (m.has_scan()) std::cout << ", scan " << to_string(p.scan);
  if (m.has_scan() && p.mesh[Axis::sequence] > 1) std::cout << ", carry " << to_string(p.carry);
  std::cout << ", " << to_string(p.act_dtype);
  if (p.mesh[Axis::tensor] > 1) std::cout << ", tensor_comm " << to_string(p.tensor_comm);
  if (p.virtual_stages > 1) std::cout << ", " << p.virtual_stages << " chunks per stage (interleaved 1f1b)";
  if (p.attention != AttentionKernel::flash) std::cout << ", attention " << to_string(p.attention);
  std::cout << "\n\n";
  char line[160];
  std::snprintf(line, sizeof line, "step time  %s   tokens/s %s   MFU %.1f %%   bottleneck: %s\n\n",
                format_seconds(e.step_seconds).c_str(), format_si(e.tokens_per_s, "").c_str(), 100 * e.mfu, e.bottleneck.c_str());
  std::cout << line;
  Table t({"where the time goes", "seconds", "share"}, {false, true, true});
  for (int b = 0; b < kBucketCount; ++b) {
    if (e.seconds[b] <= 0) continue;
    char share[16];
    std::snprintf(share, sizeof share, "%.1f %%", 100 * e.seconds[b] / e.step_seconds);
    t.add({to_string(static_cast<Bucket>(b)), format_seconds(e.seconds[b]), share});
  }
  std::cout << t.str() << "\n";
  const auto& mem = e.memory;
  Table mt({"memory per device (most loaded stage)", "bytes"}, {false, true});
  mt.add({"parameters", format_bytes(mem.params_bytes)});
  mt.add({"gradients", format_bytes(mem.grads_bytes)});
  mt.add({"optimizer state", format_bytes(mem.optimizer_bytes)});
  mt.add({"activations", format_bytes(mem.activations_bytes)});
  mt.add({"scan state", format_bytes(mem.state_bytes)});
  mt.add({"comm buffers", format_bytes(mem.buffers_bytes)});
  mt.add({"total", format_bytes(mem.total_bytes) + " of " + format_bytes(mem.limit_bytes)});
  std::cout << mt.str();
  char limit[96];
  std::snprintf(limit, sizeof limit, "%s a plan may use (%.0f %% of the chip's %s)", format_bytes(mem.limit_bytes).c_str(),
                100 * kMaxMemoryFraction, format_bytes(mem.capacity_bytes).c_str());
  if (!mem.fits)
    std::cout << "\nDOES NOT FIT: needs " << format_bytes(mem.total_bytes) << " per device, more than the " << limit
              << " (try zero_stage 3, remat, or more tensor/pipeline sharding); exit status " << kExitDoesNotFit << "\n";
  else
    std::cout << "\nfits in the " << limit << "\n";
}

void run_sweep(const SimulateOptions& o, const ModelSpec& m, const ClusterSpec& c, Plan base) {
  const auto lens = parse_sweep_values(o.sweep, "seq", "sequence length");
  const double tokens = static_cast<double>(base.global_batch) * static_cast<double>(base.seq_len);
  nlohmann::json arr = nlohmann::json::array();
  Table t({"seq_len", "global_batch", "step time", "relative", "tokens/s", "MFU", "bottleneck"},
          {true, true, true, true, true, true, false});
  double first = 0;
  for (const auto& [T, p, e] : seq_len_sweep(m, c, base, lens, tokens, "--sweep")) {
    if (first == 0) first = e.step_seconds;
    char rel[16], mfu[16];
    std::snprintf(rel, sizeof rel, "%.3f", e.step_seconds / first);
    std::snprintf(mfu, sizeof mfu, "%.1f %%", 100 * e.mfu);
    t.add({std::to_string(T), std::to_string(p.global_batch), format_seconds(e.step_seconds), rel,
           format_si(e.tokens_per_s, ""), mfu, e.bottleneck});
    auto j = estimate_json(e, p);
    j["relative_to_first"] = e.step_seconds / first;
    arr.push_back(j);
  }
  if (o.json) std::cout << nlohmann::json{{"model", m.name}, {"cluster", c.name}, {"sweep", arr}}.dump(2) << "\n";
  else std::cout << "sequence-length sweep at " << format_si(tokens, "tokens") << " per batch: " << m.name << " on " << c.name << "\n\n" << t.str();
}

void run_simulate(const SimulateOptions& o) {
  Plan base = o.plan.load_base();
  if (o.devices) base.devices = *o.devices;  // a slice of the cluster (cluster_slice checks it)
  const ModelSpec m = o.plan.resolve_model(base);
  const ClusterSpec c = o.plan.resolve_cluster(base);
  Plan p = o.plan.resolve_plan(c.devices());
  if (o.serving.active()) {
    return run_simulate_serving({o.serving, o.sweep, o.json}, m, c, p, !o.plan.plan_file.empty());
  }
  o.serving.check_unused();
  o.plan.check(m, p, c.devices());
  if (!o.sweep.empty() && !o.timeline.empty()) throw ConfigError("--timeline: writes one plan's timeline; not with --sweep");
  if (!o.sweep.empty()) return run_sweep(o, m, c, p);
  const Estimate e = simulate(m, p, c);
  if (!o.timeline.empty()) {  // the same pricing laid out in time (sim/timeline.hpp)
    const nlohmann::json other = {{"kind", "predicted"}, {"model", m.name}, {"cluster", c.name}, {"mesh", p.mesh.describe()},
                                  {"schedule", to_string(p.schedule)}, {"micro_batches", p.micro_batches()},
                                  {"step_seconds", e.step_seconds}};
    write_output_file(o.timeline, trace_event_file(trace_events(predicted_timeline(m, p, c)), other).dump() + "\n");
  }
  if (o.json) {
    auto j = estimate_json(e, p);
    j["model"] = m.name;
    j["cluster"] = c.name;
    std::cout << j.dump(2) << "\n";
  } else {
    print_estimate(e, m, c, p);
  }
  if (!e.memory.fits) {
    std::cout.flush();
    std::exit(kExitDoesNotFit);
  }
}

}  // namespace

void register_simulate_command(CLI::App& app) {
  auto o = std::make_shared<SimulateOptions>();
  auto* cmd = app.add_subcommand("simulate", "Price a plan: step time, tokens/s, MFU, breakdown and memory per device");
  o->plan.add_to(*cmd);
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_option("--sweep", o->sweep,
                  "seq=2048,4096,8192: sweep sequence length at fixed tokens per batch; with --workload: sample_len=256,512,...");
  cmd->add_option("--devices", o->devices, "Use the first N devices of the cluster (a slice)");
  o->serving.add_to(*cmd, true);
  cmd->add_option("--timeline", o->timeline,
                  "write the predicted timeline (per pipeline stage its passes per micro-batch, the bubble, overlapped "
                  "communication, the step end) as Chrome trace-event JSON for Perfetto / chrome://tracing");
  cmd->callback([o] { run_simulate(*o); });
}

}  // namespace scanshard
