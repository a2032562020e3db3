// kernels/rwkv4.cpp — see rwkv4.hpp. Reference: scalar loops per (b, c) over t with std::exp.
// Fast: the same scaled recurrence, vectorised across a block of channels (contiguous in [B,T,D]),
// exp_fast, one exp per recurrence step; whole rows per work item so every stream is contiguous.
// Backward: pass 1 keeps the state every kSeg tokens, pass 2 walks the segments in reverse,
// recomputes a segment's per-token states (they stay in L2) and runs the adjoint recurrence.
#include "kernels/rwkv4.hpp"

#include <omp.h>

#include <cmath>

#include <algorithm>
#include <vector>

#include "kernels/vec512.hpp"

namespace scanshard::kernels {

namespace ref {

template <class F>
void wkv4_forward(F* y, F* state_out, const F* k, const F* v, const F* decay, const F* bonus,
                  const F* state_in, i64 B, i64 T, i64 D) {
  const i64 BD = B * D;
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      const i64 s = b * D + c;
      F a = state_in ? state_in[s] : F(0);
      F bb = state_in ? state_in[BD + s] : F(0);
      F p = state_in ? state_in[2 * BD + s] : F(kWkv4NoState);
      const F w = std::exp(decay[c]), u = bonus[c];
      for (i64 t = 0; t < T; ++t) {
        const i64 i = (b * T + t) * D + c;
        const F kt = k[i], vt = v[i];
        // wkv_t = (α_t + e^{u+k_t} v_t) / (β_t + e^{u+k_t}); numerator and denominator ·e^{−q},
        // q = max(p, u + k_t), α_t = a·e^p, β_t = b·e^p
        F q = std::max(p, u + kt);
        F e1 = std::exp(p - q), e2 = std::exp(u + kt - q);
        y[i] = (e1 * a + e2 * vt) / (e1 * bb + e2);
        // α_{t+1} = e^{−w} α_t + e^{k_t} v_t,  β_{t+1} = e^{−w} β_t + e^{k_t}   (·e^{−q'},
        // q' = max(p − w, k_t) becomes the new p)
        q = std::max(p - w, kt);
        e1 = std::exp(p - w - q);
        e2 = std::exp(kt - q);
        a = e1 * a + e2 * vt;
        bb = e1 * bb + e2;
        p = q;
      }
      if (state_out) {
        state_out[s] = a;
        state_out[BD + s] = bb;
        state_out[2 * BD + s] = p;
      }
    }
}

template <class F>
void wkv4_backward(F* dk, F* dv, F* ddecay, F* dbonus, F* dstate_in, const F* dy,
                   const F* dstate_out, const F* k, const F* v, const F* decay, const F* bonus,
                   const F* state_in, i64 B, i64 T, i64 D) {
  const i64 BD = B * D;
  std::vector<F> sa(T + 1), sb(T + 1), sp(T + 1);
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      const i64 s = b * D + c;
      const F w = std::exp(decay[c]), u = bonus[c];
      // recompute the states before every token (and after the last one)
      sa[0] = state_in ? state_in[s] : F(0);
      sb[0] = state_in ? state_in[BD + s] : F(0);
      sp[0] = state_in ? state_in[2 * BD + s] : F(kWkv4NoState);
      for (i64 t = 0; t < T; ++t) {
        const i64 i = (b * T + t) * D + c;
        const F q = std::max(sp[t] - w, k[i]);
        const F e1 = std::exp(sp[t] - w - q), e2 = std::exp(k[i] - q);
        sa[t + 1] = e1 * sa[t] + e2 * v[i];
        sb[t + 1] = e1 * sb[t] + e2;
        sp[t + 1] = q;
      }
      // da = dL/dα_{t+1}·e^{p_{t+1}}, db = dL/dβ_{t+1}·e^{p_{t+1}} (scaled adjoints)
      F da = dstate_out ? dstate_out[s] : F(0);
      F db = dstate_out ? dstate_out[BD + s] : F(0);
      F dw = 0, du = 0;
      for (i64 t = T - 1; t >= 0; --t) {
        const i64 i = (b * T + t) * D + c;
        const F kt = k[i], vt = v[i], at = sa[t], bt = sb[t], pt = sp[t], p1 = sp[t + 1];
        // α_{t+1} = e^{−w} α_t + e^{k_t} v_t:
        //   dk_t += dα_{t+1} e^{k_t} v_t + dβ_{t+1} e^{k_t};  dv_t += dα_{t+1} e^{k_t}
        //   dw −= e^{−w}(dα_{t+1} α_t + dβ_{t+1} β_t);        dα_t = e^{−w} dα_{t+1} (+ output)
        const F ek = std::exp(kt - p1), ed = std::exp(pt - w - p1);
        dk[i] += (da * vt + db) * ek;
        dv[i] += da * ek;
        dw -= (da * at + db * bt) * ed;
        da *= ed;
        db *= ed;
        // y_t = (α_t + E v_t) / Z, E = e^{u+k_t}, Z = β_t + E:
        //   dv += g E/Z;  dk, du += g (v − y) E/Z;  dα_t += g/Z;  dβ_t −= g y/Z
        const F q = std::max(pt, u + kt);
        const F e1 = std::exp(pt - q), e2 = std::exp(u + kt - q);
        const F den = e1 * bt + e2, yt = (e1 * at + e2 * vt) / den, gz = dy[i] / den;
        dv[i] += gz * e2;
        const F gk = gz * (vt - yt) * e2;
        dk[i] += gk;
        du += gk;
        da += gz * e1;
        db -= gz * yt * e1;
      }
      ddecay[c] += dw * w;  // w = exp(decay)
      dbonus[c] += du;
      if (dstate_in) {
        dstate_in[s] = da;
        dstate_in[BD + s] = db;
      }
    }
}

