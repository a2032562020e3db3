// program/cluster.cpp — see cluster.hpp.
#include "program/cluster.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <tuple>

#include "program/plan.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {

double ChipSpec::peak(const std::string& dtype) const {
  auto it = peak_flops_per_s.find(dtype);
  if (it == peak_flops_per_s.end())
    throw ConfigError("chip " + name + " has no peak_flops_per_s for dtype " + dtype);
  return it->second;
}

double Efficiency::curve_at(const std::vector<std::pair<double, double>>& curve, double x) {
  if (x <= curve.front().first) return curve.front().second;
  if (x >= curve.back().first) return curve.back().second;
  std::size_t i = 1;
  while (curve[i].first < x) ++i;
  const auto [x0, e0] = curve[i - 1];
  const auto [x1, e1] = curve[i];
  const double u = (std::log(x) - std::log(x0)) / (std::log(x1) - std::log(x0));
  return e0 + u * (e1 - e0);
}

const char* to_string(TopologyKind k) { return name_of(kTopologyNames, k); }

std::int64_t TopologySpec::pod_devices() const {
  if (kind == TopologyKind::islands) return islands * devices_per_island;
  std::int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

std::int64_t TopologySpec::devices() const { return kind == TopologyKind::islands ? pod_devices() : pods * pod_devices(); }

std::string TopologySpec::describe() const {
  if (kind == TopologyKind::islands)
    return std::to_string(islands) + " x " + std::to_string(devices_per_island) +
           (islands > 1 ? " (islands, fat tree)" : " (one island)");
  std::string s = "torus ";
  bool all_wrap = true, any_wrap = false;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += "x";
    s += std::to_string(dims[i]);
    all_wrap = all_wrap && wraparound[i];
    any_wrap = any_wrap || wraparound[i];
  }
  s += all_wrap ? " (wrap)" : any_wrap ? " (partial wrap)" : " (no wrap)";
  return pods > 1 ? std::to_string(pods) + " pods x " + s + " over DCN" : s;
}

