// kernels/rglru.cpp — see rglru.hpp. The fused scan passes are compiled once per SIMD target
// (Google Highway, hwy/foreach_target.h re-includes this file per target) and dispatched at run
// time (simd.hpp); the work split and the GEMMs are compiled once (HWY_ONCE). Reference: rglru_ref.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "kernels/linear.hpp"
#include "kernels/rglru.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/rglru.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_math-inl.h"

// ─── per-target scan rows ─────────────────────────────────────────────────────────────────────
// One task = one batch row b and a channel range of n channels, walked over all T tokens; row
// pointers x, ga, gx, y, dy, dx, dga, dgx point at (b, t = 0, c0), the row stride is R.
HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

// a = 2^{nsp2·r} (nsp2 = −8 softplus(Λ)·log2 e ≤ 0, r ∈ (0, 1]: the exponent is in [nsp2, 0]).
// kFloor: some channel of the task has nsp2 < kNoFloorMin (softplus(Λ) > 10.7: a ≤ e^{−86 r}), so
// the exponent is floored at −125 (Exp2UpTo126). Otherwise the floor cannot bind, and the product
// folds into 2^y's range reduction (Exp2OfProduct): a multiply and a max fewer per vector.
inline constexpr float kNoFloorMin = -124.0f;
// a is capped at 1: for an exponent above ≈ −1e-7 (r = σ(ga) ≲ 1e-5 on a slow channel, ga ≲ −12)
// 2^y's polynomial, whose constant term is 1 + 1.2e-7, gives a = 1 + 2^−23, and √(1 − a²) was NaN.
template <bool kFloor>
HWY_INLINE VF DecayFactor(VF nsp2, VF r) {
  const VF one = hn::Set(DF(), 1.0f);
  if constexpr (kFloor) return hn::Min(Exp2UpTo126(hn::Mul(nsp2, r)), one);
  else return hn::Min(Exp2OfProduct(nsp2, r), one);
}
// Whether every one of the n exponents keeps DecayFactor<false> in range.
HWY_INLINE bool NeedsFloor(const float* nsp2, i64 n) {
  for (i64 j = 0; j < n; ++j)
    if (!(nsp2[j] >= kNoFloorMin)) return true;
  return false;
}

// Per-channel rows of one task interleaved by NL-channel group (kRows consecutive vectors per
// group, padding lanes 0): as rows n floats apart they fell in the same L1 sets as the row streams
// of each step. at(row, j): channel j of that row.
template <i64 kRows>
struct GroupRows {
  i64 NL = i64(hn::Lanes(DF()));
  AlignedVec buf;
  explicit GroupRows(i64 n) : buf(size_t(kRows * ((n + NL - 1) / NL) * NL), 0.0f) {}
  float& at(int row, i64 j) { return buf[size_t((j / NL) * kRows * NL + row * NL + j % NL)]; }
};

// One vector of channels, one forward step without a reset, given r = σ(ga) and gin = σ(gx)·x:
//   a = 2^{nsp2·r};  h ← a h + √(1 − a²) gin;  y = h;  rsum ← rsum + r
// st: this group's interleaved h, rsum, nsp2 (whole vectors, see ScanForwardRows).
template <bool Tail, bool kFloor>
HWY_INLINE void FwdUpdate(const RowIo<Tail>& io, float* y, float* st, VF r, VF gin) {
  const DF d;
  const size_t NL = hn::Lanes(d);
  const VF a = DecayFactor<kFloor>(hn::LoadU(d, st + 2 * NL), r);
  const VF m = hn::Sqrt(hn::NegMulAdd(a, a, hn::Set(d, 1.0f)));       // √(1 − a²)
  const VF hnew = hn::MulAdd(a, hn::LoadU(d, st), hn::Mul(m, gin));
  hn::StoreU(hnew, d, st);
  io.st(y, hnew);
  hn::StoreU(hn::Add(hn::LoadU(d, st + NL), r), d, st + NL);
}

