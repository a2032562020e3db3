// kernels/vector_rows.cpp — see vector_rows.hpp. The rows (elementwise, and the norm / softmax
// reductions) are compiled once per SIMD target (hwy/foreach_target.h re-includes this file per
// target); the dispatching wrappers once (HWY_ONCE).
#include <cmath>
#include <cstddef>

#include "kernels/vector_rows.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/vector_rows.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

HWY_INLINE VF One() { return hn::Set(DF(), 1.0f); }

void SigmoidMul(float* out, const float* a, const float* b, size_t n) {
  ForVectors(n, [&](auto io, size_t i) { io.st(out + i, hn::Mul(SigmoidE(io.ld(a + i)), io.ld(b + i))); });
}
void SigmoidMulGrad(float* da, float* db, const float* dout, const float* a, const float* b, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF s = SigmoidE(io.ld(a + i)), g = io.ld(dout + i);
    // σ' = σ(1 − σ)
    if (da) io.st(da + i, hn::MulAdd(hn::Mul(g, io.ld(b + i)), hn::NegMulAdd(s, s, s), io.ld(da + i)));
    if (db) io.st(db + i, hn::MulAdd(g, s, io.ld(db + i)));
  });
}
void SiluMul(float* out, const float* a, const float* g, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF gv = io.ld(g + i);
    io.st(out + i, hn::Mul(io.ld(a + i), hn::Mul(gv, SigmoidE(gv))));
  });
}
void SiluMulGrad(float* da, float* dg, const float* dout, const float* a, const float* g, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF gv = io.ld(g + i), s = SigmoidE(gv), go = io.ld(dout + i);
    if (da) io.st(da + i, hn::MulAdd(go, hn::Mul(gv, s), io.ld(da + i)));
    // silu' = σ(1 + g(1 − σ))
    const VF slope = hn::Mul(s, hn::MulAdd(gv, hn::Sub(One(), s), One()));
    if (dg) io.st(dg + i, hn::MulAdd(hn::Mul(go, io.ld(a + i)), slope, io.ld(dg + i)));
  });
}
void ReluSquare(float* out, const float* x, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF r = hn::ZeroIfNegative(io.ld(x + i));
    io.st(out + i, hn::Mul(r, r));
  });
}
void ReluSquareGrad(float* dx, const float* dout, const float* x, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF r2 = hn::Add(hn::ZeroIfNegative(io.ld(x + i)), hn::ZeroIfNegative(io.ld(x + i)));
    io.st(dx + i, hn::MulAdd(io.ld(dout + i), r2, io.ld(dx + i)));
  });
}
void TanhRow(float* y, const float* x, size_t n) {
  ForVectors(n, [&](auto io, size_t i) { io.st(y + i, TanhE(io.ld(x + i))); });
}
void TanhGrad(float* dx, const float* dy, const float* y, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF yv = io.ld(y + i);
    io.st(dx + i, hn::MulAdd(io.ld(dy + i), hn::NegMulAdd(yv, yv, One()), io.ld(dx + i)));
  });
}
void GeluMul(float* out, const float* a, const float* b, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF g = Gelu(io.ld(a + i));
    io.st(out + i, b ? hn::Mul(g, io.ld(b + i)) : g);
  });
}
void GeluMulGrad(float* da, float* db, const float* dout, const float* a, const float* b, size_t n,
                 bool accumulate) {
  const DF d;
  ForVectors(n, [&](auto io, size_t i) {
    VF value, grad;
    GeluWithGrad(io.ld(a + i), value, grad);
    const VF go = io.ld(dout + i);
    const VF gb = b ? hn::Mul(go, io.ld(b + i)) : go;
    if (da) io.st(da + i, hn::MulAdd(gb, grad, accumulate ? io.ld(da + i) : hn::Zero(d)));
    if (db && b) io.st(db + i, hn::MulAdd(go, value, accumulate ? io.ld(db + i) : hn::Zero(d)));
  });
}
void NegExpOfSum(float* out, const float* a, const float* b, size_t n) {
  ForVectors(n, [&](auto io, size_t i) { io.st(out + i, hn::Neg(ExpE(hn::Add(io.ld(a + i), io.ld(b + i))))); });
}
void AddProduct(float* acc, const float* a, const float* b, size_t n) {
  ForVectors(n, [&](auto io, size_t i) { io.st(acc + i, hn::MulAdd(io.ld(a + i), io.ld(b + i), io.ld(acc + i))); });
}
void AddProductOfDifference(float* acc, const float* g, const float* p, const float* x, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const DF d;
    const VF diff = hn::Sub(p ? io.ld(p + i) : hn::Zero(d), x ? io.ld(x + i) : hn::Zero(d));
    io.st(acc + i, hn::MulAdd(io.ld(g + i), diff, io.ld(acc + i)));
  });
}
void Lerp(float* out, const float* x, const float* p, const float* mu, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF m = io.ld(mu + i), xv = io.ld(x + i);
    // μ x + (1 − μ) p = p + μ (x − p)
    io.st(out + i, p ? hn::MulAdd(m, hn::Sub(xv, io.ld(p + i)), io.ld(p + i)) : hn::Mul(m, xv));
  });
}
void LerpGrad(float* dx, const float* g, const float* g_next, const float* mu, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF m = io.ld(mu + i);
    VF acc = hn::MulAdd(m, io.ld(g + i), io.ld(dx + i));
    if (g_next) acc = hn::MulAdd(hn::Sub(One(), m), io.ld(g_next + i), acc);
    io.st(dx + i, acc);
  });
}
void ShiftMix(float* xx, float* xxx, const float* x, const float* p, const float* mu, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF xv = io.ld(x + i);
    const VF d = p ? hn::Sub(io.ld(p + i), xv) : hn::Neg(xv);
    io.st(xx + i, d);
    io.st(xxx + i, hn::MulAdd(d, io.ld(mu + i), xv));
  });
}
void ShiftMixGrad(float* dx, const float* dxx, const float* dxxx, const float* dxx_next, const float* dxxx_next,
                  const float* mu, size_t n) {
  const DF d;
  ForVectors(n, [&](auto io, size_t i) {
    const VF m = io.ld(mu + i), g3 = io.ld(dxxx + i);
    const VF g0 = hn::MulAdd(g3, m, dxx ? io.ld(dxx + i) : hn::Zero(d));
    VF acc = hn::Add(io.ld(dx + i), hn::Sub(g3, g0));
    if (dxxx_next) acc = hn::Add(acc, hn::MulAdd(io.ld(dxxx_next + i), m, dxx ? io.ld(dxx_next + i) : hn::Zero(d)));
    io.st(dx + i, acc);
  });
}
void Mix(float* out, const float* x, const float* xx, const float* mu, const float* m, size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    io.st(out + i, hn::MulAdd(io.ld(xx + i), hn::Add(io.ld(mu + i), io.ld(m + i)), io.ld(x + i)));
  });
}
void MixGrad(float* dx, float* dxx, float* dm, const float* g, const float* xx, const float* mu, const float* m,
             size_t n) {
  ForVectors(n, [&](auto io, size_t i) {
    const VF gv = io.ld(g + i);
    if (dx) io.st(dx + i, hn::Add(io.ld(dx + i), gv));
    if (dxx) io.st(dxx + i, hn::MulAdd(gv, hn::Add(io.ld(mu + i), io.ld(m + i)), io.ld(dxx + i)));
    if (dm) io.st(dm + i, hn::MulAdd(gv, io.ld(xx + i), io.ld(dm + i)));
  });
}


