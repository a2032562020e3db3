// cli/list_commands.cpp — `scanshard models` and `scanshard clusters`: tables of the presets.
#include <algorithm>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "reports/format.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {
namespace {

struct ListOptions {
  bool json = false;
  std::string family;  // models: filter
  std::string name;    // show one model/cluster (preset or path) instead of all
};

std::string opt(std::int64_t v) { return v > 0 ? std::to_string(v) : "-"; }

// Query heads for attention models, WKV heads for RWKV-6, none otherwise.
std::int64_t head_count(const ModelSpec& m) {
  if (m.family == Family::rwkv6) return m.width / m.head_size;
  return m.heads;
}

nlohmann::json model_json(const ModelSpec& m) {
  const auto c = count_parameters(m);
  return {{"name", m.name}, {"family", to_string(m.family)}, {"width", m.width}, {"depth", m.depth},
          {"vocab", m.vocab}, {"recurrent_width", m.recurrent_width}, {"heads", m.heads},
          {"kv_heads", m.kv_heads}, {"head_dim", m.head_dim}, {"window", m.window},
          {"mlp_width", m.mlp_width}, {"gate_blocks", m.gate_blocks}, {"head_size", m.head_size},
          {"tied_embeddings", m.tied_embeddings}, {"parameters", c.total},
          {"non_embedding_parameters", c.non_embedding}, {"source", m.source}, {"file", m.origin}};
}

void list_models(const ListOptions& o) {
  std::vector<ModelSpec> models;
  if (!o.name.empty()) models.push_back(load_model(o.name));
  else models = all_model_presets();
  // Family by family, smallest first (names sort 1.3b before 100m).
  std::stable_sort(models.begin(), models.end(), [](const ModelSpec& a, const ModelSpec& b) {
    if (a.family != b.family) return a.family < b.family;
    return count_parameters(a).total < count_parameters(b).total;
  });
  if (!o.family.empty()) {
    const Family family = parse_choice(kFamilyNames, o.family, "--family");
    std::erase_if(models, [&](const ModelSpec& m) { return m.family != family; });
  }
  if (o.json) {
    auto arr = nlohmann::json::array();
    for (const auto& m : models) arr.push_back(model_json(m));
    std::cout << arr.dump(2) << "\n";
    return;
  }
  Table t({"name", "family", "D", "L", "R", "heads", "F", "vocab", "params", "non-embedding"},
          {false, false, true, true, true, true, true, true, true, true});
  for (const auto& m : models) {
    const auto c = count_parameters(m);
    t.add({m.name, to_string(m.family), std::to_string(m.width), std::to_string(m.depth),
           opt(m.recurrent_width), opt(head_count(m)),
           std::to_string(m.mlp_width), std::to_string(m.vocab), format_count(c.total),
           format_count(c.non_embedding)});
  }
  std::cout << t.str();
}

nlohmann::json cluster_json(const ClusterSpec& c) {
  const auto& t = c.topology;
  nlohmann::json topo = {{"kind", to_string(t.kind)}, {"devices", c.devices()}, {"describe", t.describe()}};
  if (t.kind == TopologyKind::torus) {
    topo["dims"] = t.dims;
    topo["wraparound"] = t.wraparound;
    topo["link_bytes_per_s"] = t.link_bytes_per_s;
    topo["hop_latency_seconds"] = t.hop_latency_seconds;
    if (t.pods > 1) {
      topo["pods"] = t.pods;
      topo["dcn_bytes_per_s"] = t.dcn_bytes_per_s;
      topo["dcn_latency_seconds"] = t.dcn_latency_seconds;
    }
  } else {
    topo["islands"] = t.islands;
    topo["devices_per_island"] = t.devices_per_island;
    topo["island_link_bytes_per_s"] = t.island_link_bytes_per_s;
    topo["network_bytes_per_s"] = t.network_bytes_per_s;
    if (t.island_busbw_bytes_per_s > 0) topo["island_busbw_bytes_per_s"] = t.island_busbw_bytes_per_s;
    if (t.network_busbw_bytes_per_s > 0) topo["network_busbw_bytes_per_s"] = t.network_busbw_bytes_per_s;
  }
  return {{"name", c.name}, {"chip", c.chip.name}, {"devices", c.devices()},
          {"peak_flops_per_s", c.chip.peak_flops_per_s}, {"vector_flops_per_s", c.chip.vector_flops_per_s},
          {"memory_bytes", c.chip.memory_bytes}, {"memory_bytes_per_s", c.chip.memory_bytes_per_s},
          {"topology", topo}, {"source", c.source}, {"file", c.origin}};
}

// The headline peak: bf16 if the chip has it, else fp32.
std::pair<std::string, double> headline_peak(const ChipSpec& chip) {
  if (chip.peak_flops_per_s.count("bf16")) return {"bf16", chip.peak("bf16")};
  return {"fp32", chip.peak("fp32")};
}

void list_clusters(const ListOptions& o) {
  std::vector<ClusterSpec> clusters;
  if (!o.name.empty()) clusters.push_back(load_cluster(o.name));
  else clusters = all_cluster_presets();
  if (o.json) {
    auto arr = nlohmann::json::array();
    for (const auto& c : clusters) arr.push_back(cluster_json(c));
    std::cout << arr.dump(2) << "\n";
    return;
  }
  Table t({"name", "chip", "devices", "topology", "peak/chip", "peak total", "memory/chip", "HBM B/s"},
          {false, false, true, false, true, true, true, true});
  for (const auto& c : clusters) {
    const auto [dtype, peak] = headline_peak(c.chip);
    t.add({c.name, c.chip.name, std::to_string(c.devices()), c.topology.describe(),
           format_si(peak, "FLOP/s " + dtype), format_si(peak * static_cast<double>(c.devices()), "FLOP/s"),
           format_bytes(c.chip.memory_bytes), format_si(c.chip.memory_bytes_per_s, "B/s")});
  }
  std::cout << t.str();
}

}  // namespace

void register_list_commands(CLI::App& app) {
  auto mo = std::make_shared<ListOptions>();
  auto* models = app.add_subcommand("models", "List model presets: family, shape and parameter counts");
  models->add_flag("--json", mo->json, "Print JSON instead of a table");
  models->add_option("--family", mo->family, "Only this family (griffin, hawk, mqa, rwkv4, rwkv6, transformer)");
  models->add_option("name", mo->name, "Show one model: preset name or path to a YAML file");
  models->callback([mo] { list_models(*mo); });

  auto co = std::make_shared<ListOptions>();
  auto* clusters = app.add_subcommand("clusters", "List cluster presets: chip, device count, topology, peak FLOP/s, memory");
  clusters->add_flag("--json", co->json, "Print JSON instead of a table");
  clusters->add_option("name", co->name, "Show one cluster: preset name or path to a YAML file");
  clusters->callback([co] { list_clusters(*co); });
}

}  // namespace scanshard
