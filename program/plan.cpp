// program/plan.cpp — see plan.hpp.
#include "program/plan.hpp"

#include <algorithm>
#include <sstream>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {

const char* to_string(Axis a) { return name_of(kAxisNames, a); }
const char* to_string(Schedule s) { return name_of(kScheduleNames, s); }
const char* to_string(Remat r) { return name_of(kRematNames, r); }
const char* to_string(ScanAlgo s) { return name_of(kScanNames, s); }
const char* to_string(CarryScheme c) { return name_of(kCarryNames, c); }
const char* to_string(DType d) { return name_of(kDTypeNames, d); }
const char* to_string(TensorComm c) { return name_of(kTensorCommNames, c); }
const char* to_string(AttentionKernel k) { return name_of(kAttentionNames, k); }
const char* to_string(GradDType g) { return name_of(kGradDTypeNames, g); }
const char* to_string(GradientSync g) { return name_of(kGradientSyncNames, g); }
const char* to_string(GradAccumulation g) { return name_of(kGradAccumulationNames, g); }

std::int64_t Mesh::devices() const {
  std::int64_t n = 1;
  for (auto s : size) n *= s;
  return n;
}

std::string Mesh::describe() const {
  std::string s;
  for (int i = 0; i < kAxisCount; ++i) {
    if (size[i] == 1) continue;
    if (!s.empty()) s += ",";
    s += std::string(to_string(static_cast<Axis>(i))) + "=" + std::to_string(size[i]);
  }
  return s.empty() ? "1" : s;
}

