// tests/kernels/test_memory.cpp — kernels::AlignedVec's huge-page advice (kernels.hpp
// advise_huge_pages): a buffer of ≥ kHugePageMinBytes lies in a mapping the kernel marks
// VM_HUGEPAGE ("hg" in /proc/self/smaps VmFlags, what madvise(MADV_HUGEPAGE) sets), read back
// from the OS rather than from our code; its contents are what was written.
#include "helpers.hpp"
#include "kernels/kernels.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace k = scanshard::kernels;

namespace {
// The VmFlags line of the /proc/self/smaps mapping holding address a ("" if none or unreadable).
std::string vm_flags_at(std::uintptr_t a) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < line.find(' ')) inside = lo <= a && a < hi;
    else if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}
}  // namespace

TEST_CASE("AlignedVec: a large buffer is advised onto huge pages, its data intact", "[memory]") {
  const char* off = std::getenv("SCANSHARD_HUGE_PAGES");
  if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled") || (off && std::strcmp(off, "0") == 0)) {
    WARN("no transparent huge pages here (or SCANSHARD_HUGE_PAGES=0): nothing to check");
    return;
  }
  const std::size_t n = 3 * k::kHugePageMinBytes / sizeof(float);
  k::AlignedVec v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float(i % 1000);
  const auto mid = reinterpret_cast<std::uintptr_t>(v.data() + n / 2);
  const std::string flags = vm_flags_at(mid);
  INFO("smaps of the buffer's mapping: " << flags);
  REQUIRE(!flags.empty());
  CHECK(flags.find(" hg") != std::string::npos);
  CHECK(reinterpret_cast<std::uintptr_t>(v.data()) % 64 == 0);
  CHECK(v[n / 2] == float((n / 2) % 1000));
  CHECK(v[n - 1] == float((n - 1) % 1000));
}