// The whole vectors [0, nw) of one forward token row; st: the interleaved rows (3 vectors per group).
// Below AVX-512 in two passes per block of kFwdBlock vectors: the gates r, σ(gx)·x of every vector
// (kept in `gates`, 2 vectors each, in L1), then the updates. Each vector's chain σ → 2^y → ÷ →
// 2^y → √ → h is ~110 cycles of dependent latency on AVX2; in one loop (even pipelined by one
// vector) the reorder window held ~4 such chains and perf put the samples on the multiply waiting
// for √. Split, every iteration of each pass is an independent chain of half that length: AVX2
// in cache 1.00 → 0.89 ns/element (0.82 with SigmoidPair's two divisions). On AVX-512 the split
// gained nothing in cache and lost ~25 % from DRAM (the update pass makes no demand loads of the
// streams; L2 prefetches of the next token's rows did not help), so AVX3 keeps one loop
// pipelined by one vector.
inline constexpr i64 kFwdIl = 3;  // interleaved rows per channel group: h, Σ r, nsp2
inline constexpr bool kFwdTwoPass = !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3);
inline constexpr i64 kFwdBlock = 64;
template <bool kFloor>
HWY_INLINE void FwdWholeVectorsTwoPass(float* yr, float* st, const float* xr, const float* gar,
                                       const float* gxr, i64 nw, float* gates) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  const RowIo<false> whole{0};
  for (i64 j0 = 0; j0 < nw; j0 += kFwdBlock * NL) {
    const i64 j1 = std::min(nw, j0 + kFwdBlock * NL);
    float* g = gates;
    for (i64 j = j0; j < j1; j += NL, g += 2 * NL) {
      hn::Store(hn::Div(hn::Set(d, 1.0f), SigmoidDenominator(hn::LoadU(d, gar + j))), d, g);  // r
      hn::Store(hn::Div(hn::LoadU(d, xr + j), SigmoidDenominator(hn::LoadU(d, gxr + j))), d, g + NL);  // σ(gx)·x
    }
    g = gates;
    for (i64 j = j0; j < j1; j += NL, g += 2 * NL)
      FwdUpdate<false, kFloor>(whole, yr + j, st + j * kFwdIl, hn::Load(d, g), hn::Load(d, g + NL));
  }
}
// The same in one loop, software-pipelined by one vector: the gates of the next vector are
// computed before the update of this one.
template <bool kFloor>
HWY_INLINE void FwdWholeVectorsPipelined(float* yr, float* st, const float* xr, const float* gar,
                                         const float* gxr, i64 nw) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  const RowIo<false> whole{0};
  if (nw == 0) return;
  VF r, i;
  SigmoidPair(hn::LoadU(d, gar), hn::LoadU(d, gxr), r, i);
  i64 j = 0;
  for (; j + NL < nw; j += NL) {
    VF rn, in;
    SigmoidPair(hn::LoadU(d, gar + j + NL), hn::LoadU(d, gxr + j + NL), rn, in);
    FwdUpdate<false, kFloor>(whole, yr + j, st + j * kFwdIl, r, hn::Mul(i, hn::LoadU(d, xr + j)));
    r = rn;
    i = in;
  }
  FwdUpdate<false, kFloor>(whole, yr + j, st + j * kFwdIl, r, hn::Mul(i, hn::LoadU(d, xr + j)));
}

