// reports/validation.cpp — see validation.hpp.
#include "reports/validation.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include <yaml-cpp/yaml.h>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/simulate.hpp"

namespace scanshard {
namespace {

struct Knobs {
  int zero = 0;
  Remat remat = Remat::none;
  CarryScheme carry = CarryScheme::ring;
  Schedule schedule = Schedule::one_f_one_b;
  TensorComm tensor_comm = TensorComm::allreduce;
  std::int64_t virtual_stages = 1;
  DType dtype = DType::fp32;  // parameters and activations; the plan default (bf16) is stated where wanted
};

Plan make_plan(const std::string& mesh, std::int64_t global_batch, std::int64_t micro_batch, std::int64_t seq_len, Knobs k) {
  Plan p;
  p.mesh = parse_mesh(mesh, "validate");
  p.global_batch = global_batch;
  p.micro_batch = micro_batch;
  p.seq_len = seq_len;
  p.zero_stage = k.zero;
  p.remat = k.remat;
  p.carry = k.carry;
  p.schedule = k.schedule;
  p.tensor_comm = k.tensor_comm;
  p.virtual_stages = k.virtual_stages;
  p.param_dtype = p.act_dtype = k.dtype;  // fp32 unless the row says bf16 (the runner executes either)
  p.overlap = false;  // the runner reduces gradients after the last backward, not during it
  return p;
}

}  // namespace

ModelSpec validation_variant(const std::string& preset, std::int64_t width, std::int64_t depth) {
  ModelSpec m = load_model(preset);
  if (width == m.width && depth == m.depth) return m;
  std::ostringstream y;
  y << "name: " << preset << "-w" << width << "-l" << depth << "\n"
    << "family: " << to_string(m.family) << "\n"
    << "width: " << width << "\ndepth: " << depth << "\nvocab: " << m.vocab << "\n"
    << "mlp_expansion: 3\ntied_embeddings: true\n";
  if (m.family != Family::mqa)
    y << "recurrent_width: " << width << "\ngate_blocks: " << m.gate_blocks << "\nconv_width: " << m.conv_width << "\n";
  if (m.family != Family::hawk)
    y << "heads: " << width / 32 << "\nhead_dim: 32\nkv_heads: 1\nwindow: " << m.window << "\n";
  return parse_model(parse_yaml(y.str(), "validate: " + preset + " variant"), "validate: " + preset + " variant");
}

std::vector<PlanCase> validation_plan_set(bool quick) {
  const ModelSpec g = load_model("griffin-tiny"), h = load_model("hawk-tiny"), q = load_model("mqa-tiny");
  const ModelSpec r4 = load_model("rwkv4-tiny"), r6 = load_model("rwkv6-tiny"), gpt = load_model("gpt-tiny");
  const ModelSpec gw = validation_variant("griffin-tiny", 256, 3), hw = validation_variant("hawk-tiny", 256, 2),
                  qw = validation_variant("mqa-tiny", 256, 2), gd = validation_variant("griffin-tiny", 128, 6);
  const Knobs none{}, z1{1}, z2{2}, z3{3}, blk{0, Remat::block}, sel{0, Remat::elementwise},
      gather{0, Remat::none, CarryScheme::allgather}, gpipe{0, Remat::none, CarryScheme::ring, Schedule::gpipe},
      bf16{0, Remat::none, CarryScheme::ring, Schedule::one_f_one_b, TensorComm::allreduce, 1, DType::bf16},
      rs_ag{0, Remat::none, CarryScheme::ring, Schedule::one_f_one_b, TensorComm::rs_ag},
      interleaved{0, Remat::none, CarryScheme::ring, Schedule::one_f_one_b, TensorComm::allreduce, 2};
  // rwkv4-tiny with a vocabulary of 257 (a prime; byte tokens fit): no tensor size divides it, so
  // rs_ag's head runs on uneven vocabulary shards.
  ModelSpec r4v = r4;
  r4v.vocab = 257;
  r4v.name = "rwkv4-tiny-v257";
  struct Row { const ModelSpec* m; const char* mesh; std::int64_t G, mb, T; Knobs k; };
  const std::vector<Row> rows = {
      {&g, "data=1", 4, 4, 128, none},   {&g, "data=1", 8, 4, 128, none},     {&g, "data=1", 4, 2, 256, none},
      {&g, "data=2", 8, 4, 128, none},   {&g, "fsdp=2", 8, 4, 128, z1},       {&g, "data=2", 16, 4, 64, none},
      {&g, "data=2", 4, 1, 256, none},   {&g, "data=1", 16, 8, 32, none},     {&g, "tensor=2", 4, 4, 128, none},
      {&g, "sequence=2", 4, 4, 128, none}, {&g, "sequence=2", 4, 2, 256, gather}, {&g, "data=1", 4, 4, 128, blk},
      {&g, "data=1", 4, 4, 128, sel},    {&g, "fsdp=2", 8, 2, 128, z2},       {&g, "fsdp=2", 8, 4, 128, z3},
      {&h, "data=1", 4, 4, 128, none},   {&h, "data=1", 8, 8, 64, none},      {&h, "data=2", 8, 2, 128, none},
      {&h, "fsdp=2", 4, 2, 256, none},   {&h, "sequence=2", 4, 2, 256, none}, {&h, "data=2", 8, 4, 128, blk},
      {&q, "data=1", 4, 4, 128, none},   {&q, "data=1", 2, 2, 512, none},     {&q, "data=2", 8, 4, 128, none},
      {&q, "fsdp=2", 4, 1, 256, z1},     {&q, "data=2", 4, 2, 256, none},     {&q, "tensor=2", 4, 4, 128, none},
      {&gw, "data=1", 4, 4, 128, none},  {&gw, "data=2", 8, 4, 128, none},    {&gw, "tensor=2", 4, 2, 128, none},
      {&hw, "data=1", 4, 2, 128, none},  {&hw, "data=2", 4, 2, 256, none},    {&qw, "data=1", 4, 4, 128, none},
      {&qw, "data=2", 8, 2, 128, none},  {&gd, "data=2", 8, 4, 128, none},    {&gd, "data=1", 4, 4, 128, blk},
      {&h, "pipeline=2", 4, 1, 128, none}, {&q, "pipeline=2", 8, 2, 128, gpipe}, {&gd, "pipeline=2", 8, 2, 128, none},
      {&r4, "data=1", 4, 4, 128, none},  {&r4, "data=2", 8, 4, 128, none},    {&r4, "tensor=2", 4, 4, 128, none},
      {&r6, "data=1", 4, 4, 128, none},  {&r6, "data=2", 8, 4, 128, none},    {&r6, "tensor=2", 4, 2, 128, none},
      {&q, "sequence=2", 4, 4, 128, none}, {&r4, "sequence=2", 4, 2, 128, gather},
      {&r6, "sequence=2", 4, 4, 128, none}, {&gpt, "data=1", 8, 8, 128, none}, {&gpt, "tensor=2", 8, 4, 128, none},
      {&gpt, "data=2", 8, 4, 128, blk},
      {&g, "data=2", 8, 4, 128, bf16},  // bf16 storage and messages, gradients reduced in bf16 (P04 in fp32)
      // Issue 28's kinds: interleaved 1F1B (2 chunks per stage, 4 micro-batches); a local-attention
      // window (32) longer than a sequence shard (24 tokens: the halo spans both shards); rs_ag for
      // RWKV-4 and RWKV-6; rs_ag with a vocabulary tensor = 2 does not divide.
      {&gpt, "pipeline=2", 8, 2, 128, interleaved}, {&g, "sequence=2", 8, 4, 48, none},
      {&r4, "tensor=2", 4, 4, 128, rs_ag}, {&r6, "tensor=2", 4, 2, 128, rs_ag}, {&r4v, "tensor=2", 4, 4, 128, rs_ag},
  };
  std::vector<PlanCase> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (quick && i % 3 != 0) continue;
    char id[8];
    std::snprintf(id, sizeof id, "P%02zu", i + 1);
    PlanCase c{id, *rows[i].m, make_plan(rows[i].mesh, rows[i].G, rows[i].mb, rows[i].T, rows[i].k), std::nullopt};
    c.plan.model = c.model.name;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<PlanCase> decode_plan_set(bool quick) {
  const ModelSpec g = load_model("griffin-tiny"), h = load_model("hawk-tiny"), q = load_model("mqa-tiny");
  const ModelSpec r4 = load_model("rwkv4-tiny"), r6 = load_model("rwkv6-tiny"), tr = load_model("transformer-tiny");
  // 12.6 M parameters (50 MB in fp32): more than the 32 MiB last-level cache, so each token streams
  // the weights from DRAM, where the tiny models' stay in cache
  const ModelSpec hw = validation_variant("hawk-tiny", 512, 4);
  struct Row { const ModelSpec* m; const char* mesh; std::int64_t B, P, S; };
  const std::vector<Row> rows = {
      {&g, "tensor=1", 1, 64, 32},     // batch 1; the local cache full from the start (P > window 32)
      {&g, "tensor=2", 4, 1024, 32},   // local KV cache capped at the window (32 rows)
      {&h, "tensor=1", 4, 64, 32},     // recurrent state only
      {&q, "tensor=1", 1, 2048, 32},   // global KV cache of 2048 rows
      {&q, "tensor=2", 4, 512, 32},    // one K/V head replicated on both tensor ranks
      {&r4, "tensor=2", 1, 64, 32},    // WKV-4 state, channel mix all-gathered
      {&r6, "tensor=1", 4, 256, 32},   // WKV-6 matrix state
      {&tr, "tensor=1", 4, 1024, 32},  // GQA (2 K/V heads), rotary, a global cache
      {&hw, "tensor=1", 1, 16, 32},    // weights streamed from memory (GEMVs)
  };
  std::vector<PlanCase> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (quick && i % 2 != 0) continue;
    char id[8];
    std::snprintf(id, sizeof id, "D%02zu", i + 1);
    const ServingShape shape{rows[i].B, rows[i].P, rows[i].S};
    PlanCase c{id, *rows[i].m, serving_plan(make_plan(rows[i].mesh, rows[i].B, rows[i].B, shape.context(), Knobs{}), shape), shape};
    c.plan.model = c.model.name;
    out.push_back(std::move(c));
  }
  return out;
}

std::string describe_plan(const PlanCase& c) {
  if (c.decode) {
    const ServingShape& s = *c.decode;
    const std::string mesh = c.plan.mesh.devices() == 1 ? "tensor=1" : c.plan.mesh.describe();
    return c.model.name + " decode " + mesh + " B=" + std::to_string(s.batch) + " P=" +
           std::to_string(s.prompt_len) + " S=" + std::to_string(s.sample_len);
  }
  // the set's plans are fp32 unless they say bf16 (plan_summary leaves dtypes out)
  return c.model.name + " " + plan_summary(c.plan, true, c.model.has_scan()) + (c.plan.act_dtype == DType::bf16 ? " bf16" : "");
}

namespace {
// measurements: `key` of a calibrated cluster file, or 0.
double calibrated_measurement(const std::string& cluster_arg, const char* key) {
  if (!looks_like_path(cluster_arg)) return 0;
  try {
    const YAML::Node m = YAML::LoadFile(cluster_arg)["measurements"];
    const double v = m && m[key] ? m[key].as<double>() : 0;
    return std::isfinite(v) && v > 0 ? v : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// median, min and max of the ratios (none: all 0)
void summarize_ratios(const std::vector<double>& ratios, double& median, double& min, double& max) {
  if (ratios.empty()) return;
  median = stats::median(ratios);
  min = *std::min_element(ratios.begin(), ratios.end());
  max = *std::max_element(ratios.begin(), ratios.end());
}
}  // namespace

double calibrated_probe_seconds(const std::string& cluster_arg) { return calibrated_measurement(cluster_arg, "probe_seconds"); }

double calibrated_memory_probe_seconds(const std::string& cluster_arg) {
  return calibrated_measurement(cluster_arg, "memory_probe_seconds");
}

MemoryDrift memory_drift(double seconds_at_calibration, const std::vector<double>& seconds_now) {
  MemoryDrift d;
  if (!(seconds_at_calibration > 0) || !std::isfinite(seconds_at_calibration)) return d;
  d.seconds_at_calibration = seconds_at_calibration;
  std::vector<double> ratios;
  for (double s : seconds_now)
    if (std::isfinite(s) && s > 0) {
      d.seconds_now.push_back(s);
      ratios.push_back(s / seconds_at_calibration);
    }
  summarize_ratios(ratios, d.ratio_median, d.ratio_min, d.ratio_max);
  return d;
}

std::vector<std::pair<double, double>> calibrated_all_reduce_samples(const std::string& cluster_arg, int ranks) {
  if (!looks_like_path(cluster_arg)) return {};
  std::vector<std::pair<double, double>> out;
  try {
    const YAML::Node m = YAML::LoadFile(cluster_arg)["measurements"];
    if (!m || !m["ranks"] || m["ranks"].as<int>() != ranks) return {};
    const YAML::Node s = m["mpi"]["all_reduce"]["samples"];
    if (!s || !s.IsSequence()) return {};
    for (const auto& row : s) {
      const double bytes = row[0].as<double>(), seconds = row[1].as<double>();
      if (std::isfinite(seconds) && seconds > 0 && bytes >= 64.0 * 1024 * 0.999 && bytes <= 8.0 * 1024 * 1024 * 1.001)  // the file's 6 digits round 8 MiB up
        out.emplace_back(bytes, seconds);
    }
  } catch (const std::exception&) {
    return {};  // free-form section: a malformed value just means no reference
  }
  return out;
}

NetworkDrift network_drift(const std::vector<std::pair<double, double>>& calibration, const std::vector<double>& seconds_now) {
  NetworkDrift d;
  std::vector<double> ratios;
  for (std::size_t i = 0; i < calibration.size() && i < seconds_now.size(); ++i) {
    d.bytes.push_back(calibration[i].first);
    d.seconds_at_calibration.push_back(calibration[i].second);
    d.seconds_now.push_back(seconds_now[i]);
    ratios.push_back(seconds_now[i] / calibration[i].second);
  }
  summarize_ratios(ratios, d.ratio_median, d.ratio_min, d.ratio_max);
  return d;
}

nlohmann::json Score::json() const {
  return {{"median_abs_error", err.median_abs}, {"max_abs_error", err.max_abs}, {"median_signed_error", err.bias},
          {"spearman", std::isnan(rho) ? nlohmann::json() : nlohmann::json(rho)}};
}

Score score(const std::vector<double>& predicted, const std::vector<double>& measured) {
  return {stats::summarize_errors(predicted, measured),
          predicted.size() >= 2 ? stats::spearman(predicted, measured) : std::nan("")};
}

namespace {
// The group contributing most seconds to the step error, and its relative error.
void find_worst_group(PlanResult& pr) {
  double worst_share = 0;
  for (const auto& g : pr.cmp.groups)
    if (g.predicted > 0 && g.measured > 0) {
      const double share = std::abs(g.predicted - g.measured);  // seconds it contributes to the step error
      if (share > worst_share) {
        worst_share = share;
        pr.worst_group = g.group;
        pr.worst_group_error = stats::relative_error(g.predicted, g.measured);
      }
    }
}
}  // namespace

ValidationResult score_validation(const std::vector<PlanCase>& cases, const std::vector<PlanMeasurement>& measured,
                                  const ClusterSpec& cluster, double probe_ref) {
  if (measured.size() != cases.size()) throw std::invalid_argument("score_validation: one measurement per plan case");
  ValidationResult r;
  std::vector<double> pred_steps, meas_steps, fastest_steps, speed, pred_decode, meas_decode, fastest_decode;
  std::vector<stats::ClassSample> class_samples, decode_class_samples;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (measured[i].steps.empty()) continue;
    const auto& c = cases[i];
    PlanResult pr;
    pr.plan_case = &c;
    const ClusterSpec cs = cluster_slice(cluster, c.plan.mesh.devices(), "--cluster");
    pr.cluster = cs.name;
    pr.cmp = c.decode ? compare_decode(c.model, c.plan, *c.decode, cs, measured[i].steps, /*warm_up=*/false)
                      : compare(c.model, c.plan, cs, measured[i].steps, /*warm_up=*/false);
    pr.error = stats::relative_error(pr.cmp.predicted_step_seconds, pr.cmp.measured_step_seconds);
    if (probe_ref > 0) {
      pr.probe_seconds = stats::median(measured[i].probes);
      pr.speed_factor = pr.probe_seconds / probe_ref;
    }
    find_worst_group(pr);
    auto& samples = c.decode ? decode_class_samples : class_samples;
    for (const auto& [cls, p] : pr.cmp.predicted_by_class) samples.push_back({cls, p, pr.cmp.measured_by_class.at(cls)});
    if (c.decode) {
      pred_decode.push_back(pr.cmp.predicted_step_seconds);
      meas_decode.push_back(pr.cmp.measured_step_seconds);
      fastest_decode.push_back(pr.cmp.fastest_step_seconds);
      r.decode_plans.push_back(std::move(pr));
      continue;
    }
    pred_steps.push_back(pr.cmp.predicted_step_seconds);
    meas_steps.push_back(pr.cmp.measured_step_seconds);
    fastest_steps.push_back(pr.cmp.fastest_step_seconds);
    speed.push_back(pr.speed_factor);
    r.plans.push_back(std::move(pr));
  }
  if (pred_steps.empty() && pred_decode.empty()) throw std::runtime_error("validate: every plan was skipped; nothing to compare");
  if (!pred_decode.empty()) {
    r.decode = score(pred_decode, meas_decode);
    r.decode_fastest = score(pred_decode, fastest_decode);
    r.decode_classes = stats::errors_by_class(decode_class_samples);
  }
  if (pred_steps.empty()) return r;
  r.primary = score(pred_steps, meas_steps);
  r.fastest = score(pred_steps, fastest_steps);
  r.classes = stats::errors_by_class(class_samples);
  if (probe_ref > 0) {
    std::vector<double> scaled(pred_steps.size());
    for (std::size_t i = 0; i < scaled.size(); ++i) scaled[i] = pred_steps[i] * speed[i];
    r.probe_scaled = score(scaled, meas_steps);
    const auto [lo, hi] = std::minmax_element(speed.begin(), speed.end());
    r.speed_min = *lo;
    r.speed_max = *hi;
    r.speed_median = stats::median(speed);
  }
  return r;
}

namespace {

// A plan's groups into validate-groups.csv and its JSON rows.
nlohmann::json groups_json(const PlanResult& pr, std::string& groups_csv) {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : pr.cmp.groups) {
    groups.push_back({{"group", g.group}, {"class", g.cls}, {"predicted_seconds", g.predicted}, {"measured_seconds", g.measured}});
    groups_csv += pr.plan_case->id + "," + g.group + "," + g.cls + "," + std::to_string(g.predicted) + "," +
                  std::to_string(g.measured) + "\n";
  }
  return groups;
}

nlohmann::json classes_json(const Comparison& cmp) {
  nlohmann::json by_class = nlohmann::json::object();
  for (const auto& [cls, p] : cmp.predicted_by_class)
    by_class[cls] = {{"predicted_seconds", p}, {"measured_seconds", cmp.measured_by_class.at(cls)}};
  return by_class;
}

nlohmann::json buckets_json(const std::array<double, kBucketCount>& seconds) {
  nlohmann::json buckets = nlohmann::json::object();
  for (int b = 0; b < kBucketCount; ++b) buckets[to_string(static_cast<Bucket>(b))] = seconds[b];
  return buckets;
}

nlohmann::json network_drift_json(const NetworkDrift& d) {  // null when not measured
  if (!d.measured()) return nullptr;
  return {{"all_reduce_bytes", d.bytes}, {"seconds_at_calibration", d.seconds_at_calibration}, {"seconds_now", d.seconds_now},
          {"ratio_median", d.ratio_median}, {"ratio_min", d.ratio_min}, {"ratio_max", d.ratio_max}};
}

nlohmann::json memory_drift_json(const MemoryDrift& d) {  // null when not measured
  if (!d.measured()) return nullptr;
  return {{"seconds_at_calibration", d.seconds_at_calibration}, {"seconds_now", d.seconds_now}, {"ratio_median", d.ratio_median},
          {"ratio_min", d.ratio_min}, {"ratio_max", d.ratio_max}};
}

nlohmann::json summary_json(const Score& s) {
  nlohmann::json j = s.json();
  j["plans"] = s.err.count;
  j["mean_abs_error"] = s.err.mean_abs;
  return j;
}

nlohmann::json class_summaries_json(const std::map<std::string, stats::ErrorSummary>& classes, std::string* csv) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [cls, s] : classes) {
    out[cls] = {{"plans", s.count}, {"median_abs_error", s.median_abs}, {"max_abs_error", s.max_abs}, {"median_signed_error", s.bias}};
    if (!csv) continue;
    char row[256];
    std::snprintf(row, sizeof row, "%s,%zu,%.6g,%.6g,%.6g\n", cls.c_str(), s.count, s.median_abs, s.max_abs, s.bias);
    *csv += row;
  }
  return out;
}