template <class F>
void token_shift_forward(F* out, const F* x, const F* prev, const F* mu, i64 B, i64 T, i64 D) {
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = (b * T + t) * D + c;
        const F xp = t > 0 ? x[i - D] : (prev ? prev[b * D + c] : F(0));
        // out = μ ⊙ x_t + (1 − μ) ⊙ x_{t−1}
        out[i] = mu[c] * x[i] + (F(1) - mu[c]) * xp;
      }
}

template <class F>
void token_shift_backward(F* dx, F* dprev, F* dmu, const F* dout, const F* x, const F* prev,
                          const F* mu, i64 B, i64 T, i64 D) {
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = (b * T + t) * D + c;
        const F xp = t > 0 ? x[i - D] : (prev ? prev[b * D + c] : F(0));
        if (dmu) dmu[c] += dout[i] * (x[i] - xp);           // dμ += dout ⊙ (x_t − x_{t−1})
        if (dx) {
          dx[i] += mu[c] * dout[i];                          // own token
          if (t > 0) dx[i - D] += (F(1) - mu[c]) * dout[i];  // as x_{t−1} of token t
        }
        if (t == 0 && dprev) dprev[b * D + c] += (F(1) - mu[c]) * dout[i];
      }
}

#define SCANSHARD_RWKV4_INSTANTIATE(F)                                                           \
  template void wkv4_forward<F>(F*, F*, const F*, const F*, const F*, const F*, const F*, i64,     \
                                i64, i64);                                                         \
  template void wkv4_backward<F>(F*, F*, F*, F*, F*, const F*, const F*, const F*, const F*,       \
                                 const F*, const F*, const F*, i64, i64, i64);                     \
  template void token_shift_forward<F>(F*, const F*, const F*, const F*, i64, i64, i64);          \
  template void token_shift_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, i64,  \
                                        i64, i64);
SCANSHARD_RWKV4_INSTANTIATE(float)
SCANSHARD_RWKV4_INSTANTIATE(double)
#undef SCANSHARD_RWKV4_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {
// tokens per backward segment (its per-token states stay in L2); 16 against 8: from DRAM the
// AVX-512 backward 1.9–2.6 vs 2.3–3.1 ns/element (same runs; 32 and 4 no better)
constexpr i64 kSeg = 16;

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

#if SCANSHARD_VEC512
// ─── forward in the lazy-reference form (AVX-512) ──────────────────────────────────────────────
// The max form above spends two exps per token (y and the state each rescale to a new maximum).
// Here the state is kept as α = a·e^q, β = b·e^q against a reference q that simply decays with
// the state, q_{t+1} = q_t − w, so the update needs no rescaling:
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
constexpr i64 kPf = 512;  // 2 KB: 0.60–0.65 of triad vs 0.51–0.56 at 4 KB and 0.38 with none (same runs)
constexpr float kLazyGap = 20.0f;  // natural units: e^20 ≈ 2^29
constexpr float kLazyMaxUW = 52.0f;  // E ≤ e^{20 + 52} ≈ 2e31: E·v stays finite for |v| < 1e7

