// train/checkpoint_dir.cpp — see checkpoint_dir.hpp.
#include "train/checkpoint_dir.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "program/output_file.hpp"
#include "program/yaml_reader.hpp"

namespace fs = std::filesystem;

namespace scanshard::train {

std::string step_file_name(std::int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step-%0*lld.h5", kStepDigits, static_cast<long long>(step));
  return name;
}

std::optional<std::int64_t> step_of_file_name(const std::string& name) {
  const std::string prefix = "step-", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(digits);
}

std::vector<StepFile> list_step_files(const std::string& dir) {
  std::vector<StepFile> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto step = step_of_file_name(it->path().filename().string());
    std::error_code rf;
    if (step && it->is_regular_file(rf)) out.push_back({*step, it->path().string()});
  }
  std::sort(out.begin(), out.end(), [](const StepFile& a, const StepFile& b) {
    return a.step != b.step ? a.step < b.step : a.path < b.path;
  });
  return out;
}

std::string resolve_resume_path(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return path;
  const std::string pointer = path + "/" + kLatestPointer;
  std::FILE* f = std::fopen(pointer.c_str(), "rb");
  if (!f)
    throw ConfigError(path + ": a checkpoint directory without a `latest` pointer (give a step file, e.g. " + path + "/" +
                      step_file_name(1) + ")");
  char buf[128] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string name(buf, n);
  if (!name.empty() && name.back() == '\n') name.pop_back();
  if (!step_of_file_name(name) || name.find('/') != std::string::npos)
    throw ConfigError(pointer + ": expected one step file name such as " + step_file_name(12) + ", got '" +
                      name.substr(0, 40) + "'");
  const std::string file = path + "/" + name;
  if (!fs::is_regular_file(file, ec)) throw ConfigError(pointer + ": names " + name + ", which is not in " + path);
  return file;
}

void write_latest_pointer(const std::string& dir, std::int64_t step) {
  write_output_file(dir + "/" + kLatestPointer, step_file_name(step) + "\n");
}

std::vector<std::string> prune_step_files(const std::string& dir, std::int64_t keep_last, std::int64_t newest,
                                          std::vector<std::string>* failed) {
  std::vector<std::string> removed;
  if (keep_last <= 0) return removed;
  std::vector<StepFile> files = list_step_files(dir);
  files.erase(std::remove_if(files.begin(), files.end(), [&](const StepFile& f) { return f.step > newest; }), files.end());
  // distinct steps, newest first: the first keep_last of them stay (a padded and an unpadded
  // name of the same step count as one step)
  std::int64_t kept_steps = 0, last_step = -1;
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (it->step != last_step) {
      ++kept_steps;
      last_step = it->step;
    }
    if (kept_steps <= keep_last) continue;
    std::error_code ec;
    if (fs::remove(it->path, ec)) removed.push_back(it->path);
    else if (failed) failed->push_back(it->path + ": " + (ec ? ec.message() : std::string("already gone")));
  }
  std::reverse(removed.begin(), removed.end());
  return removed;
}

}  // namespace scanshard::train
