// kernels/memory.cpp — see kernels.hpp (advise_huge_pages).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/kernels.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace scanshard::kernels {

namespace {
bool huge_pages_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("SCANSHARD_HUGE_PAGES");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}
}  // namespace

void advise_huge_pages(void* p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kHugePageMinBytes || !huge_pages_enabled()) return;
  // madvise wants a page-aligned start; the kernel rounds the length up to whole pages, so the
  // range is cut to the pages wholly inside the buffer (its neighbours keep their own policy)
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + page - 1) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace scanshard::kernels