// One token for 16 channels, the state in registers (a, b, q0, n, p; w, cu = e^{u−w} constants).
struct Lazy16 { v512::V a, b, q0, n, p, w, cu; };
template <bool Tail, bool P>
inline void wkv4_lazy_step(Lazy16& s, float* y, const float* kt, const float* vt, v512::M m) {
  using namespace v512;
  const V kk = Tail ? _mm512_maskz_loadu_ps(m, kt) : _mm512_loadu_ps(kt);
  const V vv = Tail ? _mm512_maskz_loadu_ps(m, vt) : _mm512_loadu_ps(vt);
  const V n1 = _mm512_add_ps(s.n, set1(1.0f));
  if constexpr (P) s.p = max(_mm512_sub_ps(s.p, s.w), kk);  // p_{t+1} = max(p_t − w, k_t), for state_out only
  const V x = _mm512_fmadd_ps(n1, s.w, _mm512_sub_ps(kk, s.q0));  // k − q_{t+1},  q_{t+1} = q0 − (n+1) w
  // re-reference where x > kLazyGap: q_{t+1} := k_t (q0 = k + w, n = 1), so e = 1 and the state
  // ·= sc = e^{−x}. Branch-free with one exp of ∓x: a branch on x (rare, so mispredicted when
  // taken) depends on the k just loaded, and a misprediction discards the loads in flight behind
  // it (from DRAM: ~10 % more of triad branch-free, same runs; in L2 no difference).
  const M big = _mm512_cmp_ps_mask(x, set1(kLazyGap), _CMP_GT_OQ);
  const V ex = exp2(_mm512_mul_ps(_mm512_mask_sub_ps(x, big, _mm512_setzero_ps(), x), set1(kLog2e)));
  const V e = _mm512_mask_mov_ps(ex, big, set1(1.0f));
  const V sc = _mm512_mask_mov_ps(set1(1.0f), big, ex);
  s.a = _mm512_mul_ps(s.a, sc);
  s.b = _mm512_mul_ps(s.b, sc);
  s.q0 = _mm512_mask_add_ps(s.q0, big, kk, s.w);
  s.n = _mm512_mask_mov_ps(n1, big, set1(1.0f));
  const V E = _mm512_mul_ps(e, s.cu);
  const V yv = _mm512_div_ps(_mm512_fmadd_ps(E, vv, s.a), _mm512_add_ps(s.b, E));
  if constexpr (Tail) _mm512_mask_storeu_ps(y, m, yv); else _mm512_storeu_ps(y, yv);
  s.a = _mm512_fmadd_ps(e, vv, s.a);
  s.b = _mm512_add_ps(s.b, e);
}

// The per-channel state of the lazy forward, interleaved by 16-channel group: group g holds
// a, b, q0, n, p, w, cu as 7 consecutive 16-float vectors (448 B). As 7 separate rows of CB
// floats (8 KB apart at CB = 2048) they and the k, v, y rows all fell in the same L1 sets:
// 10 lines per step for 8 ways.
constexpr i64 kLazyRows = 7;
inline float& lazy_at(float* buf, int r, i64 c) { return buf[((c / 16) * kLazyRows + r) * 16 + c % 16]; }

// One token of the 16 channels whose state block is st (see lazy_at). P: keep the running
// maximum p (only state_out needs it: one load, one store and two operations fewer without).
template <bool Tail, bool P>
inline void wkv4_lazy_col(float* st, float* y, const float* k, const float* v, v512::M m) {
  using namespace v512;
  auto ld = [m](const float* s) { if constexpr (Tail) return _mm512_maskz_loadu_ps(m, s); else return _mm512_loadu_ps(s); };
  auto stv = [m](float* d, V x) { if constexpr (Tail) _mm512_mask_storeu_ps(d, m, x); else _mm512_storeu_ps(d, x); };
  float *a = st, *bb = a + 16, *q = bb + 16, *n = q + 16, *p = n + 16, *w = p + 16, *cu = w + 16;
  // software prefetch kPf floats ahead along the rows: the hardware prefetchers restart at every
  // 4 KB page and the compute between loads keeps few misses in flight
  _mm_prefetch(reinterpret_cast<const char*>(k + kPf), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(v + kPf), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(y + kPf), _MM_HINT_ET0);
  Lazy16 s{ld(a), ld(bb), ld(q), ld(n), P ? ld(p) : _mm512_setzero_ps(), ld(w), ld(cu)};
  wkv4_lazy_step<Tail, P>(s, y, k, v, m);
  stv(a, s.a);
  stv(bb, s.b);
  stv(q, s.q0);
  stv(n, s.n);
  if constexpr (P) stv(p, s.p);
}

