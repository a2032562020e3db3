// kernels/rwkv4.cpp — see rwkv4.hpp. Reference: rwkv4_ref.cpp (scalar loops per (b, c) over t).
// Fast: the same recurrence vectorised across a block of channels (contiguous in [B,T,D]), one
// exp per recurrence step; whole rows per work item so every stream is contiguous. Forward in the
// lazy-reference form (below), backward in the max form: pass 1 keeps the state every kSeg tokens
// (or the forward's checkpoints stand in for it), pass 2 walks the segments in reverse, recomputes a segment's per-token states (they stay in L2)
// and runs the adjoint recurrence. The vector loops are compiled once per SIMD target (Google
// Highway; hwy/foreach_target.h re-includes this file per target) and dispatched at run time
// (simd.hpp); the work split and the max-form fallback are compiled once (HWY_ONCE).
#include "kernels/rwkv4.hpp"
#include "kernels/vector_rows.hpp"

#include <omp.h>

#include <cmath>

#include <algorithm>
#include <vector>

// Constants shared by the per-target code and the dispatching code (this file is included once
// per target, so they sit behind their own guard).
#ifndef SCANSHARD_KERNELS_RWKV4_SHARED
#define SCANSHARD_KERNELS_RWKV4_SHARED
namespace scanshard::kernels::wkv4_detail {
// tokens per backward segment (its per-token states stay in L2); 16 against 8: from DRAM the
// AVX-512 backward 1.9–2.6 vs 2.3–3.1 ns/element (same runs; 32 and 4 no better)
constexpr i64 kSeg = 16;
constexpr float kLazyGap = 20.0f;    // natural units: e^20 ≈ 2^29
constexpr float kLazyMaxUW = 52.0f;  // E ≤ e^{20 + 52} ≈ 2e31: E·v stays finite for |v| < 1e7
// At most 2048 channels (8 KB of each row) per backward work item. Whole rows keep pass 1's k, v
// streams contiguous over tokens and a segment's rows one contiguous block; 4 KB pieces of rows
// 8 KB apart (1024 channels at D = 2048) were slower from DRAM although the adjoint's per-group
// data (48 KB at 2048 channels) then overflows L1: own roofline 0.40–0.54 vs 0.36–0.46 (AVX3),
// 0.35–0.46 vs 0.30–0.40 (AVX2), six runs each in thread CPU time; 8-token segments no better
// (docs/kernels-wkv-2026-12-07.md; an earlier wall-time comparison under load had favoured 1024).
// The forward shows the same: row pieces of 1024 / 512 channels halve its fraction of triad.
constexpr i64 kBwdMaxCB = 2048;
static_assert(kSeg == kWkv4CheckpointTokens, "the forward's checkpoints are the backward's segment starts");
}  // namespace scanshard::kernels::wkv4_detail
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/rwkv4.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

using namespace wkv4_detail;

// Whole vector or its first rem lanes (rem ≥ 1), by a predictable branch.
HWY_INLINE VF LoadClip(const float* p, i64 rem) {
  return rem >= i64(hn::Lanes(DF())) ? hn::LoadU(DF(), p) : LoadPart(p, size_t(rem));
}
HWY_INLINE void StoreClip(VF v, float* p, i64 rem) {
  if (rem >= i64(hn::Lanes(DF()))) hn::StoreU(v, DF(), p);
  else StorePart(v, p, size_t(rem));
}

// ─── forward in the lazy-reference form ─────────────────────────────────────────────────────────
// The max form (fast::wkv4_step) spends two exps per token (y and the state each rescale to a new
// maximum). Here the state is kept as α = a·e^q, β = b·e^q against a reference q that simply
// decays with the state, q_{t+1} = q_t − w, so the update needs no rescaling:
//   x = k_t − q_{t+1},  e = e^x:   a ← a + e v_t,  b ← b + e
//   y_t = (a + E v_t)/(b + E),  E = e^{u + k_t − q_t} = e·e^{u−w}          — ONE exp per token.
// q is held as q0 − n·w (q0 = the reference at the last renormalisation, n an exact integer
// count) so that x = k − q0 + (n+1)w has one rounding instead of a drift of t roundings.
// When x would exceed kLazyGap (a key far above the decayed reference; also the zero state) the
// lanes concerned are renormalised to the key: q_{t+1} := k_t, a, b ·= e^{−x}, e = 1 (the same
// exp of ∓x, so still one exp per token and no branch) — so terms stay ≤ e^20 and b ≥ 1 (the
// maximal term is 1 at each renormalisation and q never rises above the running maximum p of
// the max form, kept alongside in two cheap ops for state_out). E = e·e^{u−w} stays finite for
// |u − w| ≤ kLazyMaxUW; otherwise the whole call uses the max form. state_out is converted back
// to the max form (a, b ·= e^{q − p}, p). Accuracy vs the double reference is that of the fp32
// reference (bench of 3 seeds × T = 100, 1000: max |err| 1.1–2.0e-6 vs 0.4–2.5e-6 for ref<float>).
constexpr i64 kPf = 512;  // 2 KB: 0.60–0.65 of triad vs 0.51–0.56 at 4 KB and 0.38 with none (AVX-512, same runs)

