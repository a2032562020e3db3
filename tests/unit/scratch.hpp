// tests/unit/scratch.hpp — what the tests that run the scanshard executable share: a fresh
// directory per test case, a file's text, and a command's exit code with its output.
// For: test_report.cpp and test_timeline.cpp. Not for: fixtures (tests/data, SCANSHARD_TEST_DATA).
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace scanshard::testing {

struct Result { int code; std::string out, err; };

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh directory per test case, removed at the end.
struct Scratch {
  std::filesystem::path dir;
  explicit Scratch(const std::string& tag) {
    dir = std::filesystem::temp_directory_path() / ("scanshard-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~Scratch() { std::filesystem::remove_all(dir); }
};

}  // namespace scanshard::testing