// The forward rows of one task: h (in: h_in, out: h_out) and prod (out: Π ā; nullptr: not wanted) hold n channels.
// Π ā is kept as Σ r (Π_t 2^{nsp2·r_t} = 2^{nsp2·Σ r}; +inf after a reset) and exponentiated once
// at the end: the running product sinks through the denormals (0.9^t from t ≈ 830 on for ~150
// tokens), whose multiplies take microcode assists: the former code's AVX2 forward in cache ran at
// 1.86 ns/element, 1.31 with FTZ/DAZ set (bench_incache). And one add instead of a multiply.
template <bool kFloor>
void ScanForwardRows(float* y, float* h, float* prod, const float* nsp2, const float* x,
                     const float* ga, const float* gx, const std::uint8_t* reset, i64 T, i64 R,
                     i64 n) {
  const i64 NL = i64(hn::Lanes(DF()));
  // h, Σ r, nsp2 (GroupRows)
  constexpr i64 kIl = kFwdIl;
  GroupRows<kIl> rows(n);
  float* __restrict il = rows.buf.data();
  auto at = [&rows](int row, i64 j) -> float& { return rows.at(row, j); };
  AlignedVec gates(kFwdTwoPass ? size_t(2 * kFwdBlock * NL) : 0);  // r, σ(gx)·x of one block's vectors
  for (i64 j = 0; j < n; ++j) {
    at(0, j) = h[j];
    at(1, j) = 0.0f;
    at(2, j) = nsp2[j];
  }
  for (i64 t = 0; t < T; ++t) {
    const i64 o = t * R;
    const float *xr = x + o, *gar = ga + o, *gxr = gx + o;
    float* yr = y + o;
    if (reset && reset[t]) {
      for (i64 j = 0; j < n; ++j) {
        at(0, j) = sigmoid_fast(gxr[j]) * xr[j];  // ā = 0, m = 1
        at(1, j) = HUGE_VALF;  // Π ā = 0 from here on
        yr[j] = at(0, j);
      }
      continue;
    }
    const i64 nw = n / NL * NL;
    if constexpr (kFwdTwoPass) FwdWholeVectorsTwoPass<kFloor>(yr, il, xr, gar, gxr, nw, gates.data());
    else FwdWholeVectorsPipelined<kFloor>(yr, il, xr, gar, gxr, nw);
    if (nw < n) {
      const i64 j = nw;
      const RowIo<true> io{size_t(n - j)};
      VF r, i;
      SigmoidPair(io.ld(gar + j), io.ld(gxr + j), r, i);
      FwdUpdate<true, kFloor>(io, yr + j, il + j * kIl, r, hn::Mul(i, io.ld(xr + j)));
    }
  }
  for (i64 j = 0; j < n; ++j) h[j] = at(0, j);
  if (!prod) return;  // nobody wants Π ā: no exp2 per channel (at one token per call, more than the scan)
  for (i64 j = 0; j < n; ++j) prod[j] = at(1, j) == HUGE_VALF ? 0.0f : float(std::exp2(double(nsp2[j]) * double(at(1, j))));
}
void ScanForwardTask(float* y, float* h, float* prod, const float* nsp2, const float* x,
                     const float* ga, const float* gx, const std::uint8_t* reset, i64 T, i64 R,
                     i64 n) {
  if (NeedsFloor(nsp2, n)) ScanForwardRows<true>(y, h, prod, nsp2, x, ga, gx, reset, T, R, n);
  else ScanForwardRows<false>(y, h, prod, nsp2, x, ga, gx, reset, T, R, n);
}

// One vector of channels, one reverse step without a reset; √max(z, zmin) = max(√z, 1/(2·cap)).
// carry, dlog_sum, nsp2 are this group's interleaved vectors, nsp2 followed by nsp2/log2 e (see
// ScanBackwardTask).
// r = σ(ga), i = σ(gx), a = 2^{nsp2·r}: the head of the step's dependency chain, computed one
// vector ahead by ScanBackwardRows (software pipelining, as in the forward).
template <bool kFloor>
HWY_INLINE void BwdGates(VF ga, VF gx, VF nsp2, VF& r, VF& i, VF& a) {
  SigmoidPair(ga, gx, r, i);
  a = DecayFactor<kFloor>(nsp2, r);
}
template <bool Tail, bool Stream>
HWY_INLINE void BwdStep(const RowIo<Tail>& io, float* dx, float* dga, float* dgx, float* carry,
                        float* dlog_sum, const float* nsp2, const float* hp, const float* dy,
                        const float* x, const float* ga, const float* gx, i64 pf, VF r, VF i, VF a) {
  static_assert(!(Tail && Stream), "streaming stores need whole aligned vectors");
  const DF d;
  // the reverse walk over t defeats the hardware prefetchers at page boundaries: fetch the
  // previous token's rows (R floats back) into L2 meanwhile
  PrefetchL2(ga - pf);
  PrefetchL2(gx - pf);
  PrefetchL2(x - pf);
  PrefetchL2(dy - pf);
  PrefetchL2(hp - pf);
  PrefetchL2Write(dx - pf);
  if constexpr (!Stream) {
    PrefetchL2Write(dga - pf);
    PrefetchL2Write(dgx - pf);
  }
  // carry, dlog_sum, nsp2 are interleaved whole vectors (padded): never a tail
  const VF z = hn::NegMulAdd(a, a, hn::Set(d, 1.0f));  // 1 − a²
  const VF sz = hn::Sqrt(z);
  const VF dh = hn::Add(io.ld(dy), hn::LoadU(d, carry));
  const VF xv = io.ld(x);
  const VF gin = hn::Mul(i, xv);
  // da = dh (h_{t−1} − (i x) a/√max(z, zmin));  dlog_a = da·a
  const VF q = hn::Div(hn::Mul(gin, a), hn::Max(sz, hn::Set(d, float(0.5 / kSqrtGradCap))));
  const VF dla = hn::Mul(hn::Mul(dh, hn::Sub(io.ld(hp), q)), a);
  hn::StoreU(hn::MulAdd(r, dla, hn::LoadU(d, dlog_sum)), d, dlog_sum);
  // dga = −8 sp dlog_a r(1 − r)   (the vector after nsp2 is −8 sp = nsp2/log2 e)
  const VF dgav = hn::Mul(hn::Mul(hn::LoadU(d, nsp2 + hn::Lanes(d)), dla), hn::NegMulAdd(r, r, r));
  const VF dhs = hn::Mul(dh, sz);
  const VF dgxv = hn::Mul(hn::Mul(dhs, xv), hn::NegMulAdd(i, i, i));  // dh m x i(1 − i)
  // dga, dgx are write-only: above the cache size they go out with non-temporal stores (no read
  // for ownership), else as ordinary stores
  if constexpr (Stream) {
    hn::Stream(dgav, d, dga);
    hn::Stream(dgxv, d, dgx);
  } else {
    io.st(dga, dgav);
    io.st(dgx, dgxv);
  }
  io.st(dx, hn::MulAdd(dhs, i, io.ld(dx)));
  hn::StoreU(hn::Mul(a, dh), d, carry);
}

