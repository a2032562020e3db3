// tests/unit/test_names.cpp — every unit test reaches ctest. catch_discover_tests reads the test
// names as a CMake list: one unbalanced `[` (a name such as "… in [0, 1)") made CMake join that
// name with every name after it into one ctest entry that matched no test and "passed" — 99 of
// 122 unit tests did not run under `ctest` until this check.
#include <catch2/catch.hpp>

#include <string>

TEST_CASE("every unit test name survives ctest discovery (no brackets or semicolons)", "[meta]") {
  const auto& all = Catch::getRegistryHub().getTestCaseRegistry().getAllTests();
  REQUIRE(all.size() > 100);
  for (const auto& t : all) {
    INFO(t.getTestCaseInfo().name);
    CHECK(t.getTestCaseInfo().name.find_first_of("[];") == std::string::npos);
  }
}
