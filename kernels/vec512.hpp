// kernels/vec512.hpp — explicit AVX-512 helpers for the bandwidth-bound scan kernels (rglru, rwkv4).
//
// Why: with -O3 -march=native and no -ffast-math, GCC vectorises the scalar helpers of kernels.hpp
// inside the scan loops but if-converts the clamps of exp_fast into mask arithmetic (k-register
// juggling through general registers, exp re-evaluated at the clamp constants), and keeps vdivps
// and vsqrtps: ~120 instructions per 16 elements, which made the RG-LRU scan compute-bound (1.4
// ns/element in cache against 0.5 ns/element of DRAM traffic). The scans are bound by the FMA
// pipes, so the helpers here minimise multiply-class operations: exp as 2^y with vscalefps (no
// clamps), divisions and square roots on the divider (vdivps, vsqrtps), which runs beside them.
// Not for: anything that must equal the references bit for bit (tests compare with tolerances).
// Only compiled when the target has AVX-512F (SCANSHARD_VEC512); callers keep a portable path.
#pragma once
#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>
#define SCANSHARD_VEC512 1

namespace scanshard::kernels::v512 {

using V = __m512;
using M = __mmask16;

inline V set1(float x) { return _mm512_set1_ps(x); }

// √x, max, min in their all-lanes masked forms: GCC 12 warns (-Wmaybe-uninitialized) about the
// _mm512_undefined_ps inside the unmasked intrinsics; the instructions are the same.
inline V sqrt(V x) { return _mm512_mask_sqrt_ps(x, M(0xFFFF), x); }
inline V max(V x, V y) { return _mm512_mask_max_ps(x, M(0xFFFF), x, y); }
inline V min(V x, V y) { return _mm512_mask_min_ps(x, M(0xFFFF), x, y); }

// Lanes [0, n) of a 16-lane block, n ≤ 16.
inline M lanes(std::int64_t n) { return n >= 16 ? M(0xFFFF) : M((1u << n) - 1u); }

// 2^y for any finite y: k = round(y), f = y − k ∈ [−½, ½], 2^f by a degree-5 polynomial
// (Chebyshev fit, relative error ≤ 1.6e-7 on [−½, ½]) and 2^k by vscalefps, which saturates to
// +inf / 0 outside the float range — so no clamps; 3–4 multiply-class operations fewer than
// exp_fast's shift-and-add form. Callers scale natural exponents by kLog2e (or hoist it).
inline V exp2(V y) {
  const V k = _mm512_mask_roundscale_ps(y, M(0xFFFF), y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const V f = _mm512_sub_ps(y, k);
  V p = set1(1.339086331e-3f);
  p = _mm512_fmadd_ps(p, f, set1(9.676031768e-03f));
  p = _mm512_fmadd_ps(p, f, set1(5.550356954e-02f));
  p = _mm512_fmadd_ps(p, f, set1(2.402210683e-01f));
  p = _mm512_fmadd_ps(p, f, set1(6.931471825e-01f));
  p = _mm512_fmadd_ps(p, f, set1(1.000000119e+00f));
  return _mm512_mask_scalef_ps(p, M(0xFFFF), p, k);
}
inline constexpr float kLog2e = 1.44269504088896341f;

// σ(x) = 1/(1 + 2^{−x·log2 e}) with a true division (the divider runs beside the FMA pipes;
// 1/(1 + inf) = 0 exactly, so no clamp is needed either).
inline V sigmoid(V x) {
  return _mm512_div_ps(set1(1.0f), _mm512_add_ps(set1(1.0f), exp2(_mm512_mul_ps(x, set1(-kLog2e)))));
}

}  // namespace scanshard::kernels::v512
#endif
