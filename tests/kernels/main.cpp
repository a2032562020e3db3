// tests/kernels/main.cpp — Catch2 main for the kernel tests (kernel_tests, ctest prefix "Kernels.").
// `--simd-target NAME` (e.g. AVX2, SSE4) pins the dispatched kernels (kernels/simd.hpp) to one
// SIMD target before any test runs, so ctest can run the scan kernels' whole suite on every
// target of this CPU (tests/CMakeLists.txt). A target this CPU lacks exits with kSkipped, which
// ctest reports as skipped (SKIP_RETURN_CODE), never as passed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "kernels/simd.hpp"

namespace {
constexpr int kSkipped = 77;
}

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::string target;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--simd-target") == 0 && i + 1 < argc) {
      target = argv[++i];
      continue;
    }
    rest.push_back(argv[i]);
  }
  if (!target.empty()) {
    if (!scanshard::kernels::simd::pin_target(target)) {
      std::fprintf(stderr, "kernel_tests: SIMD target %s is not supported by this CPU (or not compiled): skipped\n",
                   target.c_str());
      return kSkipped;
    }
    kt::command_line_simd_target() = scanshard::kernels::simd::current_target();
    std::fprintf(stderr, "kernel_tests: kernels pinned to SIMD target %s\n",
                 scanshard::kernels::simd::current_target().c_str());
  }
  return Catch::Session().run(int(rest.size()), rest.data());
}