template <bool P>
inline void wkv4_lazy_row(float* sb, float* y, const float* k, const float* v, i64 nc) {
  i64 j = 0;
  for (; j + 16 <= nc; j += 16) wkv4_lazy_col<false, P>(sb + j * kLazyRows, y + j, k + j, v + j, 0);
  if (j < nc) wkv4_lazy_col<true, P>(sb + j * kLazyRows, y + j, k + j, v + j, v512::lanes(nc - j));
}

// Whether every channel qualifies for the lazy form (|u − w| ≤ kLazyMaxUW).
bool lazy_ok(const float* decay, const float* bonus, i64 D) {
  for (i64 c = 0; c < D; ++c)
    if (!(std::fabs(double(bonus[c]) - std::exp(double(decay[c]))) <= kLazyMaxUW)) return false;
  return true;
}

void wkv4_forward_lazy(float* y, float* state_out, const float* k, const float* v, const float* decay,
                       const float* bonus, const float* state_in, i64 B, i64 T, i64 D) {
  const i64 BD = B * D, CB = channel_block(B, D), NB = (D + CB - 1) / CB;
#pragma omp parallel
  {
    std::vector<float> buf(static_cast<size_t>(kLazyRows * ((CB + 15) / 16) * 16));
    float* sb = buf.data();
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 cb = 0; cb < NB; ++cb) {
        const i64 c0 = cb * CB, nc = std::min(CB, D - c0), s0 = b * D + c0;
        for (i64 c = 0; c < nc; ++c) {
          lazy_at(sb, 0, c) = state_in ? state_in[s0 + c] : 0.0f;       // a
          lazy_at(sb, 1, c) = state_in ? state_in[BD + s0 + c] : 0.0f;  // b
          const float p = state_in ? state_in[2 * BD + s0 + c] : kWkv4NoState;
          lazy_at(sb, 2, c) = p;     // q0
          lazy_at(sb, 3, c) = 0.0f;  // n
          lazy_at(sb, 4, c) = p;     // p
          const double wd = std::exp(double(decay[c0 + c]));
          lazy_at(sb, 5, c) = float(wd);                                  // w
          lazy_at(sb, 6, c) = float(std::exp(double(bonus[c0 + c]) - wd));  // e^{u − w}
        }
        for (i64 t = 0; t < T; ++t) {
          const i64 o = (b * T + t) * D + c0;
          if (state_out) wkv4_lazy_row<true>(sb, y + o, k + o, v + o, nc);
          else wkv4_lazy_row<false>(sb, y + o, k + o, v + o, nc);
        }
        if (state_out)
          for (i64 c = 0; c < nc; ++c) {
            // back to the max form: a, b ·= e^{q − p} (≤ 1), q = q0 − n w
            const float sc = std::exp(lazy_at(sb, 2, c) - lazy_at(sb, 3, c) * lazy_at(sb, 5, c) - lazy_at(sb, 4, c));
            state_out[s0 + c] = lazy_at(sb, 0, c) * sc;
            state_out[BD + s0 + c] = lazy_at(sb, 1, c) * sc;
            state_out[2 * BD + s0 + c] = lazy_at(sb, 4, c);
          }
      }
  }
}
#endif

#if SCANSHARD_VEC512
// ─── backward rows (AVX-512, max form) ───────────────────────────────────────────────────────
// scaled_pair in 16 lanes: for d = x − y, e = e^{−|d|} and (e^{x−q}, e^{y−q}) = d ≥ 0 ? (1, e) : (e, 1).
inline void scaled_pair16(v512::V x, v512::V y, v512::V& ex, v512::V& ey) {
  using namespace v512;
  const V d = _mm512_sub_ps(x, y);
  const V nabs = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(d), _mm512_set1_epi32(int(0x80000000u))));
  const V e = exp2(_mm512_mul_ps(nabs, set1(kLog2e)));
  const M ge = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GE_OQ);
  ex = _mm512_mask_blend_ps(ge, e, set1(1.0f));
  ey = _mm512_mask_blend_ps(ge, set1(1.0f), e);
}

#endif

