// measure/vector_loops.cpp — see vector_loops.hpp. Plain loops, compiled once per SIMD target (this
// file is re-included by hwy/foreach_target.h; inside HWY_BEFORE_NAMESPACE the compiler
// vectorises them for that target, with FMA where the target has it: -ffp-contract=fast).
#include <cstddef>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "measure/vector_loops.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::vector_loops::HWY_NAMESPACE {

void Triad(float* __restrict a, const float* __restrict b, const float* __restrict c, float s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

void FmaLanes128(float* acc_io, long reps, float mul, float add) {
  constexpr int kLanes = 128;
  alignas(64) float acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = acc_io[j];
  for (long r = 0; r < reps; ++r)
    for (int j = 0; j < kLanes; ++j) acc[j] = acc[j] * mul + add;
  for (int j = 0; j < kLanes; ++j) acc_io[j] = acc[j];
}

}  // namespace scanshard::vector_loops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "measure/vector_loops.hpp"

namespace scanshard::vector_loops {

HWY_EXPORT(Triad);
HWY_EXPORT(FmaLanes128);

void triad(float* a, const float* b, const float* c, float s, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(Triad)(a, b, c, s, n);
}
void fma_lanes128(float* acc, long reps, float mul, float add) {
  HWY_DYNAMIC_DISPATCH(FmaLanes128)(acc, reps, mul, add);
}

}  // namespace scanshard::vector_loops
#endif  // HWY_ONCE
