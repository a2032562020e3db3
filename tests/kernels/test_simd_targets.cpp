// tests/kernels/test_simd_targets.cpp — the SIMD target list (kernels/simd.hpp): it holds every
// vector unit this CPU has, and pinning selects each. The kernels themselves are checked on every
// target by their own fast-vs-reference tests (kt::on_every_simd_target, helpers.hpp: RG-LRU,
// Conv1D, WKV-4, WKV-6, token shift, ddlerp, gates, gelu⊙), and the scan suites once more per
// target through ctest (`kernel_tests --simd-target NAME`, tests/CMakeLists.txt).
// Not for: kernel results (test_<kernel>.cpp), timing (bench/).
#include <algorithm>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "kernels/simd.hpp"

namespace simd = scanshard::kernels::simd;

namespace {

// Restores the target in force before the test (kernel_tests --simd-target pins one for the whole
// run) when the test ends, also when a REQUIRE throws.
struct PinGuard {
  const std::string before = simd::current_target();
  ~PinGuard() { simd::pin_target(before); }
};

}  // namespace

TEST_CASE("SIMD targets: the list holds every vector unit this CPU has, and pinning selects each", "[simd]") {
  PinGuard unpin;
  const auto all = simd::targets();
  REQUIRE(!all.empty());
  std::vector<std::string> names;
  for (const auto& t : all) names.push_back(t.name);
  INFO("targets: " << ::Catch::Detail::stringify(names));
#if defined(__x86_64__)
  // the AVX2 and SSE4 code paths must be reachable (and so tested below) wherever the CPU has them
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(std::count(names.begin(), names.end(), "AVX2") == 1);
  if (__builtin_cpu_supports("sse4.2")) CHECK(std::count(names.begin(), names.end(), "SSE4") == 1);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    CHECK(std::count(names.begin(), names.end(), "AVX3") == 1);
#endif
  for (const auto& t : all) {
    simd::pin_target(t.bit);
    CHECK(simd::current_target() == t.name);
  }
  CHECK_FALSE(simd::pin_target(std::string("no-such-target")));
  simd::pin_target(std::int64_t(0));
  CHECK(simd::current_target() == all.front().name);  // unpinned: the best one
}

TEST_CASE("SIMD targets: on_every_simd_target runs the body once on each target, then restores the pin", "[simd]") {
  PinGuard unpin;
  const std::string before = simd::current_target();
  std::vector<std::string> seen;
  kt::on_every_simd_target([&] { seen.push_back(simd::current_target()); });
  CHECK(simd::current_target() == before);
  if (!kt::command_line_simd_target().empty()) {
    CHECK(seen == std::vector<std::string>{before});  // the command line's pin only
    return;
  }
  std::vector<std::string> want;
  for (const auto& t : simd::targets()) want.push_back(t.name);
  CHECK(seen == want);
}
