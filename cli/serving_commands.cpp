// cli/serving_commands.cpp — see serving_commands.hpp.
#include "cli/serving_commands.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/plan_options.hpp"
#include "planner/search.hpp"
#include "program/output_file.hpp"
#include "program/yaml_reader.hpp"
#include "reports/format.hpp"
#include "sim/inference.hpp"

namespace scanshard {

void ServingFlags::add_to(CLI::App& cmd, bool batch_flag) {
  cmd.add_option("--workload", workload, "Inference instead of training: prefill | decode | generate");
  cmd.add_option("--prompt-len", prompt_len, "Inference: prompt tokens per sequence (default 2048)");
  cmd.add_option("--sample-len", sample_len, "Inference: tokens sampled per sequence (default 256)");
  if (batch_flag) cmd.add_option("--batch", batch, "Inference: sequences per replica, or `max` (the largest that fits)");
}

Workload ServingFlags::parsed_workload() const {
  std::string allowed;
  for (const auto& [name, w] : kWorkloadNames) {
    if (workload == name) return w;
    allowed += (allowed.empty() ? "" : " | ") + std::string(name);
  }
  throw ConfigError("--workload: unknown value '" + workload + "' (one of: " + allowed + ")");
}

void ServingFlags::check_unused() const {
  auto refuse = [](bool given, const char* flag) {
    if (given) throw ConfigError(std::string(flag) + ": an inference flag; give --workload prefill|decode|generate with it");
  };
  refuse(prompt_len.has_value(), "--prompt-len");
  refuse(sample_len.has_value(), "--sample-len");
  refuse(!batch.empty(), "--batch");
}

namespace {
std::int64_t positive(const std::optional<std::int64_t>& v, std::int64_t fallback, const char* flag) {
  if (!v) return fallback;
  if (*v < 1) throw ConfigError(std::string(flag) + ": must be a positive number of tokens, got " + std::to_string(*v));
  return *v;
}
}  // namespace

ServingShape ServingFlags::shape(const Plan& p, bool from_file, bool* batch_is_max) const {
  ServingShape s;
  s.prompt_len = positive(prompt_len, 2048, "--prompt-len");
  s.sample_len = positive(sample_len, 256, "--sample-len");
  if (batch_is_max) *batch_is_max = batch == "max";
  if (batch == "max") {
    if (!batch_is_max) throw ConfigError("--batch: 'max' is for simulate; plan searches the batch itself");
    s.batch = p.mesh[Axis::pipeline];
  } else if (!batch.empty()) {
    char* end = nullptr;
    const long long v = std::strtoll(batch.c_str(), &end, 10);
    if (*end || v < 1) throw ConfigError("--batch: '" + batch + "' is not a positive number of sequences (or `max`)");
    s.batch = v;
  } else {
    s.batch = from_file && p.global_batch > 0 ? std::max<std::int64_t>(1, p.global_batch / std::max<std::int64_t>(1, p.replicas())) : 1;
  }
  return s;
}

namespace {

std::string pct(double part, double whole) {
  char b[16];
  std::snprintf(b, sizeof b, "%.1f %%", whole > 0 ? 100 * part / whole : 0.0);
  return b;
}

nlohmann::json buckets_json(const std::array<double, kBucketCount>& b) {
  nlohmann::json j = nlohmann::json::object();
  for (int k = 0; k < kBucketCount; ++k)
    if (b[k] > 0) j[to_string(static_cast<Bucket>(k))] = b[k];
  return j;
}

nlohmann::json estimate_json(const InferenceEstimate& e, const ServingShape& s, const Plan& p, std::int64_t max_batch) {
  const auto& m = e.memory;
  return {{"mesh", p.mesh.describe()},
          {"batch_per_replica", s.batch},
          {"replicas", p.replicas()},
          {"prompt_len", s.prompt_len},
          {"sample_len", s.sample_len},
          {"ttft_seconds", e.ttft_seconds},
          {"per_token_seconds", e.per_token_seconds},
          {"generate_seconds", e.generate_seconds},
          {"prefill_tokens_per_s", e.prefill_tokens_per_s},
          {"decode_tokens_per_s", e.decode_tokens_per_s},
          {"generate_tokens_per_s", e.generate_tokens_per_s},
          {"prefill_breakdown_seconds", buckets_json(e.prefill_seconds)},
          {"decode_breakdown_seconds", buckets_json(e.decode_seconds)},
          {"memory_stage", e.memory_stage},
          {"memory_bytes", {{"weights", m.weights_bytes}, {"kv_cache", m.kv_cache_bytes}, {"recurrent_state", m.state_bytes},
                            {"activations", m.activations_bytes}, {"total", m.total_bytes()}, {"capacity", e.capacity_bytes},
                            {"limit", e.limit_bytes}}},
          {"fits", e.fits},
          {"max_batch_per_replica", max_batch}};
}

void print_estimate(const InferenceEstimate& e, Workload w, const ServingShape& s, const ModelSpec& m, const ClusterSpec& c,
                    const Plan& p, std::int64_t max_batch) {
  std::cout << "model   " << m.name << "  (" << format_count(count_parameters(m).total) << " parameters)\n"
            << "cluster " << c.name << "  (" << c.devices() << " x " << c.chip.name << ", " << c.topology.describe() << ")\n"
            << "serving mesh " << p.mesh.describe() << " (" << p.replicas() << (p.replicas() == 1 ? " replica" : " replicas")
            << "), batch " << s.batch << " per replica, prompt " << s.prompt_len << " + sample " << s.sample_len << " tokens, "
            << to_string(p.act_dtype) << "; workload " << to_string(w) << "\n\n";
  char line[200];
  const bool prefill = w != Workload::decode, decode = w != Workload::prefill;
  if (prefill) {
    std::snprintf(line, sizeof line, "time to first token  %s   prefill %s tokens/s\n", format_seconds(e.ttft_seconds).c_str(),
                  format_si(e.prefill_tokens_per_s, "").c_str());
    std::cout << line;
  }
  if (decode) {
    std::snprintf(line, sizeof line, "per-token latency    %s   decode %s tokens/s   (mean over the %lld sampled tokens)\n",
                  format_seconds(e.per_token_seconds).c_str(), format_si(e.decode_tokens_per_s, "").c_str(),
                  static_cast<long long>(s.sample_len));
    std::cout << line;
  }
  if (w == Workload::generate) {
    std::snprintf(line, sizeof line, "generate             %s   %s sampled tokens/s\n", format_seconds(e.generate_seconds).c_str(),
                  format_si(e.generate_tokens_per_s, "").c_str());
    std::cout << line;
  }
  std::cout << "\n";
  Table t({"where the time goes", "prefill", "share", "decode per token", "share"}, {false, true, true, true, true});
  for (int b = 0; b < kBucketCount; ++b) {
    const double f = prefill ? e.prefill_seconds[b] : 0, d = decode ? e.decode_seconds[b] : 0;
    if (f <= 0 && d <= 0) continue;
    t.add({to_string(static_cast<Bucket>(b)), prefill ? format_seconds(f) : "", prefill ? pct(f, e.ttft_seconds) : "",
           decode ? format_seconds(d) : "", decode ? pct(d, e.per_token_seconds) : ""});
  }
  std::cout << t.str() << "\n";
  const auto& mem = e.memory;
  Table mt({"memory per device (stage " + std::to_string(e.memory_stage) + ")", "bytes"}, {false, true});
  mt.add({"weights", format_bytes(mem.weights_bytes)});
  mt.add({"KV cache (" + std::to_string(s.context()) + " tokens)", format_bytes(mem.kv_cache_bytes)});
  mt.add({"recurrent state", format_bytes(mem.state_bytes)});
  mt.add({"activations", format_bytes(mem.activations_bytes)});
  mt.add({"total", format_bytes(mem.total_bytes()) + " of " + format_bytes(e.limit_bytes)});
  std::cout << mt.str() << "\n";
  std::cout << "largest batch per replica that fits: " << max_batch << "\n";
  if (!e.fits)
    std::cout << "\nDOES NOT FIT: needs " << format_bytes(mem.total_bytes()) << " per device, more than the "
              << format_bytes(e.limit_bytes) << " a plan may use (a smaller --batch, tensor or pipeline sharding); exit status "
              << kExitDoesNotFit << "\n";
}

// The serving plan legal for shape s on the cluster, or a ConfigError naming the key.
void check_serving(const ModelSpec& m, const Plan& p, const ServingShape& s, std::int64_t devices) {
  const auto broken = serving_violations(m, p, s, devices);
  if (broken.empty()) return;
  const auto& b = broken.front();
  const std::string key = std::string(b.key).empty() ? "mesh" : b.key;
  const std::string flag = key == "batch" ? "--batch" : key == "prompt_len" ? "--prompt-len" : key == "sample_len" ? "--sample-len" : key;
  throw ConfigError(flag + ": illegal serving plan: rule '" + b.rule + "' failed: " + b.detail);
}

}  // namespace

void run_simulate_serving(const SimulateServing& o, const ModelSpec& m, const ClusterSpec& c, const Plan& plan, bool from_file) {
  const Workload w = o.flags.parsed_workload();
  bool batch_max = false;
  const ServingShape base = o.flags.shape(plan, from_file, &batch_max);
  std::vector<std::int64_t> samples{base.sample_len};
  if (!o.sweep.empty()) samples = parse_sweep_values(o.sweep, "sample_len", "sample length");
  nlohmann::json rows = nlohmann::json::array();
  Table t({"sample_len", "batch", "TTFT", "per-token latency", "decode tokens/s", "generate tokens/s", "memory/device", "largest batch"},
          {true, true, true, true, true, true, true, true});
  bool all_fit = true;
  for (const std::int64_t S : samples) {
    ServingShape s = base;
    s.sample_len = S;
    check_serving(m, plan, s, c.devices());
    const std::int64_t most = max_batch_that_fits(m, plan, s, c.chip);
    if (batch_max) {
      if (most < 1) throw ConfigError("--batch max: not even " + std::to_string(s.batch) + " sequences per replica fit at sample_len " + std::to_string(S));
      s.batch = most;
    }
    const Plan p = serving_plan(plan, s);
    const InferenceEstimate e = simulate_inference(m, p, c, s);
    all_fit = all_fit && e.fits;
    if (o.json) rows.push_back(estimate_json(e, s, p, most));
    else if (o.sweep.empty()) print_estimate(e, w, s, m, c, p, most);
    else
      t.add({std::to_string(S), std::to_string(s.batch), format_seconds(e.ttft_seconds), format_seconds(e.per_token_seconds),
             format_si(e.decode_tokens_per_s, ""), format_si(e.generate_tokens_per_s, ""),
             format_bytes(e.memory.total_bytes()) + (e.fits ? "" : " (over)"), std::to_string(most)});
  }
  if (o.json) {
    nlohmann::json j = {{"model", m.name}, {"cluster", c.name}, {"workload", to_string(w)}};
    if (o.sweep.empty()) j.update(rows.front());
    else j["sweep"] = rows;
    std::cout << j.dump(2) << "\n";
  } else if (!o.sweep.empty()) {
    std::cout << "sample-length sweep: " << m.name << " on " << c.name << ", mesh " << plan.mesh.describe() << ", prompt "
              << base.prompt_len << " tokens" << (batch_max ? ", the largest batch that fits" : "") << "\n\n" << t.str();
  }
  if (!all_fit) {
    std::cout.flush();
    std::exit(kExitDoesNotFit);
  }
}

void run_plan_serving(const PlanServing& o, const ModelSpec& m, const ClusterSpec& c, const std::array<std::int64_t, kAxisCount>& fixed,
                      std::size_t top, DType dtype, bool json, const std::string& out, const std::string& model_name,
                      const std::string& cluster_name, std::int64_t devices) {
  ServingSearchOptions so;
  so.workload = o.flags.parsed_workload();
  so.shape = o.flags.shape(Plan{}, false);
  if (!(o.latency_budget_seconds > 0)) throw ConfigError("--latency-budget: required with --workload, a positive number of seconds per token");
  if (o.max_batch < 0) throw ConfigError("--max-batch: must be positive");
  so.latency_budget_seconds = o.latency_budget_seconds;
  so.max_batch = o.max_batch;
  so.fixed = fixed;
  so.top = top;
  so.dtype = dtype;
  const SearchResult r = search_serving(m, c, so);
  const Candidate* best = r.top.empty() ? nullptr : &r.top.front();
  Plan chosen;
  if (best) {
    chosen = best->plan;
    chosen.model = model_name;
    chosen.cluster = cluster_name;
    chosen.devices = devices;
  }
  auto batch_of = [](const Plan& p) { return p.global_batch / std::max<std::int64_t>(1, p.replicas()); };
  if (json) {
    nlohmann::json j = {{"model", m.name}, {"cluster", c.name}, {"workload", to_string(so.workload)},
                        {"latency_budget_seconds", so.latency_budget_seconds}, {"prompt_len", so.shape.prompt_len},
                        {"sample_len", so.shape.sample_len}, {"considered", r.considered}, {"illegal", r.illegal},
                        {"over_memory", r.over_memory}, {"over_latency", r.bounded}, {"priced", r.priced}, {"why_not", r.why_not}};
    j["top"] = nlohmann::json::array();
    for (const auto& cnd : r.top)
      j["top"].push_back({{"mesh", cnd.plan.mesh.describe()}, {"batch_per_replica", batch_of(cnd.plan)}, {"tokens_per_s", cnd.tokens_per_s},
                          {"per_token_seconds", cnd.latency_seconds}, {"ttft_seconds", cnd.ttft_seconds}, {"memory_bytes", cnd.memory_bytes},
                          {"plan", plan_json(cnd.plan)}});
    if (best) j["plan_yaml"] = plan_to_yaml(chosen);
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "serving " << m.name << " on " << c.name << " (" << c.devices() << " x " << c.chip.name << "): " << to_string(so.workload)
              << ", prompt " << so.shape.prompt_len << " + sample " << so.shape.sample_len << " tokens, per-token latency ≤ "
              << format_seconds(so.latency_budget_seconds) << "\n";
    std::printf("considered %lld serving plans: %lld illegal, %lld over memory, %lld over the latency budget, %lld within it (%.2f s)\n\n",
                static_cast<long long>(r.considered), static_cast<long long>(r.illegal), static_cast<long long>(r.over_memory),
                static_cast<long long>(r.bounded), static_cast<long long>(r.priced), r.seconds);
    std::fflush(stdout);
    if (best) {
      Table t({"#", "mesh", "batch", "tokens/s", "per-token latency", "TTFT", "memory/device"}, {true, false, true, true, true, true, true});
      int i = 0;
      for (const auto& cnd : r.top)
        t.add({std::to_string(++i), cnd.plan.mesh.describe(), std::to_string(batch_of(cnd.plan)), format_si(cnd.tokens_per_s, ""),
               format_seconds(cnd.latency_seconds), format_seconds(cnd.ttft_seconds), format_bytes(cnd.memory_bytes)});
      std::cout << "highest throughput within the budget\n" << t.str() << "\n";
    } else {
      std::cout << "NO SERVING PLAN meets the budget and fits.\n";
    }
    std::cout << "why not\n";
    for (const auto& w : r.why_not) std::cout << "  " << w << "\n";
    if (best && out.empty()) std::cout << "\nchosen plan (save with --out FILE; simulate --workload reads its batch):\n" << plan_to_yaml(chosen);
  }
  if (best && !out.empty()) {
    write_output_file(out, plan_to_yaml(chosen));
    if (!json) std::cout << "\nchosen plan written to " << out << "\n";
  }
  if (!best) throw ConfigError("no serving plan of " + m.name + " on " + c.name + " meets the latency budget and fits (see the reasons above)");
}

}  // namespace scanshard