// The per-channel state of the lazy forward, interleaved by vector-sized channel group: group g
// holds a, b, q0, n, p, w, cu = e^{u−w} as 7 consecutive vectors. As 7 separate rows of CB
// floats (8 KB apart at CB = 2048) they and the k, v, y rows all fell in the same L1 sets:
// 10 lines per step for 8 ways.
constexpr i64 kLazyRows = 7;
HWY_INLINE float& LazyAt(float* buf, int r, i64 c) {
  const i64 NL = i64(hn::Lanes(DF()));
  return buf[((c / NL) * kLazyRows + r) * NL + c % NL];
}

// One token of the vector of channels whose state block is st (see LazyAt). P: keep the running
// maximum p (only state_out needs it: one load, one store and two operations fewer without).
template <bool Tail, bool P>
HWY_INLINE void LazyCol(const RowIo<Tail>& io, float* st, float* y, const float* k, const float* v) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  float *a = st, *bb = a + NL, *q = bb + NL, *n = q + NL, *p = n + NL, *w = p + NL, *cu = w + NL;
  // software prefetch kPf floats ahead along the rows: the hardware prefetchers restart at every
  // 4 KB page and the compute between loads keeps few misses in flight
  PrefetchL1(k + kPf);
  PrefetchL1(v + kPf);
  PrefetchL1Write(y + kPf);
  VF sa = hn::LoadU(d, a), sb = hn::LoadU(d, bb), q0 = hn::LoadU(d, q), sn = hn::LoadU(d, n);
  const VF sw = hn::LoadU(d, w), scu = hn::LoadU(d, cu);
  const VF one = hn::Set(d, 1.0f);
  const VF kk = io.ld(k), vv = io.ld(v);
  const VF n1 = hn::Add(sn, one);
  if constexpr (P) hn::StoreU(hn::Max(hn::Sub(hn::LoadU(d, p), sw), kk), d, p);  // p_{t+1} = max(p_t − w, k_t)
  const VF x = hn::MulAdd(n1, sw, hn::Sub(kk, q0));  // k − q_{t+1},  q_{t+1} = q0 − (n+1) w
  // re-reference where x > kLazyGap: q_{t+1} := k_t (q0 = k + w, n = 1), so e = 1 and the state
  // ·= sc = e^{−x}. Branch-free with one exp of ∓x: a branch on x (rare, so mispredicted when
  // taken) depends on the k just loaded, and a misprediction discards the loads in flight behind
  // it (from DRAM: ~10 % more of triad branch-free, same runs; in L2 no difference).
  const auto big = hn::Gt(x, hn::Set(d, kLazyGap));
  const VF ex = Exp2UpTo126(hn::Mul(hn::IfThenElse(big, hn::Neg(x), x), hn::Set(d, kLog2e)));  // ∓x ≤ kLazyGap
  const VF e = hn::IfThenElse(big, one, ex);
  const VF sc = hn::IfThenElse(big, ex, one);
  sa = hn::Mul(sa, sc);
  sb = hn::Mul(sb, sc);
  hn::StoreU(hn::IfThenElse(big, hn::Add(kk, sw), q0), d, q);
  hn::StoreU(hn::IfThenElse(big, one, n1), d, n);
  const VF E = hn::Mul(e, scu);
  io.st(y, hn::Div(hn::MulAdd(E, vv, sa), hn::Add(sb, E)));
  hn::StoreU(hn::MulAdd(e, vv, sa), d, a);
  hn::StoreU(hn::Add(sb, e), d, bb);
}

template <bool P>
HWY_INLINE void LazyRow(float* sb, float* y, const float* k, const float* v, i64 nc) {
  const i64 NL = i64(hn::Lanes(DF()));
  const RowIo<false> whole{0};
  i64 j = 0;
  for (; j + NL <= nc; j += NL) LazyCol<false, P>(whole, sb + j * kLazyRows, y + j, k + j, v + j);
  if (j < nc) LazyCol<true, P>(RowIo<true>{size_t(nc - j)}, sb + j * kLazyRows, y + j, k + j, v + j);
}

