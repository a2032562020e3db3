// kernels/simd_math-inl.h — per-target SIMD helpers (Google Highway) for the hand-vectorised
// kernels: the scans' 2^y and σ (rglru.cpp, rwkv4.cpp), the elementwise ops' e^x, σ, tanh and
// tanh-GeLU on Highway's contrib math (rwkv_ops.cpp, mlp.cpp), partial-vector loads/stores, a
// whole-vectors-then-tail loop, cache hints.
//
// For: code inside `namespace scanshard::kernels::HWY_NAMESPACE` of a file compiled once per
// target through hwy/foreach_target.h (include this after foreach_target.h, like any Highway -inl
// header; the include guard toggles per target). Runtime dispatch and the list of targets:
// simd.hpp. Not for: anything that must equal the references bit for bit (tests compare with
// tolerances), or scalar code (kernels.hpp has exp_fast / sigmoid_fast).
//
// Why not Highway's contrib Exp: the scans are bound by the FMA pipes once their memory streams
// are fed, so these helpers spend as few multiply-class operations as possible: exp as 2^y with a
// degree-5 polynomial (the numeric approach of the former vec512.hpp, unchanged), divisions and
// square roots on the divider, which runs beside the FMA pipes. contrib's Exp uses a longer
// polynomial plus a two-constant range reduction (≈ 4 more multiply-class ops per call).
#if defined(SCANSHARD_KERNELS_SIMD_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SCANSHARD_KERNELS_SIMD_MATH_INL_H_
#undef SCANSHARD_KERNELS_SIMD_MATH_INL_H_
#else
#define SCANSHARD_KERNELS_SIMD_MATH_INL_H_
#endif

#include <cstddef>
#include <cstring>

#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;  // the full native vector (16 lanes AVX3, 8 AVX2, 4 SSE4)
using VF = hn::VFromD<DF>;

inline constexpr float kLog2e = 1.44269504088896341f;

// 2^y: k = round(y), f = y − k ∈ [−½, ½], 2^f by a degree-5 polynomial (Chebyshev fit, relative
// error ≤ 1.6e-7 on [−½, ½]), times 2^k. AVX-512 builds 2^k with vscalefps, which saturates to
// +inf / 0 outside the float range — no clamps. Other targets: with kSaturate, y is clamped to
// [−127, 128] and 2^k built from the exponent bits (k = 128 gives the bits of +inf, k = −127 the
// bits of 0), so the result saturates the same way (below 2^−126 it is 0 instead of a denormal);
// without kSaturate the caller guarantees y ∈ [−125, 126] and k is added to the exponent of the
// polynomial directly (no clamps, no multiply: 3 operations fewer on AVX2/SSE4). Callers scale
// natural exponents by kLog2e (or hoist it; Exp2OfProduct folds the scaling into the reduction).
// Exp2Poly: 2^f for f ∈ [−½, ½].
HWY_INLINE VF Exp2Poly(VF f) {
  const DF d;
  VF p = hn::Set(d, 1.339086331e-3f);
  p = hn::MulAdd(p, f, hn::Set(d, 9.676031768e-03f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.550356954e-02f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.402210683e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931471825e-01f));
  return hn::MulAdd(p, f, hn::Set(d, 1.000000119e+00f));
}

#if !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3)
inline constexpr float kRoundMagic = 12582912.0f;  // 1.5·2²³: y + it has k = round(y) as its low mantissa bits
// p·2^k from t = 1.5·2²³ + k (k ∈ [−125, 126], p ∈ [2^−½, 2^½] normal, so p·2^k is normal): k is
// added to p's exponent. bits(t) = 0x4B400000 + k, and 0x4B400000 << 23 vanishes mod 2³², so
// bits(t) << 23 = k << 23 — no float→int conversion (Highway's ConvertTo adds an overflow fix-up
// on x86 that costs more than the rest of 2^k).
HWY_INLINE VF ScaleByRounded(VF p, VF t) {
  const hn::RebindToSigned<DF> di;
  return hn::BitCast(DF(), hn::Add(hn::BitCast(di, p), hn::ShiftLeft<23>(hn::BitCast(di, t))));
}
#endif

