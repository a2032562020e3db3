// kernels/vec512.hpp — explicit AVX-512 helpers for the bandwidth-bound scan kernels (rglru, rwkv4).
//
// Why: with -O3 -march=native and no -ffast-math, GCC vectorises the scalar helpers of kernels.hpp
// inside the scan loops but if-converts the clamps of exp_fast into mask arithmetic (k-register
// juggling through general registers, exp re-evaluated at the clamp constants), and keeps vdivps
// and vsqrtps: ~120 instructions per 16 elements, which made the RG-LRU scan compute-bound (1.4
// ns/element in cache against 0.5 ns/element of DRAM traffic). Here the same exp (reduction and
// polynomial of exp_fast) is written once in 16 lanes with vminps/vmaxps clamps, and 1/x, 1/√x use
// the 14-bit hardware estimates refined by one Newton step (relative error ≲ 2⁻²² — a few ulp).
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

// exp_fast of kernels.hpp in 16 lanes for an argument ALREADY within [−87.3, 88] (callers clamp
// only the sides that can be reached): x = k·ln2 + r, degree-6 polynomial, 2^k from the bits.
inline V exp_in_range(V x) {
  const V magic = set1(12582912.0f);  // 1.5·2²³
  const V t = _mm512_fmadd_ps(x, set1(1.44269504088896341f), magic);
  const V k = _mm512_sub_ps(t, magic);
  const V r = _mm512_fnmadd_ps(k, set1(0.693147180559945309f), x);
  V p = set1(1.3888889e-3f);
  p = _mm512_fmadd_ps(p, r, set1(8.3333333e-3f));
  p = _mm512_fmadd_ps(p, r, set1(4.1666667e-2f));
  p = _mm512_fmadd_ps(p, r, set1(1.6666667e-1f));
  p = _mm512_fmadd_ps(p, r, set1(0.5f));
  p = _mm512_fmadd_ps(p, r, set1(1.0f));
  p = _mm512_fmadd_ps(p, r, set1(1.0f));
  // bits(t) = 0x4B400000 + k  →  bits(2^k) = (bits(t) << 23) + ((127 − 0x4B400000) << 23)
  const __m512i bits = _mm512_add_epi32(_mm512_slli_epi32(_mm512_castps_si512(t), 23),
                                        _mm512_set1_epi32(int(std::uint32_t(127 - 0x4B400000) << 23)));
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}
// exp_fast for x ≤ 88 (only the lower clamp is applied).
inline V exp_le0(V x) { return exp_in_range(max(x, set1(-87.3f))); }

// 2^y for any finite y: k = round(y), f = y − k ∈ [−½, ½], 2^f by a degree-5 polynomial
// (Chebyshev fit, relative error ≤ 1.6e-7 on [−½, ½]) and 2^k by vscalefps, which saturates to
// +inf / 0 outside the float range — so no clamps. Four multiply-class operations fewer than
// exp_in_range (the FMA pipes are what the scans are bound by).
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

// 1/x: rcp14 + one Newton step.
inline V rcp(V x) {
  const V r = _mm512_rcp14_ps(x);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(x, r, set1(1.0f)), r);
}
// 1/√x for x > 0: rsqrt14 + one Newton step, y·(1.5 − ½x·y²).
inline V rsqrt(V x) {
  const V y = _mm512_rsqrt14_ps(x);
  const V hxy = _mm512_mul_ps(_mm512_mul_ps(x, set1(0.5f)), y);
  return _mm512_mul_ps(y, _mm512_fnmadd_ps(hxy, y, set1(1.5f)));
}

// σ(x1), σ(x2) with one reciprocal, as sigmoid2_fast: u = 1 + e^{−x1}, v = 1 + e^{−x2},
// σ(x1) = v/(uv), σ(x2) = u/(uv); −x clamped to [−87.3, 40] so that uv stays finite.
inline void sigmoid2(V x1, V x2, V& s1, V& s2) {
  const V lo = set1(-87.3f), hi = set1(40.0f);
  const V n1 = min(max(_mm512_sub_ps(_mm512_setzero_ps(), x1), lo), hi);
  const V n2 = min(max(_mm512_sub_ps(_mm512_setzero_ps(), x2), lo), hi);
  const V u = _mm512_add_ps(set1(1.0f), exp_in_range(n1));
  const V v = _mm512_add_ps(set1(1.0f), exp_in_range(n2));
  const V inv = rcp(_mm512_mul_ps(u, v));
  s1 = _mm512_mul_ps(v, inv);
  s2 = _mm512_mul_ps(u, inv);
}

}  // namespace scanshard::kernels::v512
#endif