namespace {

// Rates, sizes and latencies: positive and within what any real machine could have, so that
// every time derived from them is finite and positive (a rate of 4.9e-324 is positive but makes
// every step time infinite or NaN). Bounds: rates 1 .. 1e18 per second (a chip at 1e18 FLOP/s is
// ~500x today's largest); bytes 1 .. 1e15; latencies 1 ps .. 10 s.
enum class Quantity { rate, bytes, seconds };
double checked(YamlMap& y, const std::string& key, double v, Quantity q) {
  const auto [lo, hi, what] = q == Quantity::rate    ? std::tuple{1.0, 1e18, "a rate per second"}
                              : q == Quantity::bytes ? std::tuple{1.0, 1e15, "a size in bytes"}
                                                     : std::tuple{1e-12, 10.0, "a latency in seconds"};
  if (!(v > 0)) throw y.error(key, "must be positive, got " + format_number(v));
  if (!(v >= lo && v <= hi))
    throw y.error(key, std::string("must be ") + what + " in [" + format_number(lo) + ", " + format_number(hi) + "], got " + format_number(v));
  return v;
}

double fraction(YamlMap& y, const std::string& key, double fallback) {
  const double v = y.optional_double(key, fallback);
  // at least 1e-6: a smaller fraction is no real kernel's, and its reciprocal prices absurd times
  if (!(v >= 1e-6 && v <= 1)) throw y.error(key, "must be a fraction in [1e-6, 1], got " + format_number(v));
  return v;
}

// gemm_curve / memory_curve: a list of [x, fraction] pairs with increasing x (x named `what`:
// gemm_flops, bytes).
std::vector<std::pair<double, double>> parse_curve(YamlMap& y, const std::string& key, const std::string& what,
                                                   const char* example) {
  std::vector<std::pair<double, double>> out;
  const YAML::Node list = y.raw(key);
  if (!list.IsDefined()) return out;
  if (!list.IsSequence() || list.size() == 0)
    throw y.error(key, "expected a list of [" + what + ", fraction] pairs, e.g. " + example);
  for (const auto& item : list) {
    double f = 0, eff = 0;
    if (!item.IsSequence() || item.size() != 2 || !item[0].IsScalar() || !item[1].IsScalar() ||
        !YAML::convert<double>::decode(item[0], f) || !YAML::convert<double>::decode(item[1], eff))
      throw y.error(key, "each entry must be a pair [" + what + ", fraction]");
    if (!(f > 0)) throw y.error(key, what + " must be positive, got " + format_number(f));
    if (!(eff >= 1e-6 && eff <= 1)) throw y.error(key, "fraction must be in [1e-6, 1], got " + format_number(eff));
    if (!out.empty() && f <= out.back().first)
      throw y.error(key, what + " must increase from entry to entry (" + format_number(out.back().first) + " then " +
                             format_number(f) + ")");
    out.emplace_back(f, eff);
  }
  return out;
}

Efficiency parse_efficiency(YamlMap y) {
  Efficiency e;
  e.gemm_curve = parse_curve(y, "gemm_curve", "gemm_flops", "[[1.0e6, 0.1], [1.0e12, 0.8]]");
  if (!e.gemm_curve.empty() && y.has("gemm")) throw y.error("gemm", "give gemm or gemm_curve, not both");
  e.gemm = fraction(y, "gemm", e.gemm_curve.empty() ? e.gemm : e.gemm_curve.back().second);
  e.elementwise = fraction(y, "elementwise", e.elementwise);
  e.scan = fraction(y, "scan", e.scan);
  e.attention = fraction(y, "attention", e.attention);
  if (y.has("attention_softmax")) e.attention_softmax = fraction(y, "attention_softmax", 1.0);
  e.norm = fraction(y, "norm", e.norm);
  e.memory_curve = parse_curve(y, "memory_curve", "bytes", "[[1.0e6, 1.0], [2.0e8, 0.1]]");
  if (!e.memory_curve.empty() && y.has("memory")) throw y.error("memory", "give memory or memory_curve, not both");
  e.memory = fraction(y, "memory", e.memory_curve.empty() ? e.memory : e.memory_curve.back().second);
  e.gemv_memory_curve = parse_curve(y, "gemv_memory_curve", "bytes", "[[1.0e6, 1.0], [2.0e8, 0.1]]");
  e.decode_attention_memory_curve = parse_curve(y, "decode_attention_memory_curve", "bytes", "[[1.0e6, 1.0], [2.0e7, 0.2]]");
  e.decode_attention_rows_curve = parse_curve(y, "decode_attention_rows_curve", "rows", "[[1, 0.5], [2, 0.9], [4, 1.0]]");
  e.network = fraction(y, "network", e.network);
  if (y.has("ops")) {
    YamlMap ops = y.required_map("ops");
    for (const auto& op : ops.keys()) {
      if (std::find_if(kTunedOps.begin(), kTunedOps.end(), [&](const char* o) { return op == o; }) == kTunedOps.end()) {
        std::string known;
        for (const char* o : kTunedOps) known += (known.empty() ? "" : ", ") + std::string(o);
        throw ops.error(op, "no per-kernel efficiency for '" + op + "' (one of: " + known + ")");
      }
      e.ops[op] = fraction(ops, op, 1.0);
    }
    ops.finish();
  }
  if (y.has("attention_kernels")) {
    YamlMap kernels = y.required_map("attention_kernels");
    for (const auto& k : kernels.keys()) {
      const auto kernel = find_name(kAttentionNames, k);
      if (!kernel || !has_measured_rate(*kernel)) {
        std::string known;
        for (const auto& [name, v] : kAttentionNames)
          if (has_measured_rate(v)) known += (known.empty() ? "" : ", ") + std::string(name);
        throw kernels.error(k, "no measured attention kernel '" + k + "' (one of: " + known + ")");
      }
      e.attention_kernels[k] = fraction(kernels, k, 1.0);
    }
    kernels.finish();
  }
  y.finish();
  return e;
}

void parse_torus(YamlMap& y, TopologySpec& t) {
  t.dims = y.required_int_list("dims");
  if (t.dims.empty() || t.dims.size() > 3) throw y.error("dims", "a torus has 1 to 3 dimensions");
  for (auto d : t.dims)
    if (d <= 0 || d > 4096) throw y.error("dims", "each dimension must be in 1..4096, got " + std::to_string(d));
  YAML::Node w = y.raw("wraparound");
  if (!w.IsDefined() || w.IsScalar()) {
    const bool all = y.optional_bool("wraparound", true);
    t.wraparound.assign(t.dims.size(), all);
  } else {
    if (!w.IsSequence() || w.size() != t.dims.size())
      throw y.error("wraparound", "expected true/false or one true/false per dimension (" +
                                      std::to_string(t.dims.size()) + ")");
    for (const auto& e : w) {
      bool b = false;
      if (!e.IsScalar() || !YAML::convert<bool>::decode(e, b)) throw y.error("wraparound", "expected true or false");
      t.wraparound.push_back(b);
    }
  }
  t.link_bytes_per_s = checked(y, "link_bytes_per_s", y.required_double("link_bytes_per_s"), Quantity::rate);
  t.hop_latency_seconds = checked(y, "hop_latency_seconds", y.required_double("hop_latency_seconds"), Quantity::seconds);
  t.pods = y.optional_int("pods", 1);
  if (t.pods <= 0 || t.pods > 4096) throw y.error("pods", "must be in 1..4096, got " + std::to_string(t.pods));
  if (t.pods > 1 || y.has("dcn_bytes_per_s") || y.has("dcn_latency_seconds")) {
    if (t.pods > 1 && !y.has("dcn_bytes_per_s"))
      throw y.error("dcn_bytes_per_s", "required with pods > 1: the datacenter-network bandwidth per chip that joins the pods");
    if (t.pods > 1 && !y.has("dcn_latency_seconds"))
      throw y.error("dcn_latency_seconds", "required with pods > 1: the datacenter-network latency between pods");
    t.dcn_bytes_per_s = checked(y, "dcn_bytes_per_s", y.required_double("dcn_bytes_per_s"), Quantity::rate);
    t.dcn_latency_seconds = checked(y, "dcn_latency_seconds", y.required_double("dcn_latency_seconds"), Quantity::seconds);
  }
}

void parse_islands(YamlMap& y, TopologySpec& t) {
  t.islands = y.required_int("islands");
  if (t.islands <= 0 || t.islands > 1000000) throw y.error("islands", "must be in 1..1000000");
  t.devices_per_island = y.required_int("devices_per_island");
  if (t.devices_per_island <= 0 || t.devices_per_island > 4096)
    throw y.error("devices_per_island", "must be in 1..4096");
  t.island_link_bytes_per_s = checked(y, "island_link_bytes_per_s", y.required_double("island_link_bytes_per_s"), Quantity::rate);
  t.island_latency_seconds = checked(y, "island_latency_seconds", y.required_double("island_latency_seconds"), Quantity::seconds);
  if (y.has("island_latency_back_to_back_seconds"))
    t.island_latency_back_to_back_seconds = checked(y, "island_latency_back_to_back_seconds",
                                                    y.required_double("island_latency_back_to_back_seconds"), Quantity::seconds);
  t.network_bytes_per_s = checked(y, "network_bytes_per_s", y.required_double("network_bytes_per_s"), Quantity::rate);
  t.network_latency_seconds = checked(y, "network_latency_seconds", y.required_double("network_latency_seconds"), Quantity::seconds);
  for (auto [key, field] : {std::pair{"island_busbw_bytes_per_s", &t.island_busbw_bytes_per_s},
                            std::pair{"network_busbw_bytes_per_s", &t.network_busbw_bytes_per_s}})
    if (y.has(key)) *field = checked(y, key, y.required_double(key), Quantity::rate);
}

TopologySpec parse_topology(YamlMap y) {
  TopologySpec t;
  t.kind = y.required_choice("kind", kTopologyNames);
  if (t.kind == TopologyKind::torus)
    parse_torus(y, t);
  else
    parse_islands(y, t);
  y.finish();
  return t;
}

}  // namespace