template <bool kSaturate = true>
HWY_INLINE VF Exp2(VF y) {
  const DF d;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  const VF k = hn::Round(y);
  const VF p = Exp2Poly(hn::Sub(y, k));
  // all-lanes masked form: GCC 12 warns (-Wmaybe-uninitialized) about the _mm512_undefined_ps
  // inside the unmasked intrinsic; the instruction is the same
  return VF{_mm512_mask_scalef_ps(p.raw, __mmask16(0xFFFF), p.raw, k.raw)};
#else
  if constexpr (kSaturate) y = hn::Min(hn::Max(y, hn::Set(d, -127.0f)), hn::Set(d, 128.0f));
  // k = round(y) by the 1.5·2²³ trick: the sum's low mantissa bits ARE k (round to nearest even,
  // like Round)
  const VF t = hn::Add(y, hn::Set(d, kRoundMagic));  // 1.5·2²³ + k, exactly
  const VF p = Exp2Poly(hn::Sub(y, hn::Sub(t, hn::Set(d, kRoundMagic))));
  if constexpr (kSaturate) {
    const hn::RebindToSigned<DF> di;
    const auto tb = hn::BitCast(di, t);
    return hn::Mul(p, hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(tb, hn::Set(di, 127)))));  // 2^k, k ∈ [−127, 128]
  } else {
    return ScaleByRounded(p, t);
  }
#endif
}

// 2^{a·b} for a·b ∈ [−124, 126] (the caller guarantees the bound; AVX-512 saturates anyway):
// Exp2<false> of the product with the multiply folded into the range reduction — t = a·b + 1.5·2²³
// and f = a·b − k are each one multiply-add of the exact product, so the product costs no
// operation of its own (and f is exact). AVX-512: the product, then Exp2 (vscalefps).
HWY_INLINE VF Exp2OfProduct(VF a, VF b) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return Exp2(hn::Mul(a, b));
#else
  const VF magic = hn::Set(DF(), kRoundMagic);
  const VF t = hn::MulAdd(a, b, magic);
  return ScaleByRounded(Exp2Poly(hn::MulSub(a, b, hn::Sub(t, magic))), t);
#endif
}

// 2^y for y ≤ 126 (the caller guarantees the bound): y floored at −125 instead of Exp2's two-sided
// saturation, one operation instead of two (none on AVX-512, where vscalefps saturates), so
// below 2^−125 the result is 2^−125 ≈ 2e-38 (0 on AVX-512), standing for anything smaller.
HWY_INLINE VF Exp2UpTo126(VF y) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return Exp2(y);
#else
  return Exp2<false>(hn::Max(y, hn::Set(DF(), -125.0f)));
#endif
}

// σ(x) = 1/(1 + 2^{−x·log2 e}) with a true division (1/(1 + inf) = 0 exactly: no clamp needed).
HWY_INLINE VF Sigmoid(VF x) {
  const DF d;
  return hn::Div(hn::Set(d, 1.0f), hn::Add(hn::Set(d, 1.0f), Exp2(hn::Mul(x, hn::Set(d, -kLog2e)))));
}

// 1 + e^{−x}, x clamped to [−40, 80]: ≤ 1 + e^40, the exponents stay within [−116, 58], so 2^y
// needs no saturation; σ(−40) ≈ 4e-18 stands for anything below (an absolute error below 1e-17),
// σ(80) = 1 in float. σ(x) = 1/it, and σ(x)·y = y/it with one division.
HWY_INLINE VF SigmoidDenominator(VF x) {
  const DF d;
  const VF arg = hn::Min(hn::Max(x, hn::Set(d, -40.0f)), hn::Set(d, 80.0f));
  return hn::Add(hn::Set(d, 1.0f), Exp2OfProduct(arg, hn::Set(d, -kLog2e)));
}

// σ(x1), σ(x2). On AVX-512 two plain σ (Sigmoid); below, 1/SigmoidDenominator each. The former
// shared division (u = 1 + e^{−x1}, v = 1 + e^{−x2}, σ(x1) = v/(uv), σ(x2) = u/(uv): 3 products
// for one division) lost once the RG-LRU scans' chains were no longer latency-bound: in cache
// AVX2 forward 0.89 → 0.83, backward 1.69 → 1.49 ns/element (kernels-simd-2026-12-07.md §4).
HWY_INLINE void SigmoidPair(VF x1, VF x2, VF& s1, VF& s2) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  s1 = Sigmoid(x1);
  s2 = Sigmoid(x2);
#else
  const VF one = hn::Set(DF(), 1.0f);
  s1 = hn::Div(one, SigmoidDenominator(x1));
  s2 = hn::Div(one, SigmoidDenominator(x2));
#endif
}

// v < 0 (sign bit set, so −0 counts) ? yes : no. x86 from SSE4 on: blendvps reads the sign bit,
// no comparison needed. Elsewhere by a comparison (v < 0, so −0 counts as ≥ 0; callers must not
// care): Highway 1.0.3's IfNegativeThenElse for SSSE3 hands the raw sign vector to an and/andnot
// select and mixes the bits.
HWY_INLINE VF IfNegative(VF v, VF yes, VF no) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_SSE4
  return hn::IfNegativeThenElse(v, yes, no);
#else
  return hn::IfThenElse(hn::Lt(v, hn::Zero(DF())), yes, no);
#endif
}

// −|x| (sign bit set).
HWY_INLINE VF NegAbs(VF x) { return hn::Neg(hn::Abs(x)); }