// The state before token t into the checkpoint rows ck (3 rows D apart) as (a, b, q), q = q0 − n w
// by one multiply-add of the exact product n w (n reaches T; a separate product would round at n w's
// magnitude) — the lazy form's own scale, so the forward keeps no running maximum for it (writing the
// max form instead, with p tracked every token: AVX2 forward + backward 1.01–1.03× vs 1.01–1.18× so).
HWY_INLINE void LazyCheckpoint(const float* sb, float* ck, i64 D, i64 nc) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  for (i64 c = 0; c < nc; c += NL) {
    const float* st = sb + c * kLazyRows;  // a, b, q0, n, p, w, cu
    StoreClip(hn::LoadU(d, st), ck + c, nc - c);
    StoreClip(hn::LoadU(d, st + NL), ck + D + c, nc - c);
    StoreClip(hn::NegMulAdd(hn::LoadU(d, st + 3 * NL), hn::LoadU(d, st + 5 * NL), hn::LoadU(d, st + 2 * NL)), ck + 2 * D + c,
              nc - c);
  }
}

// One work item of the lazy forward: batch row b, channels [c0, c0 + nc), all T tokens. ckpt
// (nullable): the state before every token t = s·kSeg, s ≥ 1 (see wkv4_checkpoint_floats).
void LazyForwardTask(float* y, float* state_out, float* ckpt, const float* k, const float* v, const float* decay,
                     const float* bonus, const float* state_in, i64 B, i64 T, i64 D, i64 b, i64 c0, i64 nc) {
  const i64 NL = i64(hn::Lanes(DF())), BD = B * D, s0 = b * D + c0, ncr = (nc + NL - 1) / NL * NL;
  thread_local AlignedVec buf;
  if (buf.size() < size_t(kLazyRows * ncr)) buf.resize(size_t(kLazyRows * ncr));
  float* sb = buf.data();
  for (i64 c = 0; c < ncr; ++c) {  // padding lanes too: finite values for the full vectors
    const bool in = c < nc;
    LazyAt(sb, 0, c) = in && state_in ? state_in[s0 + c] : 0.0f;       // a
    LazyAt(sb, 1, c) = in && state_in ? state_in[BD + s0 + c] : 0.0f;  // b
    const float p = in && state_in ? state_in[2 * BD + s0 + c] : kWkv4NoState;
    LazyAt(sb, 2, c) = p;     // q0
    LazyAt(sb, 3, c) = 0.0f;  // n
    LazyAt(sb, 4, c) = p;     // p
    const double wd = in ? std::exp(double(decay[c0 + c])) : 1.0;
    LazyAt(sb, 5, c) = float(wd);                                                // w
    LazyAt(sb, 6, c) = in ? float(std::exp(double(bonus[c0 + c]) - wd)) : 1.0f;  // e^{u − w}
  }
  const i64 NC = wkv4_checkpoints(T);
  for (i64 t = 0; t < T; ++t) {
    const i64 o = (b * T + t) * D + c0;
    if (ckpt && t > 0 && t % kSeg == 0) LazyCheckpoint(sb, ckpt + ((b * NC + t / kSeg - 1) * 3) * D + c0, D, nc);
    if (state_out) LazyRow<true>(sb, y + o, k + o, v + o, nc);
    else LazyRow<false>(sb, y + o, k + o, v + o, nc);
  }
  if (state_out)
    for (i64 c = 0; c < nc; ++c) {
      // back to the max form: a, b ·= e^{q − p} (≤ 1), q = q0 − n w — in double, so the exponent
      // has no rounding of its own (n w reaches a few hundred) with or without an FMA unit
      const float sc = float(std::exp(double(LazyAt(sb, 2, c)) - double(LazyAt(sb, 3, c)) * double(LazyAt(sb, 5, c)) -
                                      double(LazyAt(sb, 4, c))));
      state_out[s0 + c] = LazyAt(sb, 0, c) * sc;
      state_out[BD + s0 + c] = LazyAt(sb, 1, c) * sc;
      state_out[2 * BD + s0 + c] = LazyAt(sb, 4, c);
    }
}

// ─── backward (max form) ──────────────────────────────────────────────────────────────────────
// For d = x − y, e = e^{−|d|} and (e^{x−q}, e^{y−q}) with q = max(x, y) is d ≥ 0 ? (1, e) : (e, 1)
// (at d = ±0 both forms are (1, 1)). Below AVX-512, |d| is capped at 86
// (e^{−86} ≈ 4e-38 stands for anything smaller, as Exp2UpTo126's floor did) so that −|d|·log2 e
// stays in Exp2OfProduct's range, and the scaling by log2 e folds into its range reduction.
HWY_INLINE void ScaledPair(VF x, VF y, VF& ex, VF& ey) {
  const DF d;
  const VF diff = hn::Sub(x, y);
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  const VF e = Exp2(hn::Mul(hn::Abs(diff), hn::Set(d, -kLog2e)));
#else
  const VF e = Exp2OfProduct(hn::Min(hn::Abs(diff), hn::Set(d, 86.0f)), hn::Set(d, -kLog2e));
#endif
  ex = IfNegative(diff, e, hn::Set(d, 1.0f));
  ey = IfNegative(diff, hn::Set(d, 1.0f), e);
}

