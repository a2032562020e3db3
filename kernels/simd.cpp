// kernels/simd.cpp — see simd.hpp. Compiled once per target (foreach_target.h) only so that the
// target list and the name of the dispatched target come from the same HWY_TARGETS as the kernels.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::simd::HWY_NAMESPACE {
// The target this copy was compiled for (what HWY_DYNAMIC_DISPATCH picks right now).
const char* TargetNameHere() { return hwy::TargetName(HWY_TARGET); }
}  // namespace scanshard::kernels::simd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <cctype>

#include "kernels/simd.hpp"

namespace scanshard::kernels::simd {

HWY_EXPORT(TargetNameHere);

std::vector<Target> targets() {
  // SupportedTargets() honours the pin; the CPU's own list is what we want here.
  std::vector<Target> out;
  const std::string pinned = current_target();
  hwy::SetSupportedTargetsForTest(0);
  for (const std::int64_t bit : hwy::SupportedAndGeneratedTargets()) out.push_back({bit, hwy::TargetName(bit)});
  // restore a pin that was in force
  for (const auto& t : out)
    if (t.name == pinned && t.bit != out.front().bit) hwy::SetSupportedTargetsForTest(t.bit);
  return out;
}

std::string current_target() { return HWY_DYNAMIC_DISPATCH(TargetNameHere)(); }

void pin_target(std::int64_t bit) { hwy::SetSupportedTargetsForTest(bit); }

bool pin_target(const std::string& name) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
  };
  for (const auto& t : targets())
    if (lower(t.name) == lower(name)) {
      pin_target(t.bit);
      return true;
    }
  return false;
}

}  // namespace scanshard::kernels::simd
#endif  // HWY_ONCE
