// train/checkpoint_dir.hpp — the checkpoint directory of a run: the step files' names, the
// `latest` pointer and retention (--keep-last).
//
// For: the runner (after each checkpoint, rank 0 only), `scanshard train` and `scanshard launch`
// (whose job script resumes from the highest-numbered step file). Not for: the files' content
// (checkpoint.hpp writes and reads them, each renamed into place whole).
//
// Names: step-<N>.h5 with N zero-padded to kStepDigits digits ("step-00000012.h5"), so a plain
// `ls` or a shell glob lists them in step order (up to 10^8 steps; beyond, the name grows and
// only a numeric sort orders it). Readers accept any step-<digits>.h5, padded or not.
// `latest`: a one-line text file naming the newest step file ("step-00000012.h5\n"), replaced
// atomically (program/output_file.hpp) after the step file is renamed into place, so it always
// names a complete checkpoint.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace scanshard::train {

inline constexpr int kStepDigits = 8;
inline constexpr const char* kLatestPointer = "latest";

// "step-00000012.h5" for step 12.
std::string step_file_name(std::int64_t step);
// The step of a file name step-<digits>.h5 (padded or not); nullopt for any other name.
std::optional<std::int64_t> step_of_file_name(const std::string& name);

struct StepFile {
  std::int64_t step = 0;
  std::string path;
};
// The regular files step-<digits>.h5 in `dir`, by step (ascending). Not collective.
std::vector<StepFile> list_step_files(const std::string& dir);

// Replaces <dir>/latest by "<step_file_name(step)>\n" atomically. Throws ConfigError on failure.
void write_latest_pointer(const std::string& dir, std::int64_t step);

// What `train --resume PATH` reads: PATH itself when it is a file; for a checkpoint directory the
// step file its `latest` pointer names. Throws ConfigError naming the directory when the pointer
// is missing, is not one step file name, or names a file that is not there. Not collective.
std::string resolve_resume_path(const std::string& path);

// Retention: keeps the `keep_last` highest-numbered step files up to `newest` (the one just
// written) and removes the older ones; files numbered above `newest` (another run's) are left
// alone. keep_last ≤ 0 keeps everything. Returns the removed paths; a file that cannot be
// removed is skipped (reported in `failed`). Not collective: rank 0 calls it.
std::vector<std::string> prune_step_files(const std::string& dir, std::int64_t keep_last, std::int64_t newest,
                                          std::vector<std::string>* failed = nullptr);

}  // namespace scanshard::train
