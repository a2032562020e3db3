// reports/published.cpp — see published.hpp.
#include "reports/published.hpp"

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <tuple>
#include <set>

#include "program/embedded.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/cost.hpp"

namespace scanshard::published {

const char* to_string(Metric m) {
  switch (m) {
    case Metric::seconds_per_step: return "seconds_per_step";
    case Metric::tflops_per_gpu: return "tflops_per_gpu";
    case Metric::mfu: return "mfu";
    case Metric::relative_step_time: return "relative_step_time";
    case Metric::layer_seconds: return "layer_seconds";
  }
  return "";
}

namespace {

const std::set<std::string> kSearchable = {"micro_batch", "virtual_stages"};

Row parse_row(YamlMap& y, const std::string& file, const std::string& source_id, const std::string& source) {
  Row r;
  r.source_id = source_id;
  r.source = source;
  r.file = file;
  r.id = y.required_string("id");
  r.where = y.required_string("where");
  r.note = y.optional_string("note", "");
  const YAML::Node model = y.raw("model");
  if (!model.IsDefined()) throw y.error("model", "missing (a preset name or a model mapping)");
  r.model = model.IsMap() ? parse_model(model, file)
                          : load_model(resolve_named_path(y.required_string("model"), file), file + ": " + y.key_path("model"));
  r.cluster = load_cluster(resolve_named_path(y.required_string("cluster"), file), file + ": " + y.key_path("cluster"));
  if (y.has("devices")) {  // a slice of the cluster (whole islands or pods, or part of one)
    try {
      r.cluster = cluster_slice(r.cluster, y.required_int("devices"), "devices");
    } catch (const ConfigError& e) {
      throw y.error("devices", e.what());
    }
  }
  const YAML::Node plan = y.raw("plan");
  if (!plan.IsMap()) throw y.error("plan", "expected a mapping of plan keys (mesh, global_batch, seq_len, ...)");
  r.plan = parse_plan(plan, file);
  if (y.has("search")) {
    const YAML::Node s = y.raw("search");
    if (!s.IsSequence()) throw y.error("search", "expected a list of plan keys (micro_batch, virtual_stages)");
    for (const auto& k : s) {
      const std::string key = k.IsScalar() ? k.Scalar() : "";
      if (!kSearchable.count(key)) throw y.error("search", "'" + key + "' cannot be searched (micro_batch, virtual_stages)");
      r.search.push_back(key);
    }
  } else {
    y.raw("search");
  }
  YamlMap pub = y.required_map("published");
  int metrics = 0;
  for (Metric m : {Metric::seconds_per_step, Metric::tflops_per_gpu, Metric::mfu, Metric::relative_step_time, Metric::layer_seconds})
    if (pub.has(to_string(m))) {
      r.metric = m;
      r.value = pub.required_double(to_string(m));
      ++metrics;
    }
  if (metrics != 1)
    throw y.error("published", "needs exactly one of seconds_per_step, tflops_per_gpu, mfu, relative_step_time, layer_seconds");
  if (!(r.value > 0)) throw pub.error(to_string(r.metric), "must be positive");
  const bool per_flop = r.metric == Metric::tflops_per_gpu || r.metric == Metric::mfu;
  if (per_flop && !pub.has("flops"))
    throw pub.error("flops", "a TFLOP/s or MFU figure needs the paper's FLOP formula (megatron_eq3 or palm)");
  if (!per_flop && pub.has("flops")) throw pub.error("flops", "only for tflops_per_gpu or mfu");
  r.formula = pub.optional_choice<FlopConvention, 2>("flops", FlopConvention::megatron_eq3,
                                                     {{{"megatron_eq3", FlopConvention::megatron_eq3}, {"palm", FlopConvention::palm}}});
  r.relative_to = pub.optional_string("relative_to", "");
  if (!r.relative_to.empty() && r.metric != Metric::relative_step_time)
    throw pub.error("relative_to", "only for relative_step_time");
  pub.finish();
  if (r.metric == Metric::relative_step_time && r.relative_to.empty() && r.value != 1.0)
    throw pub.error(to_string(r.metric), "a reference row (no relative_to) is 1 by definition");
  return r;  // an illegal plan is reported by price_row (the rule it breaks), not refused here
}

std::vector<Row> parse_suite_node(const YAML::Node& node, const std::string& file) {
  YamlMap top(node, file, "");
  const std::string id = top.required_string("id");
  const std::string source = top.required_string("source");
  const YAML::Node rows = top.raw("rows");
  if (!rows.IsSequence() || rows.size() == 0) throw top.error("rows", "expected a non-empty list of rows");
  top.finish();
  std::vector<Row> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    YamlMap y(rows[i], file, "rows[" + std::to_string(i) + "]");
    out.push_back(parse_row(y, file, id, source));
    y.finish();
    for (std::size_t j = 0; j + 1 < out.size(); ++j)
      if (out[j].id == out.back().id) throw y.error("id", "'" + out.back().id + "' appears twice in this file");
  }
  for (const auto& r : out) {
    if (r.relative_to.empty()) continue;
    const auto ref = std::find_if(out.begin(), out.end(), [&](const Row& o) { return o.id == r.relative_to; });
    if (ref == out.end() || ref->metric != Metric::relative_step_time || !ref->relative_to.empty())
      throw ConfigError(file + ": row '" + r.id + "': relative_to: '" + r.relative_to +
                        "' is not a reference row (a relative_step_time row without relative_to) of this file");
  }
  return out;
}

}  // namespace