// Every per-channel array of the backward is interleaved by vector-sized channel group, like the
// lazy forward: states (a, b, p) as 3 consecutive vectors per group ([3·ncr] per checkpoint), and
// (da, db, dw, du, w, u) as 6. As rows CB floats apart, a step touched ~14 lines in the same L1
// set (states, adjoints, k, v, dy, dk, dv rows). A segment's recomputed states carry 2 rows more:
// the pair (e^{p−w−p'}, e^{k−p'}) of the step out of that state, which the adjoint step needs
// too (one ScaledPair per token fewer).
constexpr i64 kStRows = 3, kSegRows = 5, kAdjRows = 6;

// State step (max form) for nc channels: nxt from cur (interleaved states, kRows vectors per
// group), w from pc. kRows = kSegRows: also keeps the step's scaled pair in cur's rows 3 and 4.
template <i64 kRows>
HWY_INLINE void StateStep(float* nxt, float* cur, const float* kt, const float* vt, const float* pc, i64 nc,
                          i64 pf) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  for (i64 c = 0; c < nc; c += NL) {
    float* sc = cur + c * kRows;
    float* sn = nxt + c * kRows;
    PrefetchL2(kt + c + pf);
    PrefetchL2(vt + c + pf);
    const VF kk = LoadClip(kt + c, nc - c), vv = LoadClip(vt + c, nc - c);
    const VF pw = hn::Sub(hn::LoadU(d, sc + 2 * NL), hn::LoadU(d, pc + c * kAdjRows + 4 * NL));
    VF e1, e2;
    ScaledPair(pw, kk, e1, e2);
    if constexpr (kRows == kSegRows) {
      hn::StoreU(e1, d, sc + 3 * NL);
      hn::StoreU(e2, d, sc + 4 * NL);
    }
    hn::StoreU(hn::MulAdd(e1, hn::LoadU(d, sc), hn::Mul(e2, vv)), d, sn);
    hn::StoreU(hn::MulAdd(e1, hn::LoadU(d, sc + NL), e2), d, sn + NL);
    hn::StoreU(hn::Max(pw, kk), d, sn + 2 * NL);
  }
}

// One token of the adjoint recurrence for nc channels (see the scalar loop of ref::wkv4_backward).
HWY_INLINE void AdjointStep(float* dkt, float* dvt, float* pc, const float* cur, const float* kt, const float* vt,
                            const float* gt, i64 nc, i64 pf) {
  const DF d;
  const i64 NL = i64(hn::Lanes(d));
  for (i64 c = 0; c < nc; c += NL) {
    const i64 rem = nc - c;
    const float* sc = cur + c * kSegRows;
    float* q = pc + c * kAdjRows;  // da, db, dw, du, w, u
    PrefetchL2(gt + c + pf);
    PrefetchL2Write(dkt + c + pf);
    PrefetchL2Write(dvt + c + pf);
    const VF kk = LoadClip(kt + c, rem), vv = LoadClip(vt + c, rem);
    const VF A0 = hn::LoadU(d, sc), B0 = hn::LoadU(d, sc + NL), P0 = hn::LoadU(d, sc + 2 * NL);
    const VF DA = hn::LoadU(d, q), DB = hn::LoadU(d, q + NL);
    // e^{p_t − w − p_{t+1}}, e^{k_t − p_{t+1}}: kept by the segment's StateStep
    const VF ed = hn::LoadU(d, sc + 3 * NL), ek = hn::LoadU(d, sc + 4 * NL);
    VF gk = hn::Mul(hn::MulAdd(DA, vv, DB), ek), gv = hn::Mul(DA, ek);
    hn::StoreU(hn::NegMulAdd(hn::MulAdd(DA, A0, hn::Mul(DB, B0)), ed, hn::LoadU(d, q + 2 * NL)), d, q + 2 * NL);
    VF dan = hn::Mul(DA, ed), dbn = hn::Mul(DB, ed);
    VF e1, e2;
    ScaledPair(P0, hn::Add(hn::LoadU(d, q + 5 * NL), kk), e1, e2);
    const VF rden = hn::Div(hn::Set(d, 1.0f), hn::MulAdd(e1, B0, e2));
    const VF yt = hn::Mul(hn::MulAdd(e1, A0, hn::Mul(e2, vv)), rden);
    const VF gz = hn::Mul(LoadClip(gt + c, rem), rden);
    const VF gze2 = hn::Mul(gz, e2);
    gv = hn::Add(gv, gze2);
    const VF gku = hn::Mul(gze2, hn::Sub(vv, yt));
    gk = hn::Add(gk, gku);
    hn::StoreU(hn::Add(hn::LoadU(d, q + 3 * NL), gku), d, q + 3 * NL);
    const VF gze1 = hn::Mul(gz, e1);
    dan = hn::Add(dan, gze1);
    dbn = hn::NegMulAdd(gze1, yt, dbn);
    StoreClip(hn::Add(LoadClip(dkt + c, rem), gk), dkt + c, rem);
    StoreClip(hn::Add(LoadClip(dvt + c, rem), gv), dvt + c, rem);
    hn::StoreU(dan, d, q);
    hn::StoreU(dbn, d, q + NL);
  }
}