namespace {

bool divides(std::int64_t d, std::int64_t n) { return d > 0 && n % d == 0; }
// Micro-batches per replica, 0 when the batch rules fail (they are checked first).
std::int64_t micro_batches(const Plan& p) {
  return p.replicas() > 0 && p.micro_batch > 0 ? p.global_batch / p.replicas() / p.micro_batch : 0;
}

// One rule: its name, whether it holds, and the numbers for the message.
struct Rule {
  const char* name;
  bool ok;
  std::string detail;
  const char* key = "mesh";
};

// Every rule in check order, each with whether it holds. The first five are sanity rules: when one
// fails the rest are not evaluated (their arithmetic assumes them), so it is returned alone.
std::vector<Rule> plan_rules(const ModelSpec& m, const Plan& p, std::int64_t devices) {
  const auto t = p.mesh[Axis::tensor], sq = p.mesh[Axis::sequence], pp = p.mesh[Axis::pipeline];
  auto n = [](std::int64_t v) { return std::to_string(v); };
  for (int i = 0; i < kAxisCount; ++i)
    if (p.mesh.size[i] < 1) return {Rule{"mesh axes are positive", false, std::string(to_string(static_cast<Axis>(i))) + " = " + n(p.mesh.size[i])}};
  if (p.global_batch < 1) return {Rule{"global_batch is positive", false, "global_batch = " + n(p.global_batch), "global_batch"}};
  if (p.micro_batch < 1) return {Rule{"micro_batch is positive", false, "micro_batch = " + n(p.micro_batch), "micro_batch"}};
  if (p.seq_len < 1) return {Rule{"seq_len is positive", false, "seq_len = " + n(p.seq_len), "seq_len"}};
  if (p.zero_stage < 0 || p.zero_stage > 3) return {Rule{"zero_stage is 0..3", false, "zero_stage = " + n(p.zero_stage), "zero_stage"}};
  return {
      {"mesh size equals the cluster's device count", devices <= 0 || p.mesh.devices() == devices,
       "mesh " + p.mesh.describe() + " has " + n(p.mesh.devices()) + " devices, the cluster has " + n(devices)},
      {"data*fsdp divides global_batch", divides(p.replicas(), p.global_batch),
       "data*fsdp = " + n(p.replicas()) + " does not divide global_batch " + n(p.global_batch), "global_batch"},
      {"micro_batch divides the per-replica batch", divides(p.micro_batch, p.global_batch / std::max<std::int64_t>(1, p.replicas())),
       "micro_batch " + n(p.micro_batch) + " does not divide the per-replica batch " + n(p.global_batch / std::max<std::int64_t>(1, p.replicas())), "micro_batch"},
      {"sequence divides seq_len", divides(sq, p.seq_len), "sequence = " + n(sq) + " does not divide seq_len " + n(p.seq_len), "mesh.sequence"},
      {"each pipeline stage holds a layer", pp <= m.depth, "pipeline = " + n(pp) + " is more stages than the " + n(m.depth) + " layers", "mesh.pipeline"},
      {"virtual_stages is positive", p.virtual_stages >= 1, "virtual_stages = " + n(p.virtual_stages), "virtual_stages"},
      {"interleaving needs a pipeline", p.virtual_stages == 1 || pp > 1,
       "virtual_stages = " + n(p.virtual_stages) + " splits each stage into chunks, but pipeline = 1 has no stages to interleave", "virtual_stages"},
      {"interleaving needs the 1f1b schedule", p.virtual_stages == 1 || p.schedule == Schedule::one_f_one_b,
       "virtual_stages = " + n(p.virtual_stages) + " with schedule " + to_string(p.schedule), "virtual_stages"},
      {"each pipeline chunk holds a layer", pp * std::max<std::int64_t>(1, p.virtual_stages) <= m.depth,
       "pipeline*virtual_stages = " + n(pp * p.virtual_stages) + " chunks for " + n(m.depth) + " layers", "virtual_stages"},
      // Megatron-LM's interleaved schedule runs micro-batches in groups of pp per chunk; a last,
      // longer group can make the stages wait on each other in a cycle (pipeline_schedule's unit
      // test: pp 4, v 3, 9 micro-batches) and loses the smaller bubble.
      {"interleaving needs pipeline to divide the micro-batches", p.virtual_stages <= 1 || pp <= 1 || divides(pp, micro_batches(p)),
       "pipeline = " + n(pp) + " does not divide the " + n(micro_batches(p)) + " micro-batches of an interleaved schedule", "virtual_stages"},
      {"rs_ag: tensor divides the tokens of a micro-batch", p.tensor_comm == TensorComm::allreduce || divides(t, p.micro_batch * (p.seq_len / std::max<std::int64_t>(1, sq))),
       "tensor = " + n(t) + " does not divide the " + n(p.micro_batch * (p.seq_len / std::max<std::int64_t>(1, sq))) + " tokens of a micro-batch shard", "tensor_comm"},
      {"tensor divides mlp_width", divides(t, m.mlp_width), "tensor = " + n(t) + " does not divide mlp_width " + n(m.mlp_width), "mesh.tensor"},
      {"tensor divides heads", m.heads == 0 || divides(t, m.heads), "tensor = " + n(t) + " does not divide heads " + n(m.heads), "mesh.tensor"},
      {"tensor and kv_heads divide one another", m.kv_heads == 0 || divides(t, m.kv_heads) || divides(m.kv_heads, t),
       "tensor = " + n(t) + " and kv_heads " + n(m.kv_heads) + " do not divide one another", "mesh.tensor"},
      {"tensor divides recurrent_width", m.recurrent_width == 0 || divides(t, m.recurrent_width),
       "tensor = " + n(t) + " does not divide recurrent_width " + n(m.recurrent_width), "mesh.tensor"},
      {"tensor divides gate_blocks", m.gate_blocks == 0 || divides(t, m.gate_blocks),
       "tensor = " + n(t) + " does not divide gate_blocks " + n(m.gate_blocks), "mesh.tensor"},
      {"tensor divides the RWKV-6 heads", m.family != Family::rwkv6 || divides(t, m.width / m.head_size),
       "tensor = " + n(t) + " does not divide the " + n(m.head_size ? m.width / m.head_size : 0) + " WKV heads", "mesh.tensor"},
      {"tensor divides width", !m.is_rwkv() || divides(t, m.width), "tensor = " + n(t) + " does not divide width " + n(m.width), "mesh.tensor"},
      {"seq_len fits the learned position table", m.max_positions == 0 || p.seq_len <= m.max_positions,
       "seq_len " + n(p.seq_len) + " is longer than the model's learned position table (max_positions " + n(m.max_positions) + ")", "seq_len"},
      {"gradient_sync: last_microbatch needs zero_stage 2 or 3",
       p.gradient_sync == GradientSync::every_microbatch || p.zero_stage >= 2,
       "gradient_sync: last_microbatch defers ZeRO-2/3's per-block gradient reduce-scatter to the step end; zero_stage " +
           n(p.zero_stage) + " already reduces the gradients once per step",
       "gradient_sync"},
      {"grad_accumulation: fused needs an unsharded accumulator",
       p.grad_accumulation != GradAccumulation::fused || p.zero_stage < 2 || p.mesh[Axis::fsdp] == 1 ||
           p.gradient_sync == GradientSync::last_microbatch,
       "grad_accumulation: fused accumulates in the weight-gradient GEMMs, but zero_stage " + n(p.zero_stage) +
           " over fsdp " + n(p.mesh[Axis::fsdp]) +
           " reduce-scatters each micro-batch's gradient before it is added to this rank's shard (use hook or autograd, "
           "or gradient_sync: last_microbatch)",
       "grad_accumulation"},
      {"each sequence shard holds at least conv_width-1 tokens", sq == 1 || m.conv_width == 0 || p.seq_len / sq >= m.conv_width - 1,
       "sequence = " + n(sq) + " leaves " + n(p.seq_len / sq) + " tokens per shard, fewer than the conv halo of " + n(m.conv_width - 1), "mesh.sequence"},
  };
}

template <class F>
const char* first_violation(const ModelSpec& m, const Plan& p, std::int64_t devices, F&& on_fail) {
  for (const auto& r : plan_rules(m, p, devices))
    if (!r.ok) return on_fail(r);
  return nullptr;
}

}  // namespace