#if SCANSHARD_VEC512
// ─── backward with interleaved per-channel data (AVX-512) ────────────────────────────────────
// Same passes as wkv4_backward below, but every per-channel array is interleaved by 16-channel
// group, like the lazy forward: states (a, b, p) as 3 consecutive vectors per group ([3·CBr]
// per token / checkpoint), and (da, db, dw, du, w, u) as 6. As rows CB floats apart, a step
// touched ~14 lines in the same L1 set (states, adjoints, k, v, dy, dk, dv rows).
constexpr i64 kStRows = 3, kAdjRows = 6;
// At most 1024 channels (4 KB of each row, one page) per work item: the adjoint's per-group
// data (6 vectors, 48 KB at 2048 channels) and a segment's states no longer overflow L1 with
// the row streams; from DRAM 14–30 % faster than 2048 (same runs), 768 and 512 slower again.
constexpr i64 kBwdMaxCB = 1024;

// State step (max form) for nc channels: nxt from cur (interleaved states), w from pc.
inline void wkv4_state_il(float* nxt, const float* cur, const float* kt, const float* vt, const float* pc, i64 nc,
                          i64 pf) {
  using namespace v512;
  for (i64 c = 0; c < nc; c += 16) {
    const M m = lanes(nc - c);
    const float* sc = cur + c * kStRows;
    float* sn = nxt + c * kStRows;
    _mm_prefetch(reinterpret_cast<const char*>(kt + c + pf), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(vt + c + pf), _MM_HINT_T1);
    const V kk = _mm512_maskz_loadu_ps(m, kt + c), vv = _mm512_maskz_loadu_ps(m, vt + c);
    const V pw = _mm512_sub_ps(_mm512_loadu_ps(sc + 32), _mm512_loadu_ps(pc + c * kAdjRows + 64));
    V e1, e2;
    scaled_pair16(pw, kk, e1, e2);
    _mm512_storeu_ps(sn, _mm512_fmadd_ps(e1, _mm512_loadu_ps(sc), _mm512_mul_ps(e2, vv)));
    _mm512_storeu_ps(sn + 16, _mm512_fmadd_ps(e1, _mm512_loadu_ps(sc + 16), e2));
    _mm512_storeu_ps(sn + 32, max(pw, kk));
  }
}

// One token of the adjoint recurrence for nc channels (see the scalar loop of wkv4_backward).
inline void wkv4_adjoint_il(float* dkt, float* dvt, float* pc, const float* cur, const float* kt, const float* vt,
                            const float* gt, i64 nc, i64 pf) {
  using namespace v512;
  for (i64 c = 0; c < nc; c += 16) {
    const M m = lanes(nc - c);
    const float* sc = cur + c * kStRows;
    float* q = pc + c * kAdjRows;  // da, db, dw, du, w, u
    _mm_prefetch(reinterpret_cast<const char*>(gt + c + pf), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(dkt + c + pf), _MM_HINT_ET1);
    _mm_prefetch(reinterpret_cast<const char*>(dvt + c + pf), _MM_HINT_ET1);
    const V kk = _mm512_maskz_loadu_ps(m, kt + c), vv = _mm512_maskz_loadu_ps(m, vt + c);
    const V A0 = _mm512_loadu_ps(sc), B0 = _mm512_loadu_ps(sc + 16), P0 = _mm512_loadu_ps(sc + 32);
    const V DA = _mm512_loadu_ps(q), DB = _mm512_loadu_ps(q + 16);
    V ed, ek;  // e^{p_t − w − p_{t+1}}, e^{k_t − p_{t+1}}
    scaled_pair16(_mm512_sub_ps(P0, _mm512_loadu_ps(q + 64)), kk, ed, ek);
    V gk = _mm512_mul_ps(_mm512_fmadd_ps(DA, vv, DB), ek), gv = _mm512_mul_ps(DA, ek);
    _mm512_storeu_ps(q + 32, _mm512_fnmadd_ps(_mm512_fmadd_ps(DA, A0, _mm512_mul_ps(DB, B0)), ed, _mm512_loadu_ps(q + 32)));
    V dan = _mm512_mul_ps(DA, ed), dbn = _mm512_mul_ps(DB, ed);
    V e1, e2;
    scaled_pair16(P0, _mm512_add_ps(_mm512_loadu_ps(q + 80), kk), e1, e2);
    const V rden = _mm512_div_ps(set1(1.0f), _mm512_fmadd_ps(e1, B0, e2));
    const V yt = _mm512_mul_ps(_mm512_fmadd_ps(e1, A0, _mm512_mul_ps(e2, vv)), rden);
    const V gz = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, gt + c), rden);
    const V gze2 = _mm512_mul_ps(gz, e2);
    gv = _mm512_add_ps(gv, gze2);
    const V gku = _mm512_mul_ps(gze2, _mm512_sub_ps(vv, yt));
    gk = _mm512_add_ps(gk, gku);
    _mm512_storeu_ps(q + 48, _mm512_add_ps(_mm512_loadu_ps(q + 48), gku));
    const V gze1 = _mm512_mul_ps(gz, e1);
    dan = _mm512_add_ps(dan, gze1);
    dbn = _mm512_fnmadd_ps(gze1, yt, dbn);
    _mm512_mask_storeu_ps(dkt + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dkt + c), gk));
    _mm512_mask_storeu_ps(dvt + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dvt + c), gv));
    _mm512_storeu_ps(q, dan);
    _mm512_storeu_ps(q + 16, dbn);
  }
}