ChipSpec parse_chip(const YAML::Node& node, const std::string& file, const std::string& path) {
  YamlMap y(node, file, path);
  ChipSpec c;
  c.name = y.required_string("name");
  c.source = y.optional_string("source", "");
  {
    YamlMap peaks = y.required_map("peak_flops_per_s");
    for (const auto& dtype : peaks.keys())
      c.peak_flops_per_s[dtype] = checked(peaks, dtype, peaks.required_double(dtype), Quantity::rate);
    if (!c.peak_flops_per_s.count("bf16") && !c.peak_flops_per_s.count("fp32"))
      throw y.error("peak_flops_per_s", "needs at least a bf16 or fp32 entry");
  }
  c.vector_flops_per_s = checked(y, "vector_flops_per_s", y.required_double("vector_flops_per_s"), Quantity::rate);
  c.memory_bytes = checked(y, "memory_bytes", y.required_double("memory_bytes"), Quantity::bytes);
  c.memory_bytes_per_s = checked(y, "memory_bytes_per_s", y.required_double("memory_bytes_per_s"), Quantity::rate);
  c.onchip_memory_bytes = checked(y, "onchip_memory_bytes", y.required_double("onchip_memory_bytes"), Quantity::bytes);
  c.matrix_tile = y.optional_int("matrix_tile", 1);
  if (c.matrix_tile <= 0 || c.matrix_tile > 4096) throw y.error("matrix_tile", "must be in 1..4096");
  c.sm_count = y.optional_int("sm_count", 0);
  if (c.sm_count < 0 || c.sm_count > 100000) throw y.error("sm_count", "must be in 0..100000");
  if (y.has("gemm_tile")) {
    const auto tile = y.required_int_list("gemm_tile");
    if (tile.size() != 2 || tile[0] <= 0 || tile[1] <= 0 || tile[0] > 4096 || tile[1] > 4096)
      throw y.error("gemm_tile", "must be [tile_m, tile_n], each in 1..4096");
    c.gemm_tile_m = tile[0], c.gemm_tile_n = tile[1];
  }
  if ((c.sm_count > 0) != (c.gemm_tile_m > 0)) throw y.error("sm_count", "give sm_count and gemm_tile together");
  if (c.sm_count > 0 && c.matrix_tile > 1) throw y.error("matrix_tile", "give matrix_tile or sm_count/gemm_tile, not both");
  c.launch_overhead_seconds = y.optional_double("launch_overhead_seconds", 0.0);
  if (c.launch_overhead_seconds < 0 || c.launch_overhead_seconds > 1)
    throw y.error("launch_overhead_seconds", "must be in [0, 1]");
  c.compute_jitter = y.optional_double("compute_jitter", 0.0);
  if (!(c.compute_jitter >= 0 && c.compute_jitter < 1)) throw y.error("compute_jitter", "must be in [0, 1)");
  c.overlap_compute_slowdown = y.optional_double("overlap_compute_slowdown", 0.0);
  if (!(c.overlap_compute_slowdown >= 0 && c.overlap_compute_slowdown < 1))
    throw y.error("overlap_compute_slowdown", "must be in [0, 1)");
  if (y.has("efficiency")) c.efficiency = parse_efficiency(y.required_map("efficiency"));
  else y.raw("efficiency");
  y.finish();
  return c;
}