// ─── reductions: norms and softmax rows ─────────────────────────────────────────────────────────
// v in the lanes of this row, `pad` in a tail vector's lanes past n (LoadPart fills them with 0).
template <bool Tail>
HWY_INLINE VF InRow(const RowIo<Tail>& io, VF v, VF pad) {
  if constexpr (Tail) return hn::IfThenElse(hn::FirstN(DF(), io.n), v, pad);
  else return v;
}
HWY_INLINE float SumLanes(VF v) { return hn::GetLane(hn::SumOfLanes(DF(), v)); }

float RmsNormRow(float* y, const float* x, const float* scale, size_t n, float eps) {
  const DF d;
  VF ss = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) {
    const VF xv = io.ld(x + i);
    ss = hn::MulAdd(xv, xv, ss);
  });
  const float r = 1.0f / std::sqrt(SumLanes(ss) / float(n) + eps);
  const VF rv = hn::Set(d, r);
  // y = x · r · (1 + scale) = x r + (x r) scale
  ForVectors(n, [&](auto io, size_t i) {
    const VF xr = hn::Mul(io.ld(x + i), rv);
    io.st(y + i, hn::MulAdd(xr, io.ld(scale + i), xr));
  });
  return r;
}
void RmsNormGradRow(float* dx, float* dscale, const float* dy, const float* x, const float* scale, float r,
                    size_t n) {
  const DF d;
  VF dot = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) {
    const VF g = io.ld(dy + i);
    dot = hn::MulAdd(hn::MulAdd(g, io.ld(scale + i), g), io.ld(x + i), dot);  // dy (1 + s) x
  });
  const VF rv = hn::Set(d, r), rrm = hn::Set(d, r * (SumLanes(dot) * r / float(n)));  // r · mean
  ForVectors(n, [&](auto io, size_t i) {
    const VF g = io.ld(dy + i), xv = io.ld(x + i);
    // dx += r (dy (1 + s) − x r mean)
    if (dx) io.st(dx + i, hn::MulAdd(rv, hn::NegMulAdd(xv, rrm, hn::MulAdd(g, io.ld(scale + i), g)), io.ld(dx + i)));
    if (dscale) io.st(dscale + i, hn::MulAdd(hn::Mul(g, xv), rv, io.ld(dscale + i)));  // ds += dy x r
  });
}
void GroupNormRow(float* y, float* mean, float* rstd, const float* x, const float* scale, const float* bias, size_t n,
                  float eps) {
  const DF d;
  VF s = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) { s = hn::Add(s, io.ld(x + i)); });
  const float mu = SumLanes(s) / float(n);
  const VF muv = hn::Set(d, mu);
  VF v = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) {
    const VF c = InRow(io, hn::Sub(io.ld(x + i), muv), hn::Zero(d));
    v = hn::MulAdd(c, c, v);
  });
  const float rs = 1.0f / std::sqrt(SumLanes(v) / float(n) + eps);
  *mean = mu;
  *rstd = rs;
  const VF rsv = hn::Set(d, rs);
  ForVectors(n, [&](auto io, size_t i) {
    io.st(y + i, hn::MulAdd(hn::Mul(hn::Sub(io.ld(x + i), muv), rsv), io.ld(scale + i), io.ld(bias + i)));
  });
}
void GroupNormGradRow(float* dx, float* dscale, float* dbias, const float* dy, const float* x, const float* scale,
                      float mu, float rs, size_t n) {
  const DF d;
  const VF muv = hn::Set(d, mu), rsv = hn::Set(d, rs);
  VF sg = hn::Zero(d), sgx = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) {
    const VF xh = hn::Mul(hn::Sub(io.ld(x + i), muv), rsv), gh = hn::Mul(io.ld(dy + i), io.ld(scale + i));
    sg = hn::Add(sg, gh);
    sgx = hn::MulAdd(gh, xh, sgx);
  });
  ForVectors(n, [&](auto io, size_t i) {
    const VF g = io.ld(dy + i), xh = hn::Mul(hn::Sub(io.ld(x + i), muv), rsv);
    if (dscale) io.st(dscale + i, hn::MulAdd(g, xh, io.ld(dscale + i)));
    if (dbias) io.st(dbias + i, hn::Add(io.ld(dbias + i), g));
  });
  if (!dx) return;
  const VF mg = hn::Set(d, SumLanes(sg) / float(n)), mgx = hn::Set(d, SumLanes(sgx) / float(n));
  ForVectors(n, [&](auto io, size_t i) {
    const VF xh = hn::Mul(hn::Sub(io.ld(x + i), muv), rsv), gh = hn::Mul(io.ld(dy + i), io.ld(scale + i));
    // dx += rs (ĝ − mean(ĝ) − x̂ mean(ĝ x̂))
    io.st(dx + i, hn::MulAdd(rsv, hn::NegMulAdd(xh, mgx, hn::Sub(gh, mg)), io.ld(dx + i)));
  });
}
float MaxOf(const float* x, size_t n, float init) {
  const DF d;
  VF m = hn::Set(d, init);
  ForVectors(n, [&](auto io, size_t i) { m = hn::Max(m, InRow(io, io.ld(x + i), hn::Set(d, init))); });
  return hn::GetLane(hn::MaxOfLanes(d, m));
}
float Dot(const float* a, const float* b, size_t n) {
  const DF d;
  VF s = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) { s = hn::MulAdd(InRow(io, io.ld(a + i), hn::Zero(d)), io.ld(b + i), s); });
  return SumLanes(s);
}
// One row at a time, in memory order, no software prefetch: one sequential read stream, which
// the hardware prefetcher follows. On this machine (2026-12-07, docs/inference-decode-2026-12-07.md
// "Closing the gap") prefetching each row's lines 8 KiB ahead ran at 0.75-0.85 of this, and 2 or
// 4 rows in flight (OpenBLAS's sgemv: 2-4 interleaved streams 3 KiB apart) at about half.
void DotRows(float* out, const float* a, const float* x, size_t rows, size_t n) {
  for (size_t r = 0; r < rows; ++r) out[r] = Dot(a + r * n, x, n);
}
void MulBy(float* x, const float* m, size_t n) {
  ForVectors(n, [&](auto io, size_t i) { io.st(x + i, hn::Mul(io.ld(x + i), io.ld(m + i))); });
}
// out = e^{x − c} (out nullable: the sum only; out == x in place); returns Σ e^{x − c}
float ExpMinusSum(float* out, const float* x, size_t n, float c) {
  const DF d;
  const VF cv = hn::Set(d, c);
  VF s = hn::Zero(d);
  ForVectors(n, [&](auto io, size_t i) {
    const VF e = ExpE(hn::Sub(io.ld(x + i), cv));
    if (out) io.st(out + i, e);
    s = hn::Add(s, InRow(io, e, hn::Zero(d)));
  });
  return SumLanes(s);
}
void SoftmaxGradRow(float* p, float* dp, size_t n, float lse, float dot, float scale) {
  const DF d;
  const VF lv = hn::Set(d, lse), dv = hn::Set(d, dot), sv = hn::Set(d, scale);
  ForVectors(n, [&](auto io, size_t i) {
    const VF pv = ExpE(hn::Sub(io.ld(p + i), lv));
    io.st(p + i, pv);
    io.st(dp + i, hn::Mul(hn::Mul(pv, hn::Sub(io.ld(dp + i), dv)), sv));
  });
}

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace scanshard::kernels::rows {

HWY_EXPORT(SigmoidMul);
HWY_EXPORT(SigmoidMulGrad);
HWY_EXPORT(SiluMul);
HWY_EXPORT(SiluMulGrad);
HWY_EXPORT(ReluSquare);
HWY_EXPORT(ReluSquareGrad);
HWY_EXPORT(TanhRow);
HWY_EXPORT(TanhGrad);
HWY_EXPORT(GeluMul);
HWY_EXPORT(GeluMulGrad);
HWY_EXPORT(NegExpOfSum);
HWY_EXPORT(AddProduct);
HWY_EXPORT(AddProductOfDifference);
HWY_EXPORT(Lerp);
HWY_EXPORT(LerpGrad);
HWY_EXPORT(ShiftMix);
HWY_EXPORT(ShiftMixGrad);
HWY_EXPORT(Mix);
HWY_EXPORT(MixGrad);
HWY_EXPORT(RmsNormRow);
HWY_EXPORT(RmsNormGradRow);
HWY_EXPORT(GroupNormRow);
HWY_EXPORT(GroupNormGradRow);
HWY_EXPORT(MaxOf);
HWY_EXPORT(Dot);
HWY_EXPORT(DotRows);
HWY_EXPORT(MulBy);
HWY_EXPORT(ExpMinusSum);
HWY_EXPORT(SoftmaxGradRow);

void sigmoid_mul(float* out, const float* a, const float* b, i64 n) {
  HWY_DYNAMIC_DISPATCH(SigmoidMul)(out, a, b, size_t(n));
}
void sigmoid_mul_grad(float* da, float* db, const float* dout, const float* a, const float* b, i64 n) {
  HWY_DYNAMIC_DISPATCH(SigmoidMulGrad)(da, db, dout, a, b, size_t(n));
}
void silu_mul(float* out, const float* a, const float* g, i64 n) { HWY_DYNAMIC_DISPATCH(SiluMul)(out, a, g, size_t(n)); }
void silu_mul_grad(float* da, float* dg, const float* dout, const float* a, const float* g, i64 n) {
  HWY_DYNAMIC_DISPATCH(SiluMulGrad)(da, dg, dout, a, g, size_t(n));
}
void relu_square(float* out, const float* x, i64 n) { HWY_DYNAMIC_DISPATCH(ReluSquare)(out, x, size_t(n)); }
void relu_square_grad(float* dx, const float* dout, const float* x, i64 n) {
  HWY_DYNAMIC_DISPATCH(ReluSquareGrad)(dx, dout, x, size_t(n));
}
void tanh(float* y, const float* x, i64 n) { HWY_DYNAMIC_DISPATCH(TanhRow)(y, x, size_t(n)); }
void tanh_grad(float* dx, const float* dy, const float* y, i64 n) { HWY_DYNAMIC_DISPATCH(TanhGrad)(dx, dy, y, size_t(n)); }
void gelu_mul(float* out, const float* a, const float* b, i64 n) { HWY_DYNAMIC_DISPATCH(GeluMul)(out, a, b, size_t(n)); }
void gelu_mul_grad(float* da, float* db, const float* dout, const float* a, const float* b, i64 n, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(GeluMulGrad)(da, db, dout, a, b, size_t(n), accumulate);
}
void neg_exp_of_sum(float* out, const float* a, const float* b, i64 n) {
  HWY_DYNAMIC_DISPATCH(NegExpOfSum)(out, a, b, size_t(n));
}
void add_product(float* acc, const float* a, const float* b, i64 n) {
  HWY_DYNAMIC_DISPATCH(AddProduct)(acc, a, b, size_t(n));
}
void add_product_of_difference(float* acc, const float* g, const float* p, const float* x, i64 n) {
  HWY_DYNAMIC_DISPATCH(AddProductOfDifference)(acc, g, p, x, size_t(n));
}
void lerp(float* out, const float* x, const float* p, const float* mu, i64 n) {
  HWY_DYNAMIC_DISPATCH(Lerp)(out, x, p, mu, size_t(n));
}
void lerp_grad(float* dx, const float* g, const float* g_next, const float* mu, i64 n) {
  HWY_DYNAMIC_DISPATCH(LerpGrad)(dx, g, g_next, mu, size_t(n));
}
void shift_mix(float* xx, float* xxx, const float* x, const float* p, const float* mu, i64 n) {
  HWY_DYNAMIC_DISPATCH(ShiftMix)(xx, xxx, x, p, mu, size_t(n));
}
void shift_mix_grad(float* dx, const float* dxx, const float* dxxx, const float* dxx_next, const float* dxxx_next,
                    const float* mu, i64 n) {
  HWY_DYNAMIC_DISPATCH(ShiftMixGrad)(dx, dxx, dxxx, dxx_next, dxxx_next, mu, size_t(n));
}
void mix(float* out, const float* x, const float* xx, const float* mu, const float* m, i64 n) {
  HWY_DYNAMIC_DISPATCH(Mix)(out, x, xx, mu, m, size_t(n));
}
void mix_grad(float* dx, float* dxx, float* dm, const float* g, const float* xx, const float* mu, const float* m,
              i64 n) {
  HWY_DYNAMIC_DISPATCH(MixGrad)(dx, dxx, dm, g, xx, mu, m, size_t(n));
}

float rmsnorm(float* y, const float* x, const float* scale, i64 n, float eps) {
  return HWY_DYNAMIC_DISPATCH(RmsNormRow)(y, x, scale, size_t(n), eps);
}
void rmsnorm_grad(float* dx, float* dscale, const float* dy, const float* x, const float* scale, float rstd, i64 n) {
  HWY_DYNAMIC_DISPATCH(RmsNormGradRow)(dx, dscale, dy, x, scale, rstd, size_t(n));
}
void group_norm(float* y, float* mean, float* rstd, const float* x, const float* scale, const float* bias, i64 n,
                float eps) {
  HWY_DYNAMIC_DISPATCH(GroupNormRow)(y, mean, rstd, x, scale, bias, size_t(n), eps);
}
void group_norm_grad(float* dx, float* dscale, float* dbias, const float* dy, const float* x, const float* scale,
                     float mean, float rstd, i64 n) {
  HWY_DYNAMIC_DISPATCH(GroupNormGradRow)(dx, dscale, dbias, dy, x, scale, mean, rstd, size_t(n));
}
float max_of(const float* x, i64 n, float init) { return HWY_DYNAMIC_DISPATCH(MaxOf)(x, size_t(n), init); }
float dot(const float* a, const float* b, i64 n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, size_t(n)); }
void dot_rows(float* out, const float* a, const float* x, i64 rows, i64 n) {
  HWY_DYNAMIC_DISPATCH(DotRows)(out, a, x, size_t(rows), size_t(n));
}
void mul_by(float* x, const float* m, i64 n) { HWY_DYNAMIC_DISPATCH(MulBy)(x, m, size_t(n)); }
float exp_minus_sum(float* x, i64 n, float c) { return HWY_DYNAMIC_DISPATCH(ExpMinusSum)(x, x, size_t(n), c); }
double exp_minus_sum_blocked(float* out, const float* x, i64 n, float c) {
  constexpr i64 kBlock = 128;
  double sum = 0;
  for (i64 i = 0; i < n; i += kBlock)
    sum += double(HWY_DYNAMIC_DISPATCH(ExpMinusSum)(out ? out + i : nullptr, x + i, size_t(i + kBlock < n ? kBlock : n - i), c));
  return sum;
}
void softmax_grad(float* p, float* dp, i64 n, float lse, float dot, float scale) {
  HWY_DYNAMIC_DISPATCH(SoftmaxGradRow)(p, dp, size_t(n), lse, dot, scale);
}

}  // namespace scanshard::kernels::rows
#endif  // HWY_ONCE
