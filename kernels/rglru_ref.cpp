// kernels/rglru_ref.cpp — the sequential RG-LRU references (rglru.hpp ref::), float and double.
// Their own translation unit: beside per-target (Highway foreach_target) code GCC's code for a
// reference can change with the kernels' code and move every same-run speedup over it
// (rwkv6_ref.cpp, docs/kernels-wkv-2026-12-07.md 5.1).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/linear.hpp"
#include "kernels/rglru.hpp"

namespace scanshard::kernels {

namespace ref {

template <class F>
void rglru_forward(F* y, F* h_out, F* decay, F* ga, F* gx, const F* x, const F* h_in,
                   const std::uint8_t* reset, const F* wa, const F* ba, const F* wx, const F* bx,
                   const F* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  // ga = BDa(x), gx = BDx(x)
  blockdiag_forward(ga, x, wa, ba, B * T, R, Hb);
  blockdiag_forward(gx, x, wx, bx, B * T, R, Hb);
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < R; ++c) {
      F h = h_in ? h_in[b * R + c] : F(0);
      F prod = F(1);
      for (i64 t = 0; t < T; ++t) {
        const i64 o = (b * T + t) * R + c;
        const bool rs = reset && reset[b * T + t];
        const F r = sigmoid_ref(ga[o]), i = sigmoid_ref(gx[o]);
        const F log_a = F(-kRgLruC) * r * softplus_ref(lambda[c]);   // log a = −8 r softplus(Λ)
        const F a = std::exp(log_a);
        const F abar = rs ? F(0) : a;                                  // reset: drop h_{t−1}
        const F m = rs ? F(1) : std::sqrt(F(1) - a * a);               // reset: multiplier 1
        h = abar * h + m * (i * x[o]);                                 // h_t = ā h_{t−1} + m (i x)
        prod *= abar;
        y[o] = h;
      }
      if (h_out) h_out[b * R + c] = h;
      if (decay) decay[b * R + c] = prod;
    }
}

template <class F>
void rglru_backward(F* dx, F* dh_in, F* dwa, F* dba, F* dwx, F* dbx, F* dlambda, F* work,
                    const F* dy, const F* dh_out, const F* y, const F* ga, const F* gx, const F* x,
                    const F* h_in, const std::uint8_t* reset, const F* wa, const F* wx,
                    const F* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  F* dga = work;
  F* dgx = work + B * T * R;
  const F zmin = F(1.0 / (4.0 * kSqrtGradCap * kSqrtGradCap));
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < R; ++c) {
      const F sp = softplus_ref(lambda[c]), sig_l = sigmoid_ref(lambda[c]);
      F carry = dh_out ? dh_out[b * R + c] : F(0);  // ā_{t+1} dh_{t+1} (dh_out at t = T−1)
      for (i64 t = T - 1; t >= 0; --t) {
        const i64 o = (b * T + t) * R + c;
        const bool rs = reset && reset[b * T + t];
        const F r = sigmoid_ref(ga[o]), i = sigmoid_ref(gx[o]);
        const F a = std::exp(F(-kRgLruC) * r * sp);
        const F z = F(1) - a * a;
        const F m = rs ? F(1) : std::sqrt(z);
        const F h_prev = t > 0 ? y[o - R] : (h_in ? h_in[b * R + c] : F(0));
        // dh_t = dy_t + ā_{t+1} dh_{t+1}
        const F dh = dy[o] + carry;
        // da_t = dh_t h_{t−1} + dh_t (i x) dm/da,  dm/da = −a / √max(z, zmin)   (0 at a reset)
        const F da = rs ? F(0) : dh * h_prev + dh * (i * x[o]) * (-a / std::sqrt(std::max(z, zmin)));
        const F dlog_a = da * a;
        // log a = −8 r sp:  dr = −8 sp dlog_a,  dΛ += −8 r σ(Λ) dlog_a
        const F dr = F(-kRgLruC) * sp * dlog_a;
        if (dlambda) dlambda[c] += F(-kRgLruC) * r * sig_l * dlog_a;
        dga[o] = dr * r * (F(1) - r);
        // gated input g = i x:  di = dh m x,  dx += dh m i
        dgx[o] = dh * m * x[o] * i * (F(1) - i);
        dx[o] += dh * m * i;
        carry = (rs ? F(0) : a) * dh;
      }
      if (dh_in) dh_in[b * R + c] += carry;  // dh_{−1} = ā_0 dh_0
    }
  blockdiag_backward(dx, dwa, dba, dga, x, wa, B * T, R, Hb);
  blockdiag_backward(dx, dwx, dbx, dgx, x, wx, B * T, R, Hb);
}

#define SCANSHARD_INSTANTIATE(F)                                                                   \
  template void rglru_forward<F>(F*, F*, F*, F*, F*, const F*, const F*, const std::uint8_t*,      \
                                 const F*, const F*, const F*, const F*, const F*, i64, i64, i64,  \
                                 i64);                                                             \
  template void rglru_backward<F>(F*, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*,    \
                                  const F*, const F*, const F*, const F*, const std::uint8_t*,     \
                                  const F*, const F*, const F*, i64, i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

}  // namespace scanshard::kernels
