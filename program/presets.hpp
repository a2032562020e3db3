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

// A model, cluster or chip named inside a YAML file (`model:`, `cluster:`, `chip:`): a relative path
// resolves against the directory of `naming_file` (the file that names it), so a plan or cluster
// file works from any working directory; a preset name or an absolute path is returned unchanged.
// An empty `naming_file` (a flag, text with no file) leaves a relative path to the working directory.
std::string resolve_named_path(const std::string& name_or_path, const std::string& naming_file);
// The inverse, for writing `name_or_path` (relative to the working directory) into the file
// `file`: a relative path is rewritten relative to `file`'s directory.
std::string path_for_file(const std::string& name_or_path, const std::string& file);
// Whether two names mean the same model or cluster: equal text, or two paths to the same file.
bool same_config(const std::string& a, const std::string& b);

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