void check_plan(const ModelSpec& m, const Plan& p, std::int64_t devices) {
  first_violation(m, p, devices, [](const Rule& r) -> const char* {
    throw PlanError(r.name, r.key, std::string("illegal plan: rule '") + r.name + "' failed: " + r.detail);
  });
}

const char* plan_violation(const ModelSpec& m, const Plan& p, std::int64_t devices) {
  return first_violation(m, p, devices, [](const Rule& r) { return r.name; });
}

std::vector<RuleFailure> plan_violations(const ModelSpec& m, const Plan& p, std::int64_t devices) {
  std::vector<RuleFailure> out;
  for (auto& r : plan_rules(m, p, devices))
    if (!r.ok) out.push_back(RuleFailure{r.name, r.key, std::move(r.detail)});
  return out;
}

namespace {



// The product of the axes must stay far from int64 overflow (each axis alone may be up to 2^40):
// Mesh::devices() and everything that multiplies device counts rely on it.
constexpr std::int64_t kMaxDevices = std::int64_t{1} << 40;
constexpr const char* kMeshTooLarge = "data × fsdp × tensor × sequence × pipeline is more than 2^40 devices";
bool mesh_size_ok(const Mesh& mesh) {
  std::int64_t n = 1;
  for (auto s : mesh.size) {
    if (s < 1 || s > kMaxDevices / n) return false;
    n *= s;
  }
  return true;
}

std::int64_t positive_int(YamlMap& y, const std::string& key, std::int64_t v) {
  if (v < 1) throw y.error(key, "must be a positive integer, got " + std::to_string(v));
  if (v > (std::int64_t{1} << 40)) throw y.error(key, "is unreasonably large (" + std::to_string(v) + ")");
  return v;
}

}  // namespace