void wkv4_backward_il(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in, const float* dy,
                      const float* dstate_out, const float* k, const float* v, const float* decay, const float* bonus,
                      const float* state_in, i64 B, i64 T, i64 D) {
  const i64 BD = B * D, CB = std::min(kBwdMaxCB, channel_block(B, D)), NB = (D + CB - 1) / CB, CBr = (CB + 15) / 16 * 16;
  const i64 NS = (T + kSeg - 1) / kSeg, SB = kStRows * CBr;  // SB: floats per interleaved state
  std::vector<float> pdw(static_cast<size_t>(BD), 0.0f), pdu(static_cast<size_t>(BD), 0.0f);
  auto at = [](float* base, i64 rows, int r, i64 c) -> float& { return base[((c / 16) * rows + r) * 16 + c % 16]; };
#pragma omp parallel
  {
    // per-thread scratch kept across calls (a fresh zero-filled vector per call cost page
    // faults + a memset: 1.3 ms per call, 19.7 ns/element at T = 64, D = 1024)
    thread_local std::vector<float> ck, seg, buf;
    ck.resize(std::max(ck.size(), static_cast<size_t>((NS + 1) * SB)));
    seg.resize(std::max(seg.size(), static_cast<size_t>((kSeg + 1) * SB)));
    buf.resize(std::max(buf.size(), static_cast<size_t>(kAdjRows * CBr)));
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 cb = 0; cb < NB; ++cb) {
        const i64 c0 = cb * CB, nc = std::min(CB, D - c0), s0 = b * D + c0;
        float *pc = buf.data(), *c0s = ck.data();
        for (i64 c = 0; c < CBr; ++c) {  // padding lanes too: finite values for the full vectors
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
        // pass 1: states at the segment starts
        for (i64 s = 0; s + 1 < NS; ++s) {
          float* cur = &ck[s * SB];
          float* nxt = &ck[(s + 1) * SB];
          std::copy_n(cur, SB, nxt);
          for (i64 t = s * kSeg; t < (s + 1) * kSeg; ++t) {
            const i64 o = (b * T + t) * D + c0;
            wkv4_state_il(nxt, nxt, k + o, v + o, pc, nc, D);
          }
        }
        // pass 2: segments in reverse; the segment's states recomputed, then the adjoint
        for (i64 s = NS - 1; s >= 0; --s) {
          const i64 t0 = s * kSeg, t1 = std::min(T, t0 + kSeg);
          std::copy_n(&ck[s * SB], SB, seg.data());
          for (i64 t = t0; t < t1; ++t) {
            const i64 o = (b * T + t) * D + c0;
            float* cur = &seg[(t - t0) * SB];
            wkv4_state_il(cur + SB, cur, k + o, v + o, pc, nc, -kSeg * D);  // prefetch: next segment's row
          }
          for (i64 t = t1 - 1; t >= t0; --t) {
            const i64 o = (b * T + t) * D + c0;
            wkv4_adjoint_il(dk + o, dv + o, pc, &seg[(t - t0) * SB], k + o, v + o, dy + o, nc, -D);
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
  }
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      ddecay[c] += pdw[b * D + c];
      dbonus[c] += pdu[b * D + c];
    }
}
#endif
}  // namespace

void wkv4_forward(float* y, float* state_out, const float* k, const float* v, const float* decay,
                  const float* bonus, const float* state_in, i64 B, i64 T, i64 D) {
#if SCANSHARD_VEC512
  if (lazy_ok(decay, bonus, D)) {
    wkv4_forward_lazy(y, state_out, k, v, decay, bonus, state_in, B, T, D);
    return;
  }
#endif
  const i64 BD = B * D, CB = channel_block(B, D), NB = (D + CB - 1) / CB;
#pragma omp parallel
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
                   i64 D) {
#if SCANSHARD_VEC512
  wkv4_backward_il(dk, dv, ddecay, dbonus, dstate_in, dy, dstate_out, k, v, decay, bonus, state_in, B, T, D);
#else
  const i64 BD = B * D, CB = channel_block(B, D), NB = (D + CB - 1) / CB;
  const i64 NS = (T + kSeg - 1) / kSeg;
  // per-(b, channel) partial dw, du; reduced over b afterwards (deterministic order)
  std::vector<float> pdw(static_cast<size_t>(BD), 0.0f), pdu(static_cast<size_t>(BD), 0.0f);
#pragma omp parallel
  {
    // checkpoints: the state at the start of every segment; seg: the states inside one segment
    // per-thread scratch kept across calls (ck is 3·(T/kSeg + 1)·CB floats, 3 MB at T = 1024,
    // CB = 2048): a fresh zero-filled vector per call cost page faults + a memset every call
    thread_local std::vector<float> ck, seg, buf;
    ck.resize(std::max(ck.size(), static_cast<size_t>((NS + 1) * 3 * CB)));
    seg.resize(std::max(seg.size(), static_cast<size_t>((kSeg + 1) * 3 * CB)));
    buf.resize(std::max(buf.size(), static_cast<size_t>(6 * CB)));
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 cb = 0; cb < NB; ++cb) {
        const i64 c0 = cb * CB, nc = std::min(CB, D - c0), s0 = b * D + c0;
        float *w = buf.data(), *u = w + CB, *da = u + CB, *db = da + CB, *dw = db + CB, *du = dw + CB;
        float* a = ck.data();
        load_state(a, a + CB, a + 2 * CB, w, u, state_in, decay, bonus, BD, s0, c0, nc);
        for (i64 c = 0; c < nc; ++c) {
          da[c] = dstate_out ? dstate_out[s0 + c] : 0.0f;
          db[c] = dstate_out ? dstate_out[BD + s0 + c] : 0.0f;
          dw[c] = 0.0f;
          du[c] = 0.0f;
        }
        // pass 1: states at the segment starts
        for (i64 s = 0; s + 1 < NS; ++s) {
          float* cur = &ck[s * 3 * CB];
          float* nxt = &ck[(s + 1) * 3 * CB];
          std::copy_n(cur, 3 * CB, nxt);
          for (i64 t = s * kSeg; t < (s + 1) * kSeg; ++t) {
            const i64 o = (b * T + t) * D + c0;
            wkv4_step(nullptr, nxt, nxt + CB, nxt + 2 * CB, nxt, nxt + CB, nxt + 2 * CB, k + o, v + o, w, u, nc);
          }
        }
        // pass 2: segments in reverse; states of the segment recomputed, then the adjoint
        // recurrence (scaled adjoints da = dL/dα·e^p, db = dL/dβ·e^p; see ref::wkv4_backward)
        for (i64 s = NS - 1; s >= 0; --s) {
          const i64 t0 = s * kSeg, t1 = std::min(T, t0 + kSeg);
          std::copy_n(&ck[s * 3 * CB], 3 * CB, seg.data());
          for (i64 t = t0; t < t1; ++t) {
            const i64 o = (b * T + t) * D + c0;
            float* cur = &seg[(t - t0) * 3 * CB];
            float* nxt = cur + 3 * CB;
            wkv4_step(nullptr, nxt, nxt + CB, nxt + 2 * CB, cur, cur + CB, cur + 2 * CB, k + o, v + o, w, u, nc);
          }
          for (i64 t = t1 - 1; t >= t0; --t) {
            const i64 o = (b * T + t) * D + c0;
            const float *kt = k + o, *vt = v + o, *gt = dy + o;
            float *dkt = dk + o, *dvt = dv + o;
            const float* cur = &seg[(t - t0) * 3 * CB];
            const float *a0 = cur, *b0 = cur + CB, *p0 = cur + 2 * CB;
#pragma omp simd
            for (i64 c = 0; c < nc; ++c) {
              float ed, ek;  // e^{p_t − w − p_{t+1}}, e^{k_t − p_{t+1}}
              scaled_pair(p0[c] - w[c], kt[c], ed, ek);
              float gk = (da[c] * vt[c] + db[c]) * ek, gv = da[c] * ek;
              dw[c] -= (da[c] * a0[c] + db[c] * b0[c]) * ed;
              float dan = da[c] * ed, dbn = db[c] * ed;
              float e1, e2;
              scaled_pair(p0[c], u[c] + kt[c], e1, e2);
              const float den = e1 * b0[c] + e2;
              const float yt = (e1 * a0[c] + e2 * vt[c]) / den, gz = gt[c] / den;
              gv += gz * e2;
              const float gku = gz * (vt[c] - yt) * e2;
              gk += gku;
              du[c] += gku;
              dan += gz * e1;
              dbn -= gz * yt * e1;
              dkt[c] += gk;
              dvt[c] += gv;
              da[c] = dan;
              db[c] = dbn;
            }
          }
        }
        for (i64 c = 0; c < nc; ++c) {
          pdw[s0 + c] = dw[c] * w[c];
          pdu[s0 + c] = du[c];
          if (dstate_in) {
            dstate_in[s0 + c] = da[c];
            dstate_in[BD + s0 + c] = db[c];
          }
        }
      }
  }
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      ddecay[c] += pdw[b * D + c];
      dbonus[c] += pdu[b * D + c];
    }