std::vector<Row> parse_suite(const std::string& text, const std::string& file) { return parse_suite_node(parse_yaml(text, file), file); }

// The parsed node keeps the file's own line numbers for error messages (no re-dump).
std::vector<Row> load_suite_file(const std::string& path) {
  std::error_code ec;  // a FIFO or device would block or never end: refuse before opening
  if (!std::filesystem::is_regular_file(path, ec))
    throw ConfigError(path + ": cannot read suite file (" + (std::filesystem::exists(path, ec) ? "not a regular file" : "no such file") + ")");
  return parse_suite_node(load_yaml_file(path), path);
}

std::vector<Row> builtin_suite() {
  std::vector<Row> all;
  for (const auto& f : embedded_files()) {
    if (!f.path.starts_with("configs/published/")) continue;
    auto rows = parse_suite(std::string(f.text), std::string(f.path));
    all.insert(all.end(), rows.begin(), rows.end());
  }
  return all;
}

double published_seconds(const Row& r) {
  const double devices = static_cast<double>(r.plan.mesh.devices());
  switch (r.metric) {
    case Metric::seconds_per_step: return r.value;
    case Metric::tflops_per_gpu: return step_flops(r.formula, r.model, r.plan) / (r.value * 1e12 * devices);
    case Metric::mfu: return step_flops(r.formula, r.model, r.plan) / (r.value * matrix_peak_flops_per_s(r.cluster.chip, DType::bf16) * devices);
    case Metric::relative_step_time: return r.value;
    case Metric::layer_seconds: return r.value;
  }
  return 0;
}

namespace {
// One layer's forward + backward of one micro-batch: the first layer group of the first stage.
double layer_seconds(const Row& r, const Plan& p) {
  const auto stage = lower_stage(r.model, p, 0, 0);
  const Network net(r.cluster, p.mesh);
  const LayerLowering& l = *stage.groups.at(0).lowered;
  return pass_seconds(l.forward, r.cluster, net, p.act_dtype) + pass_seconds(l.backward, r.cluster, net, p.act_dtype);
}
}  // namespace