// Lanes [0, n) of a vector at p, n < Lanes: through a stack buffer, so nothing past p + n is read
// or written (Highway 1.0.3's MaskedLoad reads the whole vector on SSE4, and aligned).
HWY_INLINE VF LoadPart(const float* p, size_t n) {
  const DF d;
  HWY_ALIGN float buf[hn::MaxLanes(DF())] = {};
  std::memcpy(buf, p, n * sizeof(float));
  return hn::Load(d, buf);
}
HWY_INLINE void StorePart(VF v, float* p, size_t n) {
  const DF d;
  HWY_ALIGN float buf[hn::MaxLanes(DF())];
  hn::Store(v, d, buf);
  std::memcpy(p, buf, n * sizeof(float));
}

// Loads and stores of one vector of a row: whole (Tail = false) or its first n lanes.
template <bool Tail>
struct RowIo {
  size_t n;
  HWY_INLINE VF ld(const float* p) const {
    if constexpr (Tail) return LoadPart(p, n);
    else return hn::LoadU(DF(), p);
  }
  HWY_INLINE void st(float* p, VF v) const {
    if constexpr (Tail) StorePart(v, p, n);
    else hn::StoreU(v, DF(), p);
  }
};

// body(io, i) for every vector of [0, n): whole vectors (RowIo<false>), then one tail vector of
// the remaining lanes (RowIo<true>) — the loop shape of every elementwise row below.
template <class Body>
HWY_INLINE void ForVectors(size_t n, const Body& body) {
  const size_t NL = hn::Lanes(DF());
  size_t i = 0;
  for (; i + NL <= n; i += NL) body(RowIo<false>{NL}, i);
  if (i < n) body(RowIo<true>{n - i}, i);
}

// ─── natural-base math of the elementwise ops (contrib/math) ────────────────────────────────────
// e^x: contrib's Exp is valid up to x = 104 (e^x overflows to +inf from 88.7 on); clamping there
// keeps +inf for any larger x, as std::exp gives.
HWY_INLINE VF ExpE(VF x) { return hn::Exp(DF(), hn::Min(x, hn::Set(DF(), 100.0f))); }
// σ(x) = 1/(1 + e^{−x}): 1/(1 + inf) = 0 for x below −88.7, like the reference.
HWY_INLINE VF SigmoidE(VF x) {
  const DF d;
  return hn::Div(hn::Set(d, 1.0f), hn::Add(hn::Set(d, 1.0f), ExpE(hn::Neg(x))));
}
HWY_INLINE VF TanhE(VF x) { return hn::Tanh(DF(), x); }

// tanh-GeLU (kernels.hpp gelu_ref): th = tanh(√(2/π)(x + 0.044715x³)); gelu = ½x(1 + th);
// gelu' = ½(1 + th) + ½x(1 − th²)·√(2/π)(1 + 3·0.044715x²).
HWY_INLINE VF GeluTh(VF x) {
  const DF d;
  const VF x2 = hn::Mul(x, x);
  return TanhE(hn::Mul(hn::Set(d, 0.7978845608028654f), hn::MulAdd(hn::Mul(x2, hn::Set(d, 0.044715f)), x, x)));
}
HWY_INLINE VF Gelu(VF x) {
  const DF d;
  const VF hx = hn::Mul(hn::Set(d, 0.5f), x);
  return hn::MulAdd(hx, GeluTh(x), hx);
}
// (value and gradient through references: SVE vectors cannot be struct members)
HWY_INLINE void GeluWithGrad(VF x, VF& value, VF& grad) {
  const DF d;
  const VF one = hn::Set(d, 1.0f), half = hn::Set(d, 0.5f);
  const VF th = GeluTh(x);
  const VF hx = hn::Mul(half, x);
  value = hn::MulAdd(hx, th, hx);
  // ½x(1 − th²)·c(1 + 3a x²)
  const VF slope = hn::Mul(hn::Set(d, 0.7978845608028654f), hn::MulAdd(hn::Set(d, 3.0f * 0.044715f), hn::Mul(x, x), one));
  grad = hn::MulAdd(hn::Mul(hx, hn::NegMulAdd(th, th, one)), slope, hn::MulAdd(half, th, half));
}

// Prefetch into L2 (the T1 hint), for reading or for writing. __builtin_prefetch is portable; on
// x86 without PREFETCHW in the target both become prefetcht1.
HWY_INLINE void PrefetchL2(const void* p) { __builtin_prefetch(p, 0, 2); }
HWY_INLINE void PrefetchL2Write(const void* p) { __builtin_prefetch(p, 1, 2); }
HWY_INLINE void PrefetchL1(const void* p) { __builtin_prefetch(p, 0, 3); }
HWY_INLINE void PrefetchL1Write(const void* p) { __builtin_prefetch(p, 1, 3); }

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