// The reverse rows of one task. carry: in dh_out (or 0), out ā_0 dh_0 (the dh_in contribution);
// dlog_sum: out Σ_t r_t dlog_a_t; nsp2, h0 (h_{−1}): n channels. stream: dga, dgx rows whose start
// is aligned to the vector go out with streaming stores.
template <bool kFloor>
void ScanBackwardRows(float* dx, float* dga, float* dgx, float* carry, float* dlog_sum,
                      const float* nsp2, const float* h0, const float* y, const float* dy,
                      const float* x, const float* ga, const float* gx, const std::uint8_t* reset,
                      i64 T, i64 R, i64 n, bool stream) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  // carry, dlog_sum, nsp2, nsp2/log2 e (GroupRows)
  constexpr i64 kIl = 4;
  GroupRows<kIl> rows(n);
  float* __restrict il = rows.buf.data();
  auto at = [&rows](int row, i64 j) -> float& { return rows.at(row, j); };
  for (i64 j = 0; j < n; ++j) {
    at(0, j) = carry[j];
    at(1, j) = 0.0f;
    at(2, j) = nsp2[j];
    at(3, j) = nsp2[j] * (1.0f / kLog2e);
  }
  const size_t vec_bytes = size_t(NL) * sizeof(float);
  auto aligned = [vec_bytes](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % vec_bytes == 0; };
  for (i64 t = T - 1; t >= 0; --t) {
    const i64 o = t * R;
    const float *xr = x + o, *gar = ga + o, *gxr = gx + o, *dyr = dy + o;
    const float* hp = t > 0 ? y + o - R : h0;
    float *dxr = dx + o, *dgar = dga + o, *dgxr = dgx + o;
    if (reset && reset[t]) {
      for (i64 j = 0; j < n; ++j) {
        const float i = sigmoid_fast(gxr[j]);
        const float dh = dyr[j] + at(0, j);
        dgar[j] = 0.0f;
        dgxr[j] = dh * xr[j] * i * (1.0f - i);
        dxr[j] += dh * i;
        at(0, j) = 0.0f;
      }
      continue;
    }
    i64 j = 0;
    const RowIo<false> whole{0};
    const i64 nw = n / NL * NL;
    auto whole_vectors = [&](auto stream_tag) {
      constexpr bool kStream = decltype(stream_tag)::value;
      VF r, i, a;
      BwdGates<kFloor>(hn::LoadU(d, gar), hn::LoadU(d, gxr), hn::LoadU(d, il + 2 * NL), r, i, a);
      auto step = [&] {
        BwdStep<false, kStream>(whole, dxr + j, dgar + j, dgxr + j, il + j * kIl, il + j * kIl + NL,
                                il + j * kIl + 2 * NL, hp + j, dyr + j, xr + j, gar + j, gxr + j, R, r, i, a);
      };
      for (; j + NL < nw; j += NL) {
        VF rn, in, an;
        BwdGates<kFloor>(hn::LoadU(d, gar + j + NL), hn::LoadU(d, gxr + j + NL),
                         hn::LoadU(d, il + (j + NL) * kIl + 2 * NL), rn, in, an);
        step();
        r = rn;
        i = in;
        a = an;
      }
      step();
      j += NL;
    };
    if (nw > 0) {
      if (stream && aligned(dgar) && aligned(dgxr)) whole_vectors(std::true_type{});
      else whole_vectors(std::false_type{});
    }
    if (j < n) {
      const RowIo<true> io{size_t(n - j)};
      VF r, i, a;
      BwdGates<kFloor>(io.ld(gar + j), io.ld(gxr + j), hn::LoadU(d, il + j * kIl + 2 * NL), r, i, a);
      BwdStep<true, false>(io, dxr + j, dgar + j, dgxr + j, il + j * kIl, il + j * kIl + NL, il + j * kIl + 2 * NL,
                           hp + j, dyr + j, xr + j, gar + j, gxr + j, R, r, i, a);
    }
  }
  if (stream) hwy::FlushStream();  // order this task's streaming stores before the join
  for (i64 j = 0; j < n; ++j) {
    carry[j] = at(0, j);
    dlog_sum[j] = at(1, j);
  }
}
void ScanBackwardTask(float* dx, float* dga, float* dgx, float* carry, float* dlog_sum,
                      const float* nsp2, const float* h0, const float* y, const float* dy,
                      const float* x, const float* ga, const float* gx, const std::uint8_t* reset,
                      i64 T, i64 R, i64 n, bool stream) {
  if (NeedsFloor(nsp2, n))
    ScanBackwardRows<true>(dx, dga, dgx, carry, dlog_sum, nsp2, h0, y, dy, x, ga, gx, reset, T, R, n, stream);
  else
    ScanBackwardRows<false>(dx, dga, dgx, carry, dlog_sum, nsp2, h0, y, dy, x, ga, gx, reset, T, R, n, stream);
}