namespace {

std::vector<std::int64_t> divisors_up_to(std::int64_t n, std::int64_t cap) {
  std::vector<std::int64_t> d;
  for (std::int64_t i = 1; i <= std::min(n, cap); ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

std::vector<std::int64_t> upto(std::int64_t n) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

std::string describe_choice(const Row& r, const Plan& p) {
  std::string s;
  for (const auto& k : r.search) {
    const std::int64_t v = k == "micro_batch" ? p.micro_batch : p.virtual_stages;
    s += (s.empty() ? "" : " ") + k + "=" + std::to_string(v);
  }
  return s;
}

}  // namespace

Priced price_row(const Row& r) {
  Priced out;
  out.row = &r;
  const bool search_mb = std::count(r.search.begin(), r.search.end(), "micro_batch") > 0;
  const bool search_v = std::count(r.search.begin(), r.search.end(), "virtual_stages") > 0;
  const std::int64_t pp = r.plan.mesh[Axis::pipeline];
  const auto mbs = search_mb ? divisors_up_to(r.plan.local_batch(), 16) : std::vector<std::int64_t>{r.plan.micro_batch};
  const auto vs = search_v && pp > 1 ? upto(std::min<std::int64_t>(8, r.model.depth / pp)) : std::vector<std::int64_t>{r.plan.virtual_stages};
  double best = std::numeric_limits<double>::infinity();
  std::string last_reason = "no candidate";
  std::optional<std::pair<Plan, Estimate>> fastest_over;  // the fastest candidate over memory
  const Topology topology(r.cluster);  // the cluster's graph, once for every candidate
  for (auto mb : mbs)
    for (auto v : vs) {
      Plan p = r.plan;
      p.micro_batch = mb;
      p.virtual_stages = v;
      if (const char* rule = plan_violation(r.model, p, r.cluster.devices())) {
        last_reason = std::string("rule '") + rule + "'";
        continue;
      }
      const Estimate e = simulate(stage_summaries(r.model, p), p, r.cluster, Network(topology, r.cluster, p.mesh, p.placement));
      // A layer timed alone (layer_seconds) was measured without the rest of the model in memory.
      if (!e.memory.fits && r.metric != Metric::layer_seconds) {
        if (!fastest_over || e.step_seconds < fastest_over->second.step_seconds) fastest_over.emplace(p, e);
        continue;
      }
      if (e.step_seconds < best) {
        best = e.step_seconds;
        out.plan = p;
        out.estimate = e;
        out.priced = true;
      }
    }
  // The paper ran it, so it fitted: when scanshard's accounting disagrees, price the fastest
  // candidate, as the authors tuned it, and say by how much it is over (a memory-model error, not
  // a reason to drop the row).
  if (!out.priced && fastest_over) {
    std::tie(out.plan, out.estimate) = *fastest_over;
    out.priced = true;
    char b[200];
    const double gib = 1024.0 * 1024.0 * 1024.0;
    std::snprintf(b, sizeof b, "over memory in scanshard's accounting: %.1f GiB per device, the limit is %.1f (%.0f %% of %.1f GiB)",
                  out.estimate.memory.total_bytes / gib, out.estimate.memory.limit_bytes / gib, 100 * kMaxMemoryFraction,
                  out.estimate.memory.capacity_bytes / gib);
    out.why = b;
  }
  if (!out.priced) out.why = last_reason;
  else out.searched = describe_choice(r, out.plan);
  return out;
}

std::vector<Priced> price_suite(const std::vector<Row>& rows) {
  std::vector<Priced> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(price_row(r));
  std::map<std::pair<std::string, std::string>, const Priced*> by_id;
  for (const auto& p : out) by_id[{p.row->file, p.row->id}] = &p;
  for (auto& p : out) {
    const Row& r = *p.row;
    if (!p.priced) continue;
    if (r.metric == Metric::layer_seconds) {
      p.predicted = layer_seconds(r, p.plan);
      p.published = r.value;
    } else if (r.metric != Metric::relative_step_time) {
      p.predicted = p.estimate.step_seconds;
      p.published = published_seconds(r);
    } else {
      const Priced* ref = r.relative_to.empty() ? &p : by_id.at({r.file, r.relative_to});
      if (!ref->priced) {
        p.priced = false;
        p.why = "its reference row '" + ref->row->id + "' could not be priced";
        continue;
      }
      p.predicted = p.estimate.step_seconds / ref->estimate.step_seconds;
      p.published = r.value;
    }
    p.error = p.predicted / p.published - 1;
  }
  return out;
}

std::vector<SourceError> source_errors(const std::vector<Priced>& priced) {
  std::vector<SourceError> out;
  SourceError all{"all"};
  auto add = [](SourceError& s, double e) {
    s.mean_abs += std::abs(e);
    s.bias += e;
    s.max_abs = std::max(s.max_abs, std::abs(e));
    ++s.rows;
  };
  for (const auto& p : priced) {
    // A reference row of relative times is 1 by definition: nothing to score.
    if (!p.priced || (p.row->metric == Metric::relative_step_time && p.row->relative_to.empty())) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const SourceError& s) { return s.source_id == p.row->source_id; });
    if (it == out.end()) it = out.insert(out.end(), SourceError{p.row->source_id});
    add(*it, p.error);
    add(all, p.error);
  }
  out.push_back(all);
  for (auto& s : out)
    if (s.rows > 0) {
      s.mean_abs /= static_cast<double>(s.rows);
      s.bias /= static_cast<double>(s.rows);
    }
  return out;
}

}  // namespace scanshard::published
