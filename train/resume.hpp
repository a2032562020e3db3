// train/resume.hpp — where a run starts: every /meta field of a checkpoint checked against the
// run before it resumes from it, and the bound on a run's step count.
//
// For: the runner (run() on resume and before the first step), `scanshard train` (--steps before
// any file is read) and the fuzz target of the checkpoint metadata. A checkpoint is untrusted
// input: a file re-sealed after an edit passes the integrity check (checkpoint.hpp), so each value
// is range-checked here and refused with a ConfigError "<checkpoint>: /meta <field>: <reason>".
// The checks read only the meta and the run's model and plan, so every rank (each reads the same
// /meta) reaches the same verdict without communicating.
// Not for: the file's structure, tensor names, shapes and dtypes (read_checkpoint checks those).
#pragma once
#include <cstdint>
#include <string>

#include "program/model.hpp"
#include "program/plan.hpp"
#include "train/checkpoint.hpp"
#include "train/optimizer.hpp"
#include "train/tokens.hpp"

namespace scanshard::train {

// Steps a run may reach (a checkpoint's step plus --steps). Far beyond any real run (10^12 steps
// of 1 ms are 31 years) and small enough that the data cursor and step counters cannot overflow.
inline constexpr std::int64_t kMaxSteps = 1'000'000'000'000;

// The /meta model_yaml of `m`'s checkpoints: the fields that make it this model.
std::string model_summary(const ModelSpec& m);

// ConfigError naming --steps unless 0 ≤ steps and first_step + steps ≤ kMaxSteps (first_step:
// 0, or the step a checkpoint resumes from, named `from` in the message).
void check_steps(std::int64_t first_step, std::int64_t steps, const std::string& from = "");

struct ResumePoint {
  std::int64_t step = 0;   // the first step to run (the checkpoint's step = its data cursor)
  std::uint64_t seed = 0;  // the dropout masks' seed
};

// The checkpoint `path`'s /meta against a run of `steps` more steps of model `m` under plan `p`:
//   model_name, model_yaml: this model (model_summary);
//   plan: a plan (parsed as such) with the run's global_batch and seq_len — the data cursor counts
//     steps of global_batch sequences of seq_len + 1 tokens; the mesh (rank count) may differ;
//   step: 0 ≤ step and step + steps ≤ kMaxSteps; data_cursor: equal to step (the cursor is the
//     step index; every position it yields is taken modulo the data file's length);
//   seed: a value --seed can give (32 bits).
ResumePoint check_resume(const CheckpointMeta& meta, const std::string& path, const ModelSpec& m, const Plan& p,
                         std::int64_t steps);

// The checkpoint's /meta optimizer against the run's: a parse failure is refused like any bad
// /meta field; a different optimizer is a ConfigError naming the changed keys unless `allow`
// (--allow-optimizer-change). A checkpoint without the record (written before it was kept) passes.
void check_optimizer(const CheckpointMeta& meta, const std::string& path, const OptimizerConfig& now, bool allow);

// The checkpoint's /meta data against this run's data (DataIdentity): a parse failure is refused
// like any bad /meta field; other content (size or CRC-32) is a ConfigError naming what changed
// unless `allow` (--allow-data-change). Returns a notice when only the path differs (the same
// content, moved) or a change was allowed; "" otherwise. A checkpoint without the record passes.
std::string check_data(const CheckpointMeta& meta, const std::string& path, const DataIdentity& now, bool allow);

}  // namespace scanshard::train