// rglru_carry's rows: carry (in h_in) ← carry·ā_t, y_t += carry until a reset.
void CarryTask(float* y, float* carry, const float* nsp2, const float* ga, const std::uint8_t* reset,
               i64 T, i64 R, i64 n) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  for (i64 t = 0; t < T; ++t) {
    if (reset && reset[t]) break;  // ā = 0 from here on: nothing more to add
    const i64 o = t * R;
    i64 j = 0;
    for (; j + NL <= n; j += NL) {
      const VF c = hn::Mul(hn::LoadU(d, carry + j), Exp2(hn::Mul(hn::LoadU(d, nsp2 + j), Sigmoid(hn::LoadU(d, ga + o + j)))));
      hn::StoreU(c, d, carry + j);
      hn::StoreU(hn::Add(hn::LoadU(d, y + o + j), c), d, y + o + j);
    }
    if (j < n) {
      const size_t m = size_t(n - j);
      const VF c = hn::Mul(LoadPart(carry + j, m), Exp2(hn::Mul(LoadPart(nsp2 + j, m), Sigmoid(LoadPart(ga + o + j, m)))));
      StorePart(c, carry + j, m);
      StorePart(hn::Add(LoadPart(y + o + j, m), c), y + o + j, m);
    }
  }
}

// rglru_carry_backward's rows: g_t = dy_t + ā_{t+1} g_{t+1}; carry (out) = ā_0 g_0.
void CarryBackwardTask(float* carry, const float* nsp2, const float* dy, const float* ga,
                       const std::uint8_t* reset, i64 T, i64 R, i64 n) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  for (i64 j = 0; j < n; ++j) carry[j] = 0.0f;
  for (i64 t = T - 1; t >= 0; --t) {
    const i64 o = t * R;
    const bool rs = reset && reset[t];
    i64 j = 0;
    for (; j + NL <= n; j += NL) {
      const VF g = hn::Add(hn::LoadU(d, dy + o + j), hn::LoadU(d, carry + j));
      const VF c = rs ? hn::Zero(d) : hn::Mul(g, Exp2(hn::Mul(hn::LoadU(d, nsp2 + j), Sigmoid(hn::LoadU(d, ga + o + j)))));
      hn::StoreU(c, d, carry + j);
    }
    if (j < n) {
      const size_t m = size_t(n - j);
      const VF g = hn::Add(LoadPart(dy + o + j, m), LoadPart(carry + j, m));
      const VF c = rs ? hn::Zero(d) : hn::Mul(g, Exp2(hn::Mul(LoadPart(nsp2 + j, m), Sigmoid(LoadPart(ga + o + j, m)))));
      StorePart(c, carry + j, m);
    }
  }
}

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace scanshard::kernels {

namespace fast {

namespace {
HWY_EXPORT(ScanForwardTask);
HWY_EXPORT(ScanBackwardTask);
HWY_EXPORT(CarryTask);
HWY_EXPORT(CarryBackwardTask);

// Work split: each task owns a contiguous channel range [c0, c1) of one batch row and walks t.
// Wide ranges keep every row access a long contiguous run (the hardware prefetcher then streams
// along t; 64-channel slivers were latency-bound on page-crossing strided loads). The range is
// as wide as possible while still giving every thread a task: ceil(threads / B) slices of R,
// rounded up to whole 64-byte lines.
struct Split { i64 nblk, width; };
inline Split split(i64 B, i64 R) {
  const i64 th = omp_get_max_threads();
  i64 nblk = (th + B - 1) / B;
  i64 width = (R + nblk - 1) / nblk;
  width = (width + 15) / 16 * 16;
  nblk = (R + width - 1) / width;
  return {nblk, width};
}
struct Task { i64 b, c0, c1; };
inline Task task(i64 k, const Split& s, i64 R) {
  const i64 b = k / s.nblk, c0 = (k % s.nblk) * s.width;
  return {b, c0, std::min(c0 + s.width, R)};
}
// −8 softplus(Λ)·log2 e for channels [c0, c0 + n): the exponent of a = 2^{nsp2·r}
inline void decay_exponents(float* nsp2, const float* lambda, i64 c0, i64 n) {
  for (i64 j = 0; j < n; ++j)
    nsp2[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])) * 1.4426950408889634);
}}  // namespace