// One work item of the backward: batch row b, channels [c0, c0 + nc). Writes pdw, pdu (per
// (b, channel) partial dw·w and du, reduced over b by the caller) and dstate_in; accumulates dk, dv.
// ckpt (nullable): the forward's checkpoints; then pass 1 is skipped and k, v are read once.
void BackwardTask(float* dk, float* dv, float* pdw, float* pdu, float* dstate_in, const float* dy,
                  const float* dstate_out, const float* k, const float* v, const float* decay, const float* bonus,
                  const float* state_in, const float* ckpt, i64 B, i64 T, i64 D, i64 b, i64 c0, i64 nc) {
  const i64 NL = i64(hn::Lanes(DF())), BD = B * D, s0 = b * D + c0, ncr = (nc + NL - 1) / NL * NL;
  // SB, SG: floats per interleaved checkpoint / segment state
  const i64 NS = (T + kSeg - 1) / kSeg, SB = kStRows * ncr, SG = kSegRows * ncr;
  auto at = [NL](float* base, i64 rows, int r, i64 c) -> float& { return base[((c / NL) * rows + r) * NL + c % NL]; };
  // per-thread scratch kept across calls (a fresh zero-filled vector per call cost page faults +
  // a memset: 1.3 ms per call, 19.7 ns/element at T = 64, D = 1024): checkpoints (the state at
  // every segment start), the states inside one segment, the adjoints
  thread_local AlignedVec ck, seg, buf;
  ck.resize(std::max(ck.size(), static_cast<size_t>((ckpt ? 1 : NS + 1) * SB)));
  seg.resize(std::max(seg.size(), static_cast<size_t>((kSeg + 1) * SG)));
  buf.resize(std::max(buf.size(), static_cast<size_t>(kAdjRows * ncr)));
  float *pc = buf.data(), *c0s = ck.data();
  for (i64 c = 0; c < ncr; ++c) {  // padding lanes too: finite values for the full vectors
    const bool in = c < nc;
    at(c0s, kStRows, 0, c) = in && state_in ? state_in[s0 + c] : 0.0f;
    at(c0s, kStRows, 1, c) = in && state_in ? state_in[BD + s0 + c] : 0.0f;
    at(c0s, kStRows, 2, c) = in && state_in ? state_in[2 * BD + s0 + c] : kWkv4NoState;
    at(pc, kAdjRows, 0, c) = in && dstate_out ? dstate_out[s0 + c] : 0.0f;
    at(pc, kAdjRows, 1, c) = in && dstate_out ? dstate_out[BD + s0 + c] : 0.0f;
    at(pc, kAdjRows, 2, c) = 0.0f;
    at(pc, kAdjRows, 3, c) = 0.0f;
    at(pc, kAdjRows, 4, c) = in ? std::exp(decay[c0 + c]) : 1.0f;
    at(pc, kAdjRows, 5, c) = in ? bonus[c0 + c] : 0.0f;
  }
  // pass 1: states at the segment starts (unless the forward kept them)
  for (i64 s = 0; !ckpt && s + 1 < NS; ++s) {
    float* cur = &ck[s * SB];
    float* nxt = &ck[(s + 1) * SB];
    std::copy_n(cur, SB, nxt);
    for (i64 t = s * kSeg; t < (s + 1) * kSeg; ++t) {
      const i64 o = (b * T + t) * D + c0;
      StateStep<kStRows>(nxt, nxt, k + o, v + o, pc, nc, D);
    }
  }
  // pass 2: segments in reverse; the segment's states recomputed, then the adjoint
  for (i64 s = NS - 1; s >= 0; --s) {
    const i64 t0 = s * kSeg, t1 = std::min(T, t0 + kSeg);
    if (ckpt && s > 0) {  // segment start from the forward's checkpoint rows; padding lanes as c0s
      const float* cr = ckpt + ((b * (NS - 1) + s - 1) * 3) * D + c0;
      for (i64 g = 0; g < ncr / NL; ++g)
        for (int r = 0; r < kStRows; ++r) {
          const i64 c = g * NL, rem = std::min(NL, nc - c);
          float* dst = &seg[(g * kSegRows + r) * NL];
          hn::StoreU(rem == NL ? hn::LoadU(DF(), cr + r * D + c) : hn::LoadU(DF(), &c0s[(g * kStRows + r) * NL]), DF(), dst);
          if (rem < NL) std::copy_n(cr + r * D + c, rem, dst);
        }
    } else {
      for (i64 g = 0; g < ncr / NL; ++g) std::copy_n(&ck[s * SB + g * kStRows * NL], kStRows * NL, &seg[g * kSegRows * NL]);
    }
    for (i64 t = t0; t < t1; ++t) {
      const i64 o = (b * T + t) * D + c0;
      float* cur = &seg[(t - t0) * SG];
      StateStep<kSegRows>(cur + SG, cur, k + o, v + o, pc, nc, -kSeg * D);  // prefetch: next segment's row
    }
    if (ckpt && s + 1 < NS) {  // the adjoint so far is scaled to the next checkpoint's q: to this segment's end p
      const float* qn = ckpt + ((b * (NS - 1) + s) * 3 + 2) * D + c0;
      const float* pe = &seg[(t1 - t0) * SG];
      for (i64 c = 0; c < nc; c += NL) {
        const VF f = Exp2UpTo126(hn::Mul(hn::Sub(hn::LoadU(DF(), pe + c * kSegRows + 2 * NL), LoadClip(qn + c, nc - c)),
                                         hn::Set(DF(), kLog2e)));
        float* q = pc + c * kAdjRows;
        hn::StoreU(hn::Mul(hn::LoadU(DF(), q), f), DF(), q);
        hn::StoreU(hn::Mul(hn::LoadU(DF(), q + NL), f), DF(), q + NL);
      }
    }
    for (i64 t = t1 - 1; t >= t0; --t) {
      const i64 o = (b * T + t) * D + c0;
      AdjointStep(dk + o, dv + o, pc, &seg[(t - t0) * SG], k + o, v + o, dy + o, nc, -D);
    }
  }
  for (i64 c = 0; c < nc; ++c) {
    pdw[s0 + c] = at(pc, kAdjRows, 2, c) * at(pc, kAdjRows, 4, c);
    pdu[s0 + c] = at(pc, kAdjRows, 3, c);
    if (dstate_in) {
      dstate_in[s0 + c] = at(pc, kAdjRows, 0, c);
      dstate_in[BD + s0 + c] = at(pc, kAdjRows, 1, c);
    }
  }
}

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace scanshard::kernels {

namespace fast {

namespace {
using namespace wkv4_detail;
HWY_EXPORT(LazyForwardTask);
HWY_EXPORT(BackwardTask);

// Channels per work item: whole rows (contiguous streams over t) unless there are fewer batch
// rows than threads, then rows are split so that every thread has work; multiple of 16.
i64 channel_block(i64 B, i64 D) {
  const i64 th = omp_get_max_threads();
  const i64 splits = std::max<i64>(1, (th + B - 1) / B);
  const i64 cb = ((D + splits - 1) / splits + 15) / 16 * 16;
  return std::max<i64>(1, std::min(cb, D));
}

// For q = max(x, y): (e^{x−q}, e^{y−q}) is (1, e^{−|x−y|}) if x ≥ y else (e^{−|x−y|}, 1).
inline void scaled_pair(float x, float y, float& ex, float& ey) {
  const float d = x - y;
  const float e = exp_fast(d >= 0.0f ? -d : d);
  ex = d >= 0.0f ? 1.0f : e;
  ey = d >= 0.0f ? e : 1.0f;
}

// One token of the forward recurrence over nc channels: optional output y, state (a, bb, p)
// updated from (a0, b0, p0) (which may alias).
inline void wkv4_step(float* y, float* a, float* bb, float* p, const float* a0, const float* b0,
                      const float* p0, const float* kt, const float* vt, const float* w,
                      const float* u, i64 nc) {
#pragma omp simd
  for (i64 c = 0; c < nc; ++c) {
    float e1, e2;
    if (y) {
      // y = (α + e^{u+k} v)/(β + e^{u+k}), scaled by e^{−max(p, u+k)}
      scaled_pair(p0[c], u[c] + kt[c], e1, e2);
      y[c] = (e1 * a0[c] + e2 * vt[c]) / (e1 * b0[c] + e2);
    }
    // α ← e^{−w} α + e^{k} v, β ← e^{−w} β + e^{k}, scaled by e^{−max(p − w, k)}
    const float pw = p0[c] - w[c];
    scaled_pair(pw, kt[c], e1, e2);
    const float an = e1 * a0[c] + e2 * vt[c], bn = e1 * b0[c] + e2;
    a[c] = an;
    bb[c] = bn;
    p[c] = pw > kt[c] ? pw : kt[c];
  }
}

void load_state(float* a, float* bb, float* p, float* w, float* u, const float* state_in,
                const float* decay, const float* bonus, i64 BD, i64 s0, i64 c0, i64 nc) {
  for (i64 c = 0; c < nc; ++c) {
    a[c] = state_in ? state_in[s0 + c] : 0.0f;
    bb[c] = state_in ? state_in[BD + s0 + c] : 0.0f;
    p[c] = state_in ? state_in[2 * BD + s0 + c] : kWkv4NoState;
    w[c] = std::exp(decay[c0 + c]);
    u[c] = bonus[c0 + c];
  }
}

// Whether every channel qualifies for the lazy form (|u − w| ≤ kLazyMaxUW).
bool lazy_ok(const float* decay, const float* bonus, i64 D) {
  for (i64 c = 0; c < D; ++c)
    if (!(std::fabs(double(bonus[c]) - std::exp(double(decay[c]))) <= kLazyMaxUW)) return false;
  return true;
}
}  // namespace

void wkv4_forward(float* y, float* state_out, const float* k, const float* v, const float* decay,
                  const float* bonus, const float* state_in, i64 B, i64 T, i64 D, float* ckpt) {
  const i64 BD = B * D, CB = channel_block(B, D), NB = (D + CB - 1) / CB, NC = wkv4_checkpoints(T);
  // one token of one sequence (batch-1 decoding) runs on the calling thread, as rope and the
  // norms: a region's barrier waits for an idle thread to be scheduled on a loaded machine
  if (lazy_ok(decay, bonus, D)) {
#pragma omp parallel for collapse(2) schedule(static) if (B * T > 1)
    for (i64 b = 0; b < B; ++b)
      for (i64 cb = 0; cb < NB; ++cb)
        HWY_DYNAMIC_DISPATCH(LazyForwardTask)(y, state_out, ckpt, k, v, decay, bonus, state_in, B, T, D, b, cb * CB,
                                              std::min(CB, D - cb * CB));
    return;
  }
  // max form (a bonus far from the decay): plain vectorisable loops
#pragma omp parallel if (B * T > 1)
  {
    std::vector<float> buf(static_cast<size_t>(5 * CB));
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 cb = 0; cb < NB; ++cb) {
        const i64 c0 = cb * CB, nc = std::min(CB, D - c0), s0 = b * D + c0;
        float *a = buf.data(), *bb = a + CB, *p = bb + CB, *w = p + CB, *u = w + CB;
        load_state(a, bb, p, w, u, state_in, decay, bonus, BD, s0, c0, nc);
        for (i64 t = 0; t < T; ++t) {
          const i64 o = (b * T + t) * D + c0;
          if (ckpt && t > 0 && t % kSeg == 0) {
            float* cr = ckpt + ((b * NC + t / kSeg - 1) * 3) * D + c0;
            std::copy_n(a, nc, cr);
            std::copy_n(bb, nc, cr + D);
            std::copy_n(p, nc, cr + 2 * D);
          }
          wkv4_step(y + o, a, bb, p, a, bb, p, k + o, v + o, w, u, nc);
        }
        if (state_out)
          for (i64 c = 0; c < nc; ++c) {
            state_out[s0 + c] = a[c];
            state_out[BD + s0 + c] = bb[c];
            state_out[2 * BD + s0 + c] = p[c];
          }
      }
  }
}

void wkv4_backward(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in,
                   const float* dy, const float* dstate_out, const float* k, const float* v,
                   const float* decay, const float* bonus, const float* state_in, i64 B, i64 T,
                   i64 D, const float* ckpt) {
  const i64 BD = B * D, CB = std::min(kBwdMaxCB, channel_block(B, D)), NB = (D + CB - 1) / CB;
  // per-(b, channel) partial dw, du; reduced over b afterwards (deterministic order)
  std::vector<float> pdw(static_cast<size_t>(BD), 0.0f), pdu(static_cast<size_t>(BD), 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 b = 0; b < B; ++b)
    for (i64 cb = 0; cb < NB; ++cb)
      HWY_DYNAMIC_DISPATCH(BackwardTask)(dk, dv, pdw.data(), pdu.data(), dstate_in, dy, dstate_out, k, v, decay,
                                         bonus, state_in, ckpt, B, T, D, b, cb * CB, std::min(CB, D - cb * CB));
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      ddecay[c] += pdw[b * D + c];
      dbonus[c] += pdu[b * D + c];
    }
}