ClusterSpec parse_cluster(const YAML::Node& node, const std::string& file, const ChipResolver& chips) {
  YamlMap y(node, file, "");
  ClusterSpec c;
  c.origin = file;
  c.name = y.required_string("name");
  c.source = y.optional_string("source", "");
  YAML::Node chip = y.raw("chip");
  if (!chip.IsDefined()) throw y.error("chip", "missing required key");
  if (chip.IsScalar()) {
    std::pair<YAML::Node, std::string> found;
    try {
      found = chips(chip.as<std::string>());
    } catch (const std::invalid_argument& e) {
      throw y.error("chip", e.what());
    }
    c.chip = parse_chip(found.first, found.second, "");
    c.chip.preset = chip.as<std::string>();
  } else {
    c.chip = parse_chip(chip, file, "chip");
  }
  c.topology = parse_topology(y.required_map("topology"));
  y.raw("measurements");  // free-form raw data written by `scanshard calibrate`: kept for readers, not interpreted
  y.finish();
  return c;
}

ClusterSpec cluster_slice(const ClusterSpec& c, std::int64_t devices, const std::string& flag) {
  if (devices == 0 || devices == c.devices()) return c;
  if (devices < 0 || devices > c.devices())
    throw ConfigError(flag + ": " + std::to_string(devices) + " is not between 1 and the " + std::to_string(c.devices()) + " devices of " + c.name);
  ClusterSpec s = c;
  s.name = c.name + "[" + std::to_string(devices) + "]";
  auto& t = s.topology;
  if (t.kind == TopologyKind::islands) {
    if (devices <= t.devices_per_island) { t.islands = 1; t.devices_per_island = devices; }
    else if (devices % t.devices_per_island == 0) t.islands = devices / t.devices_per_island;
    else throw ConfigError(flag + ": " + std::to_string(devices) + " is neither part of one island nor whole islands of " + std::to_string(t.devices_per_island));
    return s;
  }
  if (t.pods > 1) {  // whole pods, or a slice of one
    const std::int64_t per = t.pod_devices();
    if (devices % per == 0) { t.pods = devices / per; return s; }
    if (devices > per)
      throw ConfigError(flag + ": " + std::to_string(devices) + " is neither part of one pod nor whole pods of " + std::to_string(per));
    t.pods = 1;
  }
  std::int64_t left = devices;
  for (std::size_t d = 0; d < t.dims.size(); ++d) {
    const std::int64_t take = std::gcd(left, t.dims[d]);
    if (take < t.dims[d]) t.wraparound[d] = false;
    t.dims[d] = take;
    left /= take;
  }
  if (left != 1) throw ConfigError(flag + ": " + std::to_string(devices) + " chips do not form a slice of " + c.topology.describe());
  return s;
}

}  // namespace scanshard