void rglru_scan_forward(float* y, float* h_out, float* decay, const float* x, const float* ga,
                        const float* gx, const float* h_in, const std::uint8_t* reset,
                        const float* lambda, i64 B, i64 T, i64 R, const float* exponents) {
  const Split sp = split(B, R);
  // the decay exponents depend on the channel only: the caller's, or once per call (not once per
  // batch row: a decode step, T = 1, would spend more on them than on its scan)
  thread_local std::vector<float> own;
  if (!exponents) {
    own.resize(static_cast<std::size_t>(R));
    decay_exponents(own.data(), lambda, 0, R);
  }
  const float* const all_nsp2 = exponents ? exponents : own.data();
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0, row = b * T * R + c0;
    thread_local std::vector<float> buf;  // kept per thread: a decode step calls this once per layer and token
    buf.resize(static_cast<std::size_t>(2 * n));
    float* h = buf.data();
    float* prod = h + n;
    const float* nsp2 = all_nsp2 + c0;
    for (i64 j = 0; j < n; ++j) h[j] = h_in ? h_in[b * R + c0 + j] : 0.0f;
    HWY_DYNAMIC_DISPATCH(ScanForwardTask)(y + row, h, decay ? prod : nullptr, nsp2, x + row, ga + row, gx + row,
                                          reset ? reset + b * T : nullptr, T, R, n);
    for (i64 j = 0; j < n; ++j) {
      if (h_out) h_out[b * R + c0 + j] = h[j];
      if (decay) decay[b * R + c0 + j] = prod[j];
    }
  }
}

