// kernels/rwkv4_ref.cpp — the sequential WKV-4 and token-shift references (rwkv4.hpp ref::): scalar
// loops per (b, c) over t with std::exp, float and double. Their own translation unit: beside
// per-target (Highway foreach_target) code GCC's code for a reference can change with the kernels'
// code and move every same-run speedup over it (rwkv6_ref.cpp, docs/kernels-wkv-2026-12-07.md 5.1).
#include <algorithm>
#include <cmath>

#include "kernels/rwkv4.hpp"

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

}  // namespace scanshard::kernels
