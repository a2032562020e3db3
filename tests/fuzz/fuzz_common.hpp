// tests/fuzz/fuzz_common.hpp — what the libFuzzer targets share: the input as a file on disk
// (the loaders under test take a path, as the CLI does) and the rule that an input problem may
// only ever surface as ConfigError or PlanError (the CLI's exit 2). Any other exception escaping
// a loader is a defect (it would be exit 1, "runtime failure") and aborts the run, as do crashes,
// leaks and ASan/UBSan reports.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

#include <unistd.h>

#include "program/plan.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard::fuzz {

// A per-process scratch file (in /dev/shm when there is one), rewritten for every input.
inline const std::string& scratch_path(const char* suffix) {
  static const std::string path = [&] {
    const char* dir = std::getenv("SCANSHARD_FUZZ_TMP");
    if (!dir) dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/scanshard-fuzz-" + std::to_string(::getpid()) + suffix;
  }();
  return path;
}

inline const std::string& write_input(const std::uint8_t* data, std::size_t size, const char* suffix) {
  const std::string& path = scratch_path(suffix);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

// Runs f; ConfigError / PlanError are the expected outcome of a bad input, anything else aborts.
template <class F> void expect_input_errors_only(F&& f) {
  try {
    f();
  } catch (const ConfigError&) {
  } catch (const PlanError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: an input error escaped as %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

}  // namespace scanshard::fuzz