// The decode plans: their JSON rows and validate-decode.csv.
nlohmann::json decode_plans_json(const ValidationResult& r, std::string& groups_csv, std::string& csv) {
  csv = "id,model,family,mesh,ranks,batch,prompt_len,sample_len,predicted_seconds_per_token,measured_seconds_per_token,"
        "relative_error,predicted_tokens_per_s,measured_tokens_per_s\n";
  nlohmann::json plans = nlohmann::json::array();
  for (const auto& pr : r.decode_plans) {
    const PlanCase& c = *pr.plan_case;
    const Comparison& cmp = pr.cmp;
    const InferenceEstimate& e = *cmp.inference;
    const ServingShape& s = *c.decode;
    const double B = static_cast<double>(s.batch), n = static_cast<double>(c.plan.mesh.devices());
    const auto& mem = e.memory;
    plans.push_back({{"id", c.id}, {"model", c.model.name}, {"family", to_string(c.model.family)},
                     {"mesh", c.plan.mesh.describe()}, {"ranks", n}, {"description", describe_plan(c)},
                     {"batch", s.batch}, {"prompt_len", s.prompt_len}, {"sample_len", s.sample_len},
                     {"plan_yaml", plan_to_yaml(c.plan)}, {"cluster", pr.cluster},
                     {"predicted_seconds_per_token", cmp.predicted_step_seconds},
                     {"measured_seconds_per_token", cmp.measured_step_seconds}, {"relative_error", pr.error},
                     {"fastest_seconds_per_token", cmp.fastest_step_seconds},
                     {"predicted_tokens_per_s", B / cmp.predicted_step_seconds},
                     {"measured_tokens_per_s", B / cmp.measured_step_seconds},
                     {"predicted_ttft_seconds", e.ttft_seconds},
                     {"steps_measured", cmp.steps_used}, {"groups", groups_json(pr, groups_csv)}, {"classes", classes_json(cmp)},
                     {"predicted_buckets_seconds", buckets_json(e.decode_seconds)},
                     {"memory_bytes", {{"weights", mem.weights_bytes}, {"kv_cache", mem.kv_cache_bytes},
                                       {"state", mem.state_bytes}, {"activations", mem.activations_bytes},
                                       {"total", mem.total_bytes()}}}});
    char row[512];
    std::snprintf(row, sizeof row, "%s,%s,%s,\"%s\",%lld,%lld,%lld,%lld,%.9g,%.9g,%.6g,%.9g,%.9g\n", c.id.c_str(), c.model.name.c_str(),
                  to_string(c.model.family), c.plan.mesh.describe().c_str(), static_cast<long long>(n),
                  static_cast<long long>(s.batch), static_cast<long long>(s.prompt_len), static_cast<long long>(s.sample_len),
                  cmp.predicted_step_seconds, cmp.measured_step_seconds, pr.error, B / cmp.predicted_step_seconds,
                  B / cmp.measured_step_seconds);
    csv += row;
  }
  return plans;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> validation_files(const ValidationResult& r, const ClusterSpec& cluster,
                                                                  const ValidationRunInfo& info) {
  nlohmann::json plans_json = nlohmann::json::array();
  std::string csv = "id,model,family,mesh,zero_stage,remat,carry,ranks,global_batch,micro_batch,seq_len,predicted_seconds,"
                    "measured_seconds,relative_error\n";
  std::string groups_csv = "id,group,class,predicted_seconds,measured_seconds\n";
  for (const auto& pr : r.plans) {
    const PlanCase& c = *pr.plan_case;
    const Comparison& cmp = pr.cmp;
    const std::int64_t n = c.plan.mesh.devices();
    const auto& mem = cmp.estimate.memory;
    plans_json.push_back({{"id", c.id}, {"model", c.model.name}, {"family", to_string(c.model.family)},
                          {"mesh", c.plan.mesh.describe()}, {"ranks", n}, {"description", describe_plan(c)},
                          {"zero_stage", c.plan.zero_stage}, {"remat", to_string(c.plan.remat)}, {"carry", to_string(c.plan.carry)}, {"global_batch", c.plan.global_batch},
                          {"micro_batch", c.plan.micro_batch}, {"seq_len", c.plan.seq_len},
                          {"plan_yaml", plan_to_yaml(c.plan)}, {"cluster", pr.cluster},
                          {"predicted_step_seconds", cmp.predicted_step_seconds},
                          {"measured_step_seconds", cmp.measured_step_seconds}, {"relative_error", pr.error},
                          {"fastest_step_seconds", cmp.fastest_step_seconds},
                          {"steps_measured", cmp.steps_used}, {"groups", groups_json(pr, groups_csv)}, {"classes", classes_json(cmp)},
                          {"probe_seconds", pr.probe_seconds},
                          {"speed_factor", info.probe_at_calibration > 0 ? nlohmann::json(pr.speed_factor) : nlohmann::json()},
                          {"predicted_buckets_seconds", buckets_json(cmp.estimate.seconds)},
                          {"memory_bytes", {{"params", mem.params_bytes}, {"grads", mem.grads_bytes},
                                            {"optimizer", mem.optimizer_bytes}, {"activations", mem.activations_bytes},
                                            {"scan_state", mem.state_bytes}, {"buffers", mem.buffers_bytes},
                                            {"total", mem.total_bytes}}}});
    char row[512];
    std::snprintf(row, sizeof row, "%s,%s,%s,\"%s\",%d,%s,%s,%lld,%lld,%lld,%lld,%.9g,%.9g,%.6g\n", c.id.c_str(),
                  c.model.name.c_str(), to_string(c.model.family), c.plan.mesh.describe().c_str(), c.plan.zero_stage,
                  to_string(c.plan.remat), to_string(c.plan.carry), static_cast<long long>(n),
                  static_cast<long long>(c.plan.global_batch), static_cast<long long>(c.plan.micro_batch),
                  static_cast<long long>(c.plan.seq_len), cmp.predicted_step_seconds, cmp.measured_step_seconds, pr.error);
    csv += row;
  }
  std::string decode_csv;
  const nlohmann::json decode_plans = decode_plans_json(r, groups_csv, decode_csv);
  std::string classes_csv = "class,plans,median_abs_error,max_abs_error,median_signed_error\n";
  const nlohmann::json classes = class_summaries_json(r.classes, &classes_csv);
  nlohmann::json drift_json;  // null without a calibrated probe
  if (r.probe_scaled) {
    drift_json = r.probe_scaled->json();
    drift_json["probe_seconds_at_calibration"] = info.probe_at_calibration;
    drift_json["speed_factor_min"] = r.speed_min;
    drift_json["speed_factor_max"] = r.speed_max;
  }
  const nlohmann::json doc = {
      {"cluster", {{"name", cluster.name}, {"origin", cluster.origin}, {"source", cluster.source},
                   {"argument", info.cluster_argument}}},
      {"ranks", info.ranks},
      {"steps", info.steps},
      {"passes", info.passes},
      {"load_average", {{"start", info.load_start}, {"end", info.load_end}, {"cores", info.cores}}},
      {"quick", info.quick},
      {"plans", plans_json},
      {"skipped", info.skipped},
      {"summary", summary_json(r.primary)},
      {"summary_fastest_step", r.fastest.json()},
      {"summary_probe_scaled", drift_json},
      {"network_drift", network_drift_json(info.network)},
      {"memory_drift", memory_drift_json(info.memory)},
      {"classes", classes},
      {"decode", {{"plans", decode_plans}, {"summary", summary_json(r.decode)}, {"summary_fastest_token", r.decode_fastest.json()},
                  {"classes", class_summaries_json(r.decode_classes, nullptr)}}}};
  std::vector<std::pair<std::string, std::string>> files = {
      {"validate.json", doc.dump(2) + "\n"}, {"validate.csv", csv}, {"validate-groups.csv", groups_csv},
      {"validate-classes.csv", classes_csv}};
  if (!r.decode_plans.empty()) files.push_back({"validate-decode.csv", decode_csv});
  return files;
}

}  // namespace scanshard