void token_shift_forward(float* out, const float* x, const float* prev, const float* mu, i64 B,
                         i64 T, i64 D) {
#pragma omp parallel for schedule(static) if (B * T > 1)
  for (i64 bt = 0; bt < B * T; ++bt) {
    const i64 b = bt / T, t = bt % T;
    const float* xp = t > 0 ? x + (bt - 1) * D : (prev ? prev + b * D : nullptr);
    rows::lerp(out + bt * D, x + bt * D, xp, mu, D);  // μ x_t + (1 − μ) x_{t−1}
  }
}

void token_shift_backward(float* dx, float* dprev, float* dmu, const float* dout, const float* x,
                          const float* prev, const float* mu, i64 B, i64 T, i64 D) {
  if (dx || dprev) {
#pragma omp parallel for schedule(static)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      const float* gt = dout + bt * D;
      // token t is x_{t−1} of token t+1
      if (dx) rows::lerp_grad(dx + bt * D, gt, t + 1 < T ? gt + D : nullptr, mu, D);
      if (t == 0 && dprev)
        for (i64 c = 0; c < D; ++c) dprev[b * D + c] += (1.0f - mu[c]) * gt[c];
    }
  }
  if (dmu) {
#pragma omp parallel for schedule(static)
    for (i64 c0 = 0; c0 < D; c0 += 64) {
      const i64 w = std::min(D, c0 + 64) - c0;
      for (i64 bt = 0; bt < B * T; ++bt) {
        const i64 b = bt / T, t = bt % T;
        const float* xp = t > 0 ? x + (bt - 1) * D : (prev ? prev + b * D : nullptr);
        // dμ += g ⊙ (x_t − x_{t−1})
        rows::add_product_of_difference(dmu + c0, dout + bt * D + c0, x + bt * D + c0, xp ? xp + c0 : nullptr, w);
      }
    }
  }
}

}  // namespace fast

