// program/presets.hpp — named presets (configs/{models,clusters,chips}/*.yaml, embedded in the
// binary) and loading a model or cluster by preset name or by YAML path.
// For: every command that takes --model/--cluster. Not for: the meaning of the fields.
#pragma once
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/model.hpp"

namespace scanshard {

enum class PresetKind { models, clusters, chips };

// Sorted preset names of one kind ("griffin-400m", ...).
std::vector<std::string> preset_names(PresetKind kind);

// An argument is a path if it contains '/' or ends in .yaml/.yml; otherwise a preset name.
bool looks_like_path(const std::string& arg);

// Load by preset name or path. Unknown names are a ConfigError listing the available presets,
// prefixed with `context` (where the name came from: "--model", "plan.yaml: model").
ModelSpec load_model(const std::string& name_or_path, const std::string& context = "--model");
ClusterSpec load_cluster(const std::string& name_or_path, const std::string& context = "--cluster");
// A cluster from YAML text, read as if it were the file `file` (chip presets resolved as by
// load_cluster): for checking a cluster file before it is written.
ClusterSpec parse_cluster_text(const std::string& text, const std::string& file);

std::vector<ModelSpec> all_model_presets();
std::vector<ClusterSpec> all_cluster_presets();

}  // namespace scanshard