Plan parse_plan(const YAML::Node& node, const std::string& file) {
  YamlMap y(node, file, "");
  Plan p;
  p.model = y.optional_string("model", "");
  p.cluster = y.optional_string("cluster", "");
  if (y.has("devices")) p.devices = positive_int(y, "devices", y.required_int("devices"));
  if (y.has("mesh")) {
    YamlMap mesh = y.required_map("mesh");
    for (int i = 0; i < kAxisCount; ++i) {
      const std::string axis = to_string(static_cast<Axis>(i));
      p.mesh.size[i] = positive_int(mesh, axis, mesh.optional_int(axis, 1));
    }
    mesh.finish();
    if (!mesh_size_ok(p.mesh)) throw y.error("mesh", kMeshTooLarge);
  } else {
    y.raw("mesh");
  }
  p.zero_stage = static_cast<int>(y.optional_int("zero_stage", 0));
  if (p.zero_stage < 0 || p.zero_stage > 3) throw y.error("zero_stage", "must be 0, 1, 2 or 3");
  p.global_batch = positive_int(y, "global_batch", y.required_int("global_batch"));
  if (!y.has("micro_batch") && p.global_batch < p.replicas())
    throw y.error("global_batch", std::to_string(p.global_batch) + " sequences cannot feed the " + std::to_string(p.replicas()) +
                                      " data-parallel replicas (mesh data × fsdp): each needs at least one");
  p.micro_batch = positive_int(y, "micro_batch", y.optional_int("micro_batch", default_micro_batch(p.local_batch(), p.mesh[Axis::pipeline])));
  p.seq_len = positive_int(y, "seq_len", y.required_int("seq_len"));
  p.schedule = y.optional_choice("schedule", p.schedule, kScheduleNames);
  p.virtual_stages = positive_int(y, "virtual_stages", y.optional_int("virtual_stages", 1));
  p.remat = y.optional_choice("remat", p.remat, kRematNames);
  p.tensor_comm = y.optional_choice("tensor_comm", p.tensor_comm, kTensorCommNames);
  p.attention = y.optional_choice("attention", p.attention, kAttentionNames);
  p.scan = y.optional_choice("scan", p.scan, kScanNames);
  p.carry = y.optional_choice("carry", p.carry, kCarryNames);
  if (y.has("dtypes")) {
    YamlMap d = y.required_map("dtypes");
    p.param_dtype = d.optional_choice("params", p.param_dtype, kDTypeNames);
    p.act_dtype = d.optional_choice("activations", p.act_dtype, kDTypeNames);
    p.state_dtype = d.optional_choice("scan_state", p.state_dtype, kDTypeNames);
    p.grad_dtype = d.optional_choice("grads", p.grad_dtype, kGradDTypeNames);
    d.finish();
  } else {
    y.raw("dtypes");
  }
  p.gradient_sync = y.optional_choice("gradient_sync", p.gradient_sync, kGradientSyncNames);
  p.grad_accumulation = y.optional_choice("grad_accumulation", p.grad_accumulation, kGradAccumulationNames);
  p.overlap = y.optional_bool("overlap", true);
  p.scatter_gather = y.optional_bool("scatter_gather", true);
  p.async_tensor_comm = y.optional_bool("async_tensor_comm", false);
  p.logit_metrics = y.optional_int("logit_metrics", 0);
  if (p.logit_metrics < 0 || p.logit_metrics > 64)
    throw y.error("logit_metrics", "must be 0 to 64 (cross-entropies over the logits per micro-batch), got " + std::to_string(p.logit_metrics));
  if (y.has("placement")) {
    const YAML::Node list = y.raw("placement");
    if (!list.IsSequence() || list.size() != kAxisCount)
      throw y.error("placement", "expected a list of the five axes, innermost first (e.g. [tensor, sequence, fsdp, data, pipeline])");
    std::array<bool, kAxisCount> seen{};
    for (std::size_t i = 0; i < kAxisCount; ++i) {
      const std::string name = list[i].IsScalar() ? list[i].Scalar() : "";
      const auto axis = find_name(kAxisNames, name);
      if (!axis || seen[static_cast<std::size_t>(*axis)])
        throw y.error("placement", "'" + name + "' is not an axis or appears twice (axes: " + name_list(kAxisNames) + ")");
      seen[static_cast<std::size_t>(*axis)] = true;
      p.placement[i] = *axis;
    }
  } else {
    y.raw("placement");
  }
  y.finish();
  return p;
}