void rglru_scan_backward(float* dx, float* dga, float* dgx, float* dh_in, float* dlambda,
                         const float* dy, const float* dh_out, const float* y, const float* x,
                         const float* ga, const float* gx, const float* h_in,
                         const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R,
                         i64 stream_min_bytes) {
  const Split sp = split(B, R);
  const bool stream = 2 * B * T * R * i64(sizeof(float)) >= stream_min_bytes;
  std::vector<float> dl_part(dlambda ? B * R : 0, 0.0f);  // per batch row, reduced below
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0, row = b * T * R + c0;
    std::vector<float> buf(4 * n);
    float* carry = buf.data();
    float* nsp2 = carry + n;
    float* dlog_sum = nsp2 + n;  // Σ_t r_t dlog_a_t  (dΛ = −8 σ(Λ) Σ r dlog_a)
    float* h0 = dlog_sum + n;    // h_{−1} of this chunk (h_in or 0)
    for (i64 j = 0; j < n; ++j) {
      h0[j] = h_in ? h_in[b * R + c0 + j] : 0.0f;
      carry[j] = dh_out ? dh_out[b * R + c0 + j] : 0.0f;
    }
    decay_exponents(nsp2, lambda, c0, n);
    HWY_DYNAMIC_DISPATCH(ScanBackwardTask)(dx + row, dga + row, dgx + row, carry, dlog_sum, nsp2, h0,
                                           y + row, dy + row, x + row, ga + row, gx + row,
                                           reset ? reset + b * T : nullptr, T, R, n, stream);
    for (i64 j = 0; j < n; ++j) {
      if (dh_in) dh_in[b * R + c0 + j] += carry[j];
      if (dlambda)
        dl_part[b * R + c0 + j] = float(-kRgLruC * sigmoid_ref(double(lambda[c0 + j]))) * dlog_sum[j];
    }
  }
  if (dlambda)
    for (i64 b = 0; b < B; ++b)
      for (i64 c = 0; c < R; ++c) dlambda[c] += dl_part[b * R + c];
}

void rglru_decay_exponents(float* exponents, const float* lambda, i64 R) { decay_exponents(exponents, lambda, 0, R); }

void rglru_forward(float* y, float* h_out, float* decay, float* ga, float* gx, const float* x,
                   const float* h_in, const std::uint8_t* reset, const float* wa, const float* ba,
                   const float* wx, const float* bx, const float* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  blockdiag_forward(ga, x, wa, ba, B * T, R, Hb);
  blockdiag_forward(gx, x, wx, bx, B * T, R, Hb);
  rglru_scan_forward(y, h_out, decay, x, ga, gx, h_in, reset, lambda, B, T, R);
}

void rglru_backward(float* dx, float* dh_in, float* dwa, float* dba, float* dwx, float* dbx,
                    float* dlambda, float* work, const float* dy, const float* dh_out,
                    const float* y, const float* ga, const float* gx, const float* x,
                    const float* h_in, const std::uint8_t* reset, const float* wa, const float* wx,
                    const float* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  float* dga = work;
  float* dgx = work + B * T * R;
  rglru_scan_backward(dx, dga, dgx, dh_in, dlambda, dy, dh_out, y, x, ga, gx, h_in, reset, lambda, B, T, R);
  blockdiag_backward(dx, dwa, dba, dga, x, wa, B * T, R, Hb);
  blockdiag_backward(dx, dwx, dbx, dgx, x, wx, B * T, R, Hb);
}

void rglru_carry(float* y, float* h_out, const float* h_in, const float* decay, const float* ga,
                 const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R) {
  const Split sp = split(B, R);
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0, row = b * T * R + c0;
    std::vector<float> buf(2 * n);
    float* carry = buf.data();  // (Π_{s≤t} ā_s) h_in, built up over t
    float* nsp2 = carry + n;
    for (i64 j = 0; j < n; ++j) carry[j] = h_in[b * R + c0 + j];
    decay_exponents(nsp2, lambda, c0, n);
    HWY_DYNAMIC_DISPATCH(CarryTask)(y + row, carry, nsp2, ga + row, reset ? reset + b * T : nullptr, T, R, n);
    if (h_out)
      for (i64 j = 0; j < n; ++j) h_out[b * R + c0 + j] += decay[b * R + c0 + j] * h_in[b * R + c0 + j];
  }
}

void rglru_carry_backward(float* dh_in, const float* dy, const float* ga, const std::uint8_t* reset,
                          const float* lambda, i64 B, i64 T, i64 R) {
  const Split sp = split(B, R);
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0, row = b * T * R + c0;
    std::vector<float> buf(2 * n);
    float* carry = buf.data();  // ā_{t+1} g_{t+1}
    float* nsp2 = carry + n;
    decay_exponents(nsp2, lambda, c0, n);
    HWY_DYNAMIC_DISPATCH(CarryBackwardTask)(carry, nsp2, dy + row, ga + row, reset ? reset + b * T : nullptr, T, R, n);
    for (i64 j = 0; j < n; ++j) dh_in[b * R + c0 + j] = carry[j];
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
#endif  // HWY_ONCE
