// program/presets.cpp — see presets.hpp.
#include "program/presets.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "program/embedded.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {
namespace {

std::string dir_of(PresetKind kind) {
  switch (kind) {
    case PresetKind::models: return "configs/models/";
    case PresetKind::clusters: return "configs/clusters/";
    case PresetKind::chips: return "configs/chips/";
  }
  return "";
}

std::string stem(std::string_view path, const std::string& dir) {
  auto s = std::string(path.substr(dir.size()));
  return s.substr(0, s.rfind('.'));
}

const EmbeddedFile* find_preset(PresetKind kind, const std::string& name) {
  const auto dir = dir_of(kind);
  for (const auto& f : embedded_files())
    if (f.path.starts_with(dir) && stem(f.path, dir) == name) return &f;
  return nullptr;
}

std::string joined_names(PresetKind kind) {
  std::string s;
  for (const auto& n : preset_names(kind)) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// (YAML node, file) for a preset name or a path; unknown names throw invalid_argument.
std::pair<YAML::Node, std::string> resolve(PresetKind kind, const std::string& name_or_path) {
  if (looks_like_path(name_or_path)) {
    std::error_code ec;  // said here so that the caller's context (which file, which key) comes first
    if (!std::filesystem::is_regular_file(name_or_path, ec))
      throw std::invalid_argument(name_or_path + ": cannot open file (" +
                                  (std::filesystem::exists(name_or_path, ec) ? "not a regular file" : "no such file") + ")");
    return {load_yaml_file(name_or_path), name_or_path};
  }
  const EmbeddedFile* f = find_preset(kind, name_or_path);
  const char* what = kind == PresetKind::models ? "model" : kind == PresetKind::clusters ? "cluster" : "chip";
  if (!f)
    throw std::invalid_argument(std::string("unknown ") + what + " preset '" + name_or_path +
                                "' (available: " + joined_names(kind) + "; or give a path to a .yaml file)");
  const std::string file(f->path);
  return {parse_yaml(std::string(f->text), file), file};
}

// `on_disk`: the cluster file was read from disk, so a relative `chip:` path is relative to it
// (an embedded preset names chip presets).
ClusterSpec cluster_from(const std::pair<YAML::Node, std::string>& src, bool on_disk) {
  const std::string naming_file = on_disk ? src.second : "";
  return parse_cluster(src.first, src.second, [&](const std::string& chip) {
    return resolve(PresetKind::chips, resolve_named_path(chip, naming_file));
  });
}

}  // namespace

bool looks_like_path(const std::string& arg) {
  return arg.find('/') != std::string::npos || arg.ends_with(".yaml") || arg.ends_with(".yml");
}

std::string resolve_named_path(const std::string& name_or_path, const std::string& naming_file) {
  const std::filesystem::path p(name_or_path);
  if (naming_file.empty() || !looks_like_path(name_or_path) || p.is_absolute()) return name_or_path;
  return (std::filesystem::path(naming_file).parent_path() / p).lexically_normal().string();
}

std::string path_for_file(const std::string& name_or_path, const std::string& file) {
  const std::filesystem::path p(name_or_path);
  if (!looks_like_path(name_or_path) || p.is_absolute()) return name_or_path;
  const auto dir = std::filesystem::absolute(std::filesystem::path(file)).parent_path();
  return std::filesystem::absolute(p).lexically_normal().lexically_relative(dir).string();
}

bool same_config(const std::string& a, const std::string& b) {
  if (a == b) return true;
  if (!looks_like_path(a) || !looks_like_path(b)) return false;
  std::error_code ec_a, ec_b;
  const auto ca = std::filesystem::weakly_canonical(a, ec_a), cb = std::filesystem::weakly_canonical(b, ec_b);
  return !ec_a && !ec_b && ca == cb;
}

std::vector<std::string> preset_names(PresetKind kind) {
  const auto dir = dir_of(kind);
  std::vector<std::string> out;
  for (const auto& f : embedded_files())
    if (f.path.starts_with(dir)) out.push_back(stem(f.path, dir));
  std::sort(out.begin(), out.end());
  return out;
}

ModelSpec load_model(const std::string& name_or_path, const std::string& context) {
  std::pair<YAML::Node, std::string> src;
  try {
    src = resolve(PresetKind::models, name_or_path);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(context + ": " + e.what());
  }
  return parse_model(src.first, src.second);
}

ClusterSpec load_cluster(const std::string& name_or_path, const std::string& context) {
  // "<preset>-<nodes>": an islands preset (one node type, e.g. dgx-a100) with that many islands,
  // unless a preset has exactly that name (dgx-h100-32).
  if (!looks_like_path(name_or_path) && !find_preset(PresetKind::clusters, name_or_path)) {
    const auto dash = name_or_path.rfind('-');
    const std::string base = dash == std::string::npos ? "" : name_or_path.substr(0, dash);
    const std::string count = dash == std::string::npos ? "" : name_or_path.substr(dash + 1);
    if (!count.empty() && count.size() <= 7 && std::all_of(count.begin(), count.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
        find_preset(PresetKind::clusters, base)) {
      ClusterSpec c = cluster_from(resolve(PresetKind::clusters, base), false);
      const std::int64_t nodes = std::stoll(count);
      if (c.topology.kind != TopologyKind::islands)
        throw ConfigError(context + ": '" + name_or_path + "': only island (node) presets take a node count; " + base + " is a " +
                          to_string(c.topology.kind));
      if (nodes < 1) throw ConfigError(context + ": '" + name_or_path + "': the node count must be at least 1");
      c.topology.islands = nodes;
      c.name = name_or_path;
      return c;
    }
  }
  std::pair<YAML::Node, std::string> src;
  try {
    src = resolve(PresetKind::clusters, name_or_path);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(context + ": " + e.what() + " (island presets such as dgx-a100 take a node count: dgx-a100-64)");
  }
  return cluster_from(src, looks_like_path(name_or_path));
}

ClusterSpec parse_cluster_text(const std::string& text, const std::string& file) {
  return cluster_from({parse_yaml(text, file), file}, true);
}

std::vector<ModelSpec> all_model_presets() {
  std::vector<ModelSpec> out;
  for (const auto& n : preset_names(PresetKind::models)) out.push_back(load_model(n));
  return out;
}

std::vector<ClusterSpec> all_cluster_presets() {
  std::vector<ClusterSpec> out;
  for (const auto& n : preset_names(PresetKind::clusters)) out.push_back(load_cluster(n));
  return out;
}

}  // namespace scanshard