Plan load_plan(const std::string& path) {
  Plan p = parse_plan(load_yaml_file(path), path);
  p.model = resolve_named_path(p.model, path);
  p.cluster = resolve_named_path(p.cluster, path);
  return p;
}

ConfigError plan_file_error(const std::string& plan_file, const PlanError& e, const std::string& advice) {
  const std::string what = std::string(e.what()) + advice;
  if (plan_file.empty() || plan_file == "plan from flags") return ConfigError("plan from flags", 0, 0, e.key(), what);
  YAML::Node node;
  try {
    node = load_yaml_file(plan_file);  // read before, so it parses; if it changed since, no line
  } catch (const ConfigError&) {
    return ConfigError(plan_file, 0, 0, e.key(), what);
  }
  // walk the key path (mesh.tensor), remembering the deepest key the file has
  int line = 0;
  bool whole = true;
  std::stringstream path(e.key());
  std::string part;
  while (std::getline(path, part, '.')) {
    if (!node.IsMap()) { whole = false; break; }
    bool found = false;
    for (const auto& kv : node)
      if (kv.first.IsScalar() && kv.first.Scalar() == part) {
        line = kv.first.Mark().line + 1;
        node = kv.second;
        found = true;
        break;
      }
    if (!found) { whole = false; break; }
  }
  return ConfigError(plan_file, line, 0, e.key(), whole || e.key().empty() ? what : what + " (the file leaves " + e.key() + " at its default)");
}

Mesh parse_mesh(const std::string& text, const std::string& flag) {
  Mesh mesh;
  std::array<bool, kAxisCount> seen{};
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw ConfigError(flag + ": expected axis=size, got '" + item + "'");
    const auto axis = item.substr(0, eq), value = item.substr(eq + 1);
    const auto found = static_cast<std::size_t>(parse_choice(kAxisNames, axis, flag));
    if (seen[found]) throw ConfigError(flag + ": axis '" + axis + "' is given twice ('" + text + "')");
    seen[found] = true;
    char* end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || v < 1 || v > (1LL << 30))
      throw ConfigError(flag + ": " + axis + " must be a positive integer, got '" + value + "'");
    mesh.size[found] = v;
  }
  if (!mesh_size_ok(mesh)) throw ConfigError(flag + ": " + kMeshTooLarge);
  return mesh;
}

std::int64_t default_micro_batch(std::int64_t local_batch, std::int64_t pipeline) {
  if (pipeline <= 1 || local_batch <= 1) return std::max<std::int64_t>(1, local_batch);
  for (std::int64_t d = local_batch; d > 1; --d)
    if (local_batch % d == 0 && local_batch / d >= 4 * pipeline) return d;
  return 1;
}

Plan at_seq_len(const Plan& base, std::int64_t T, double tokens) {
  Plan p = base;
  p.seq_len = T;
  p.global_batch = std::max<std::int64_t>(p.replicas(), static_cast<std::int64_t>(tokens / static_cast<double>(T)));
  p.micro_batch = std::max<std::int64_t>(1, std::min(p.micro_batch, p.local_batch()));
  while (p.micro_batch > 1 && p.local_batch() % p.micro_batch) --p.micro_batch;
  return p;
}