#endif
}

void token_shift_forward(float* out, const float* x, const float* prev, const float* mu, i64 B,
                         i64 T, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 bt = 0; bt < B * T; ++bt) {
    const i64 b = bt / T, t = bt % T;
    const float* xt = x + bt * D;
    const float* xp = t > 0 ? xt - D : (prev ? prev + b * D : nullptr);
    float* ot = out + bt * D;
    if (xp) {
#pragma omp simd
      for (i64 c = 0; c < D; ++c) ot[c] = mu[c] * xt[c] + (1.0f - mu[c]) * xp[c];
    } else {
#pragma omp simd
      for (i64 c = 0; c < D; ++c) ot[c] = mu[c] * xt[c];
    }
  }
}

void token_shift_backward(float* dx, float* dprev, float* dmu, const float* dout, const float* x,
                          const float* prev, const float* mu, i64 B, i64 T, i64 D) {
  if (dx || dprev) {
#pragma omp parallel for schedule(static)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      const float* gt = dout + bt * D;
      if (dx) {
        float* dxt = dx + bt * D;
        const float* gn = t + 1 < T ? gt + D : nullptr;  // token t is x_{t−1} of token t+1
#pragma omp simd
        for (i64 c = 0; c < D; ++c)
          dxt[c] += mu[c] * gt[c] + (gn ? (1.0f - mu[c]) * gn[c] : 0.0f);
      }
      if (t == 0 && dprev)
        for (i64 c = 0; c < D; ++c) dprev[b * D + c] += (1.0f - mu[c]) * gt[c];
    }
  }
  if (dmu) {
#pragma omp parallel for schedule(static)
    for (i64 c0 = 0; c0 < D; c0 += 64) {
      const i64 c1 = std::min(D, c0 + 64);
      for (i64 bt = 0; bt < B * T; ++bt) {
        const i64 b = bt / T, t = bt % T;
        const float* xt = x + bt * D;
        const float* xp = t > 0 ? xt - D : (prev ? prev + b * D : nullptr);
        const float* gt = dout + bt * D;
        for (i64 c = c0; c < c1; ++c) dmu[c] += gt[c] * (xt[c] - (xp ? xp[c] : 0.0f));
      }
    }
  }
}

}  // namespace fast

void wkv4_chunk_forward(float* y, float* state_out, float* log_decay, const float* k,
                        const float* v, const float* decay, const float* bonus,
                        const float* state_in, i64 B, i64 T, i64 D) {
  if (log_decay)
    for (i64 c = 0; c < D; ++c) log_decay[c] = -float(T) * std::exp(decay[c]);
  fast::wkv4_forward(y, state_out, k, v, decay, bonus, state_in, B, T, D);
}

void wkv4_chunk_backward(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in,
                         const float* dy, const float* dstate_out, const float* k, const float* v,
                         const float* decay, const float* bonus, const float* state_in, i64 B,
                         i64 T, i64 D) {
  fast::wkv4_backward(dk, dv, ddecay, dbonus, dstate_in, dy, dstate_out, k, v, decay, bonus,
                      state_in, B, T, D);
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
