// kernels/rwkv6_ref.cpp — the sequential WKV-6 references (rwkv6.hpp ref::): token by token per
// (b, h), the states of every token kept for the backward. Their own translation unit: in
// rwkv6.cpp, beside the per-target chunk kernels, GCC's code for them changed with the kernels'
// code (the float backward took 2.2x as long after an unrelated change to the runtime-head-size
// rows, bench_rwkv wkv6, 2026-12-07), which moved every same-run speedup over them.
#include <cmath>
#include <vector>

#include "kernels/rwkv6.hpp"

namespace scanshard::kernels {

namespace ref {

template <class F>
void wkv6_forward(F* y, F* state_out, const F* r, const F* k, const F* v, const F* logw,
                  const F* u, const F* state_in, i64 B, i64 T, i64 H, i64 N) {
  const i64 D = H * N, NN = N * N;
  std::vector<F> S(NN);
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 so = (b * H + h) * NN;
      for (i64 e = 0; e < NN; ++e) S[e] = state_in ? state_in[so + e] : F(0);
      const F* uh = u + h * N;
      for (i64 t = 0; t < T; ++t) {
        const i64 o = (b * T + t) * D + h * N;
        const F *rt = r + o, *kt = k + o, *vt = v + o, *lw = logw + o;
        // y_t[j] = Σ_i r_t[i] (S[i][j] + u[i] k_t[i] v_t[j])
        for (i64 j = 0; j < N; ++j) {
          F acc = 0;
          for (i64 i = 0; i < N; ++i) acc += rt[i] * (S[i * N + j] + uh[i] * kt[i] * vt[j]);
          y[o + j] = acc;
        }
        // S[i][j] ← w_t[i] S[i][j] + k_t[i] v_t[j],  w = e^{logw}
        for (i64 i = 0; i < N; ++i) {
          const F w = std::exp(lw[i]);
          for (i64 j = 0; j < N; ++j) S[i * N + j] = w * S[i * N + j] + kt[i] * vt[j];
        }
      }
      if (state_out)
        for (i64 e = 0; e < NN; ++e) state_out[so + e] = S[e];
    }
}

template <class F>
void wkv6_backward(F* dr, F* dk, F* dv, F* dlogw, F* du, F* dstate_in, const F* dy,
                   const F* dstate_out, const F* r, const F* k, const F* v, const F* logw,
                   const F* u, const F* state_in, i64 B, i64 T, i64 H, i64 N) {
  const i64 D = H * N, NN = N * N;
  std::vector<F> S(size_t((T + 1) * NN)), dS(NN);
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 so = (b * H + h) * NN;
      const F* uh = u + h * N;
      // forward states S_t before token t
      for (i64 e = 0; e < NN; ++e) S[e] = state_in ? state_in[so + e] : F(0);
      for (i64 t = 0; t < T; ++t) {
        const i64 o = (b * T + t) * D + h * N;
        for (i64 i = 0; i < N; ++i)
          for (i64 j = 0; j < N; ++j)
            S[(t + 1) * NN + i * N + j] =
                std::exp(logw[o + i]) * S[t * NN + i * N + j] + k[o + i] * v[o + j];
      }
      for (i64 e = 0; e < NN; ++e) dS[e] = dstate_out ? dstate_out[so + e] : F(0);
      for (i64 t = T - 1; t >= 0; --t) {
        const i64 o = (b * T + t) * D + h * N;
        const F *rt = r + o, *kt = k + o, *vt = v + o, *gt = dy + o;
        const F* St = &S[t * NN];
        // S_{t+1} = diag(w) S_t + kᵀ v:  dk_i += Σ_j dS[i][j] v_j;  dv_j += Σ_i dS[i][j] k_i;
        //   dlogw_i += w_i Σ_j dS[i][j] S_t[i][j]
        for (i64 i = 0; i < N; ++i) {
          const F w = std::exp(logw[o + i]);
          F gk = 0, gw = 0;
          for (i64 j = 0; j < N; ++j) {
            gk += dS[i * N + j] * vt[j];
            gw += dS[i * N + j] * St[i * N + j];
            dv[o + j] += dS[i * N + j] * kt[i];
          }
          dk[o + i] += gk;
          dlogw[o + i] += w * gw;
        }
        // y_t = r (S_t + diag(u) kᵀ v):  dr_i += Σ_j g_j (S_t[i][j] + u_i k_i v_j);
        //   dk_i += r_i u_i (g·v);  dv_j += g_j Σ_i r_i u_i k_i;  du_i += r_i k_i (g·v)
        F gv = 0, ruk = 0;
        for (i64 j = 0; j < N; ++j) gv += gt[j] * vt[j];
        for (i64 i = 0; i < N; ++i) ruk += rt[i] * uh[i] * kt[i];
        for (i64 i = 0; i < N; ++i) {
          F acc = 0;
          for (i64 j = 0; j < N; ++j) acc += gt[j] * (St[i * N + j] + uh[i] * kt[i] * vt[j]);
          dr[o + i] += acc;
          dk[o + i] += rt[i] * uh[i] * gv;
          du[h * N + i] += rt[i] * kt[i] * gv;
        }
        for (i64 j = 0; j < N; ++j) dv[o + j] += gt[j] * ruk;
        // dS_t = diag(w) dS_{t+1} + r_tᵀ g_t
        for (i64 i = 0; i < N; ++i) {
          const F w = std::exp(logw[o + i]);
          for (i64 j = 0; j < N; ++j) dS[i * N + j] = w * dS[i * N + j] + rt[i] * gt[j];
        }
      }
      if (dstate_in)
        for (i64 e = 0; e < NN; ++e) dstate_in[so + e] = dS[e];
    }
}

#define SCANSHARD_RWKV6_INSTANTIATE(F)                                                           \
  template void wkv6_forward<F>(F*, F*, const F*, const F*, const F*, const F*, const F*,          \
                                const F*, i64, i64, i64, i64);                                     \
  template void wkv6_backward<F>(F*, F*, F*, F*, F*, F*, const F*, const F*, const F*, const F*,   \
                                 const F*, const F*, const F*, const F*, i64, i64, i64, i64);
SCANSHARD_RWKV6_INSTANTIATE(float)
SCANSHARD_RWKV6_INSTANTIATE(double)
#undef SCANSHARD_RWKV6_INSTANTIATE

}  // namespace ref

}  // namespace scanshard::kernels
