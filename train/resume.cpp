// train/resume.cpp — see resume.hpp.
#include "train/resume.hpp"

#include <limits>

#include "program/yaml_reader.hpp"

namespace scanshard::train {
namespace {

[[noreturn]] void refuse(const std::string& path, const std::string& field, const std::string& why) {
  throw ConfigError(path + ": /meta " + field + ": " + why);
}

// The plan text recorded in the checkpoint, parsed as a plan (its own errors name the attribute).
Plan recorded_plan(const CheckpointMeta& meta, const std::string& path) {
  const std::string where = path + ": /meta plan";
  try {
    return parse_plan(parse_yaml(meta.plan_text, where), where);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string(e.what()) + " (the plan the checkpoint was written under is unreadable)");
  } catch (const PlanError& e) {
    throw ConfigError(where + ": " + e.key() + ": " + e.what());
  }
}

void check_plan_fields(const CheckpointMeta& meta, const std::string& path, const Plan& p) {
  const Plan was = recorded_plan(meta, path);
  auto same = [&](const char* key, std::int64_t then, std::int64_t now) {
    if (then != now)
      refuse(path, "plan", std::string(key) + " " + std::to_string(then) + " in the checkpoint, " + std::to_string(now) +
                               " in this run's plan: the data cursor counts steps of global_batch sequences of seq_len + 1 "
                               "tokens, so a run resumes with the same " + key + " (the mesh may differ)");
  };
  same("global_batch", was.global_batch, p.global_batch);
  same("seq_len", was.seq_len, p.seq_len);
}

void check_counters(const CheckpointMeta& meta, const std::string& path, std::int64_t steps) {
  if (meta.step < 0) refuse(path, "step", std::to_string(meta.step) + " is negative");
  if (meta.step > kMaxSteps)
    refuse(path, "step", std::to_string(meta.step) + " is beyond the " + std::to_string(kMaxSteps) + " steps a run may reach");
  if (meta.data_cursor != meta.step)
    refuse(path, "data_cursor", std::to_string(meta.data_cursor) + " is not the step " + std::to_string(meta.step) +
                                    " (the data cursor is the step index)");
  if (meta.seed > std::numeric_limits<std::uint32_t>::max())
    refuse(path, "seed", std::to_string(meta.seed) + " is outside the range of --seed (0 to 4294967295)");
  check_steps(meta.step, steps, path);
}

}  // namespace

std::string model_summary(const ModelSpec& m) {
  return "name: " + m.name + "\nfamily: " + to_string(m.family) + "\nwidth: " + std::to_string(m.width) +
         "\ndepth: " + std::to_string(m.depth) + "\nvocab: " + std::to_string(m.vocab) + "\n";
}

void check_steps(std::int64_t first_step, std::int64_t steps, const std::string& from) {
  if (steps < 0) throw ConfigError("--steps: " + std::to_string(steps) + " is negative");
  if (steps > kMaxSteps - first_step)
    throw ConfigError("--steps: " + std::to_string(steps) + " steps" +
                      (from.empty() ? "" : " after step " + std::to_string(first_step) + " of " + from) +
                      " go beyond the " + std::to_string(kMaxSteps) + " steps a run may reach");
}

ResumePoint check_resume(const CheckpointMeta& meta, const std::string& path, const ModelSpec& m, const Plan& p,
                         std::int64_t steps) {
  if (meta.model_name != m.name)
    refuse(path, "model_name", "a checkpoint of model '" + meta.model_name + "', not '" + m.name + "'");
  if (meta.model_yaml != model_summary(m))
    refuse(path, "model_yaml", "the checkpoint's model is not this run's '" + m.name + "' (family, width, depth or vocab differ)");
  check_plan_fields(meta, path, p);
  check_counters(meta, path, steps);
  return {meta.step, meta.seed};
}

void check_optimizer(const CheckpointMeta& meta, const std::string& path, const OptimizerConfig& now, bool allow) {
  if (meta.optimizer_yaml.empty()) return;
  OptimizerConfig before;
  try {
    before = parse_optimizer(meta.optimizer_yaml, path + ": /meta optimizer");
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": /meta optimizer: not an optimizer record (" + e.what() + ")");
  }
  const std::string changed = optimizer_changes(before, now);
  if (!changed.empty() && !allow)
    throw ConfigError(path + ": /meta optimizer: this run's optimizer differs from the checkpoint's (" + changed +
                      "); pass --allow-optimizer-change to resume with the new one");
}

std::string check_data(const CheckpointMeta& meta, const std::string& path, const DataIdentity& now, bool allow) {
  if (meta.data_yaml.empty()) return "";
  DataIdentity before;
  try {
    before = parse_data_identity(meta.data_yaml, path + ": /meta data");
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": /meta data: not a data record (" + e.what() + ")");
  }
  auto name = [](const DataIdentity& d) { return d.path.empty() ? std::string("tokens in memory") : d.path; };
  const std::string changed = data_changes(before, now);
  if (!changed.empty() && !allow)
    throw ConfigError(path + ": /meta data: this run's data differs from the checkpoint's (" + name(before) + " → " + name(now) +
                      ": " + changed + "); the data cursor would continue in other tokens: pass --allow-data-change to resume on "
                      "the new data");
  if (!changed.empty()) return "resuming on other data than the checkpoint's (--allow-data-change): " + changed;
  if (before.path != now.path) return "the data file moved: " + name(before) + " → " + name(now) + " (the same size and CRC-32)";
  return "";
}

}  // namespace scanshard::train