std::string plan_summary(const Plan& p, bool with_batch, bool scan) {
  std::string s = p.mesh.describe();
  if (p.mesh[Axis::fsdp] > 1) s += " zero" + std::to_string(p.zero_stage);
  if (with_batch) s += " B" + std::to_string(p.global_batch) + " T" + std::to_string(p.seq_len);
  s += " mb" + std::to_string(p.micro_batch);
  if (p.remat != Remat::none) s += std::string(" remat:") + to_string(p.remat);
  if (scan) s += std::string(" scan:") + to_string(p.scan);
  if (scan && p.mesh[Axis::sequence] > 1) s += std::string(" carry:") + to_string(p.carry);
  if (p.mesh[Axis::tensor] > 1 && p.tensor_comm != TensorComm::allreduce) s += std::string(" ") + to_string(p.tensor_comm);
  if (p.mesh[Axis::pipeline] > 1) s += std::string(" ") + to_string(p.schedule);
  if (p.virtual_stages > 1) s += " v" + std::to_string(p.virtual_stages);
  if (p.attention != AttentionKernel::flash) s += std::string(" attention:") + to_string(p.attention);
  if (p.gradient_sync != GradientSync::every_microbatch) s += std::string(" sync:") + to_string(p.gradient_sync);
  if (p.logit_metrics > 0) s += " metrics:" + std::to_string(p.logit_metrics);
  if (p.grad_accumulation != GradAccumulation::separate) s += std::string(" accumulate:") + to_string(p.grad_accumulation);
  if (!p.overlap) s += " no-overlap";
  if (p.placement != Plan{}.placement) s += std::string(" inner:") + to_string(p.placement[0]);
  return s;
}

std::string plan_to_yaml(const Plan& p) {
  std::ostringstream o;
  o << "# scanshard plan (DESIGN §2); `scanshard simulate --plan` and `scanshard train --plan` read it.\n";
  if (!p.model.empty()) o << "model: " << p.model << "\n";
  if (!p.cluster.empty()) o << "cluster: " << p.cluster << "\n";
  if (p.devices > 0) o << "devices: " << p.devices << "   # a slice: the first devices of the cluster\n";
  o << "mesh:\n";
  for (int i = 0; i < kAxisCount; ++i) o << "  " << to_string(static_cast<Axis>(i)) << ": " << p.mesh.size[i] << "\n";
  o << "zero_stage: " << p.zero_stage << "\n"
    << "global_batch: " << p.global_batch << "\n"
    << "micro_batch: " << p.micro_batch << "\n"
    << "seq_len: " << p.seq_len << "\n"
    << "schedule: " << to_string(p.schedule) << "\n"
    << "virtual_stages: " << p.virtual_stages << "\n"
    << "remat: " << to_string(p.remat) << "\n"
    << "tensor_comm: " << to_string(p.tensor_comm) << "\n"
    << "attention: " << to_string(p.attention) << "\n"
    << "scan: " << to_string(p.scan) << "\n"
    << "carry: " << to_string(p.carry) << "\n"
    << "dtypes:\n  params: " << to_string(p.param_dtype) << "\n  activations: " << to_string(p.act_dtype)
    << "\n  scan_state: " << to_string(p.state_dtype)
    << "\n  grads: " << to_string(p.grad_dtype) << "   # gradient reduction: params (their dtype) | bf16 | fp32 | fp64\n"
    << "gradient_sync: " << to_string(p.gradient_sync)
    << "   # ZeRO-2/3 gradient reduce-scatter: every_microbatch | last_microbatch (once per step)\n"
    << "grad_accumulation: " << to_string(p.grad_accumulation)
    << "   # micro-batch gradients: separate (fp32 buffer, cleared) | hook (Megatron main_grad) | autograd (.grad) | fused (in the GEMMs)\n"
    << "overlap: " << (p.overlap ? "true" : "false") << "\n"
    << "scatter_gather: " << (p.scatter_gather ? "true" : "false") << "\n"
    << "async_tensor_comm: " << (p.async_tensor_comm ? "true" : "false") << "\n"
    << "logit_metrics: " << p.logit_metrics << "   # no-grad cross-entropies over the logits per micro-batch (train metrics)\n"
    << "placement: [";
  for (int i = 0; i < kAxisCount; ++i) o << (i ? ", " : "") << to_string(p.placement[static_cast<std::size_t>(i)]);
  o << "]   # device order of the axes, innermost first\n";
  return o.str();
}

}  // namespace scanshard