void wkv4_chunk_forward(float* y, float* state_out, float* log_decay, const float* k,
                        const float* v, const float* decay, const float* bonus,
                        const float* state_in, i64 B, i64 T, i64 D, float* ckpt) {
  if (log_decay)
    for (i64 c = 0; c < D; ++c) log_decay[c] = -float(T) * std::exp(decay[c]);
  fast::wkv4_forward(y, state_out, k, v, decay, bonus, state_in, B, T, D, ckpt);
}

void wkv4_chunk_backward(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in,
                         const float* dy, const float* dstate_out, const float* k, const float* v,
                         const float* decay, const float* bonus, const float* state_in, i64 B,
                         i64 T, i64 D, const float* ckpt) {
  fast::wkv4_backward(dk, dv, ddecay, dbonus, dstate_in, dy, dstate_out, k, v, decay, bonus,
                      state_in, B, T, D, ckpt);
}

void wkv4_state_combine(float* out, const float* in, const float* local, const float* log_decay,
                        i64 B, i64 D) {
  const i64 BD = B * D;
  for (i64 s = 0; s < BD; ++s) {
    const float la = local[s], lb = local[BD + s], lp = local[2 * BD + s];
    if (!in) {
      out[s] = la;
      out[BD + s] = lb;
      out[2 * BD + s] = lp;
      continue;
    }
    // α_out = e^{log_decay} α_in + α_local (same for β), rescaled by e^{−max}
    const float pin = in[2 * BD + s] + log_decay[s % D];
    const float q = std::max(pin, lp);
    const float e1 = std::exp(pin - q), e2 = std::exp(lp - q);
    out[s] = e1 * in[s] + e2 * la;
    out[BD + s] = e1 * in[BD + s] + e2 * lb;
    out[2 * BD + s] = q;
  }
}

void wkv4_grad_state_combine(float* dstate_in, const float* dstate_out,
                             const float* local_dstate_in, const float* state_in,
                             const float* state_out, const float* log_decay, i64 B, i64 D) {
  const i64 BD = B * D;
  for (i64 s = 0; s < BD; ++s) {
    // dα_in = e^{log_decay} dα_out + local; scaled: ·e^{p_in}, dα_out = d_out·e^{−p_out}
    const float f = std::exp(state_in[2 * BD + s] + log_decay[s % D] - state_out[2 * BD + s]);
    dstate_in[s] = f * dstate_out[s] + local_dstate_in[s];
    dstate_in[BD + s] = f * dstate_out[BD + s] + local_dstate_in[BD + s];
  }
}

}  // namespace scanshard::kernels
#endif  // HWY_ONCE
