// kernels/rwkv_ops.cpp — see rwkv_ops.hpp. Reference: one loop per equation, std:: math. Fast:
// OpenMP over elements or rows, each row one SIMD-dispatched call (vector_rows.hpp); reductions
// over rows into per-channel gradients are parallel over channel blocks.
#include "kernels/rwkv_ops.hpp"

#include "kernels/vector_rows.hpp"

#include <algorithm>

namespace scanshard::kernels {

namespace ref {

template <class F> void sigmoid_mul_forward(F* out, const F* a, const F* b, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = sigmoid_ref(a[i]) * b[i];  // σ(a) ⊙ b
}
template <class F> void sigmoid_mul_backward(F* da, F* db, const F* dout, const F* a, const F* b, i64 n) {
  for (i64 i = 0; i < n; ++i) {
    const F s = sigmoid_ref(a[i]);
    if (da) da[i] += dout[i] * b[i] * s * (F(1) - s);  // σ' = σ(1 − σ)
    if (db) db[i] += dout[i] * s;
  }
}
template <class F> void relu_square_forward(F* out, const F* x, i64 n) {
  for (i64 i = 0; i < n; ++i) {
    const F r = x[i] > F(0) ? x[i] : F(0);
    out[i] = r * r;  // max(x, 0)²
  }
}
template <class F> void relu_square_backward(F* dx, const F* dout, const F* x, i64 n) {
  for (i64 i = 0; i < n; ++i) dx[i] += dout[i] * F(2) * (x[i] > F(0) ? x[i] : F(0));
}
template <class F> void silu_mul_forward(F* out, const F* a, const F* g, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = a[i] * g[i] * sigmoid_ref(g[i]);  // a ⊙ g σ(g)
}
template <class F> void silu_mul_backward(F* da, F* dg, const F* dout, const F* a, const F* g, i64 n) {
  for (i64 i = 0; i < n; ++i) {
    const F s = sigmoid_ref(g[i]);
    if (da) da[i] += dout[i] * g[i] * s;
    if (dg) dg[i] += dout[i] * a[i] * s * (F(1) + g[i] * (F(1) - s));  // silu' = σ(1 + g(1 − σ))
  }
}
template <class F> void tanh_forward(F* y, const F* x, i64 n) {
  for (i64 i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
template <class F> void tanh_backward(F* dx, const F* dy, const F* y, i64 n) {
  for (i64 i = 0; i < n; ++i) dx[i] += dy[i] * (F(1) - y[i] * y[i]);
}

template <class F>
void ddlerp_shift_forward(F* xx, F* xxx, const F* x, const F* prev, const F* mu_x, i64 B, i64 T, i64 D) {
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = (b * T + t) * D + c;
        const F xp = t > 0 ? x[i - D] : (prev ? prev[b * D + c] : F(0));
        xx[i] = xp - x[i];                 // xx = x_{t−1} − x_t
        xxx[i] = x[i] + xx[i] * mu_x[c];   // xxx = x + xx ⊙ μ_x
      }
}
template <class F>
void ddlerp_shift_backward(F* dx, F* dprev, F* dmu_x, const F* dxx, const F* dxxx, const F* x,
                           const F* prev, const F* mu_x, i64 B, i64 T, i64 D) {
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = (b * T + t) * D + c;
        const F xp = t > 0 ? x[i - D] : (prev ? prev[b * D + c] : F(0));
        const F gxx = (dxx ? dxx[i] : F(0)) + dxxx[i] * mu_x[c];  // total gradient of xx
        if (dmu_x) dmu_x[c] += dxxx[i] * (xp - x[i]);
        if (dx) {
          dx[i] += dxxx[i] - gxx;
          if (t > 0) dx[i - D] += gxx;
        }
        if (t == 0 && dprev) dprev[b * D + c] += gxx;
      }
}
template <class F>
void ddlerp_mix_forward(F* out, const F* x, const F* xx, const F* mu, const F* m, i64 J, i64 M, i64 D) {
  for (i64 j = 0; j < J; ++j)
    for (i64 r = 0; r < M; ++r)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = r * D + c, o = (j * M + r) * D + c;
        out[o] = x[i] + xx[i] * (mu[j * D + c] + m[o]);  // x_□ = x + xx ⊙ (μ_□ + m_□)
      }
}
template <class F>
void ddlerp_mix_backward(F* dx, F* dxx, F* dmu, F* dm, const F* dout, const F* xx, const F* mu,
                         const F* m, i64 J, i64 M, i64 D) {
  for (i64 j = 0; j < J; ++j)
    for (i64 r = 0; r < M; ++r)
      for (i64 c = 0; c < D; ++c) {
        const i64 i = r * D + c, o = (j * M + r) * D + c;
        if (dx) dx[i] += dout[o];
        if (dxx) dxx[i] += dout[o] * (mu[j * D + c] + m[o]);
        if (dmu) dmu[j * D + c] += dout[o] * xx[i];
        if (dm) dm[o] += dout[o] * xx[i];
      }
}
template <class F> void decay_forward(F* logw, const F* lambda, const F* z, i64 M, i64 D) {
  for (i64 r = 0; r < M; ++r)
    for (i64 c = 0; c < D; ++c) logw[r * D + c] = -std::exp(lambda[c] + z[r * D + c]);  // −e^{d}
}
template <class F>
void decay_backward(F* dlambda, F* dz, const F* dlogw, const F* logw, i64 M, i64 D) {
  for (i64 r = 0; r < M; ++r)
    for (i64 c = 0; c < D; ++c) {
      const F g = dlogw[r * D + c] * logw[r * D + c];
      if (dz) dz[r * D + c] += g;
      if (dlambda) dlambda[c] += g;
    }
}

#define SCANSHARD_RWKV_OPS_INSTANTIATE(F)                                                         \
  template void sigmoid_mul_forward<F>(F*, const F*, const F*, i64);                              \
  template void sigmoid_mul_backward<F>(F*, F*, const F*, const F*, const F*, i64);               \
  template void relu_square_forward<F>(F*, const F*, i64);                                        \
  template void relu_square_backward<F>(F*, const F*, const F*, i64);                             \
  template void silu_mul_forward<F>(F*, const F*, const F*, i64);                                 \
  template void silu_mul_backward<F>(F*, F*, const F*, const F*, const F*, i64);                  \
  template void tanh_forward<F>(F*, const F*, i64);                                               \
  template void tanh_backward<F>(F*, const F*, const F*, i64);                                    \
  template void ddlerp_shift_forward<F>(F*, F*, const F*, const F*, const F*, i64, i64, i64);     \
  template void ddlerp_shift_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*,      \
                                         const F*, i64, i64, i64);                                \
  template void ddlerp_mix_forward<F>(F*, const F*, const F*, const F*, const F*, i64, i64, i64); \
  template void ddlerp_mix_backward<F>(F*, F*, F*, F*, const F*, const F*, const F*, const F*,    \
                                       i64, i64, i64);                                            \
  template void decay_forward<F>(F*, const F*, const F*, i64, i64);                               \
  template void decay_backward<F>(F*, F*, const F*, const F*, i64, i64);
SCANSHARD_RWKV_OPS_INSTANTIATE(float)
SCANSHARD_RWKV_OPS_INSTANTIATE(double)
#undef SCANSHARD_RWKV_OPS_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {
constexpr i64 kColBlock = 64;  // channels per work item of a reduction over rows

// x_{t−1} of row bt of [B,T,D]: the previous row, the halo prev[b] at t = 0, or nullptr (= 0)
inline const float* previous_row(const float* x, const float* prev, i64 bt, i64 T, i64 D) {
  const i64 b = bt / T, t = bt % T;
  return t > 0 ? x + (bt - 1) * D : (prev ? prev + b * D : nullptr);
}
}  // namespace

void sigmoid_mul_forward(float* out, const float* a, const float* b, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::sigmoid_mul(out + i, a + i, b + i, len); });
}
void sigmoid_mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) {
    rows::sigmoid_mul_grad(da ? da + i : nullptr, db ? db + i : nullptr, dout + i, a + i, b + i, len);
  });
}
void relu_square_forward(float* out, const float* x, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::relu_square(out + i, x + i, len); });
}
void relu_square_backward(float* dx, const float* dout, const float* x, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::relu_square_grad(dx + i, dout + i, x + i, len); });
}
void silu_mul_forward(float* out, const float* a, const float* g, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::silu_mul(out + i, a + i, g + i, len); });
}
void silu_mul_backward(float* da, float* dg, const float* dout, const float* a, const float* g, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) {
    rows::silu_mul_grad(da ? da + i : nullptr, dg ? dg + i : nullptr, dout + i, a + i, g + i, len);
  });
}
void tanh_forward(float* y, const float* x, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::tanh(y + i, x + i, len); });
}
void tanh_backward(float* dx, const float* dy, const float* y, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::tanh_grad(dx + i, dy + i, y + i, len); });
}

void ddlerp_shift_forward(float* xx, float* xxx, const float* x, const float* prev, const float* mu_x,
                          i64 B, i64 T, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 bt = 0; bt < B * T; ++bt)
    rows::shift_mix(xx + bt * D, xxx + bt * D, x + bt * D, previous_row(x, prev, bt, T, D), mu_x, D);
}

void ddlerp_shift_backward(float* dx, float* dprev, float* dmu_x, const float* dxx, const float* dxxx,
                           const float* x, const float* prev, const float* mu_x, i64 B, i64 T, i64 D) {
  if (dx || dprev) {
#pragma omp parallel for schedule(static)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      // own token: dxxx − dxx'_t; as x_{t−1} of token t+1: + dxx'_{t+1}
      const bool nxt = t + 1 < T;
      const float* gxx = dxx ? dxx + bt * D : nullptr;
      if (dx)
        rows::shift_mix_grad(dx + bt * D, gxx, dxxx + bt * D, nxt && gxx ? gxx + D : nullptr,
                             nxt ? dxxx + (bt + 1) * D : nullptr, mu_x, D);
      if (t == 0 && dprev)
        for (i64 c = 0; c < D; ++c) {
          const i64 i = bt * D + c;
          dprev[b * D + c] += (dxx ? dxx[i] : 0.0f) + dxxx[i] * mu_x[c];
        }
    }
  }
  if (dmu_x) {
#pragma omp parallel for schedule(static)
    for (i64 c0 = 0; c0 < D; c0 += kColBlock) {
      const i64 w = std::min(D, c0 + kColBlock) - c0;
      for (i64 bt = 0; bt < B * T; ++bt) {
        const float* xp = previous_row(x, prev, bt, T, D);
        rows::add_product_of_difference(dmu_x + c0, dxxx + bt * D + c0, xp ? xp + c0 : nullptr, x + bt * D + c0, w);
      }
    }
  }
}

void ddlerp_mix_forward(float* out, const float* x, const float* xx, const float* mu, const float* m,
                        i64 J, i64 M, i64 D) {
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 j = 0; j < J; ++j)
    for (i64 r = 0; r < M; ++r)
      rows::mix(out + (j * M + r) * D, x + r * D, xx + r * D, mu + j * D, m + (j * M + r) * D, D);
}

void ddlerp_mix_backward(float* dx, float* dxx, float* dmu, float* dm, const float* dout,
                         const float* xx, const float* mu, const float* m, i64 J, i64 M, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < M; ++r)
    for (i64 j = 0; j < J; ++j)
      rows::mix_grad(dx ? dx + r * D : nullptr, dxx ? dxx + r * D : nullptr, dm ? dm + (j * M + r) * D : nullptr,
                     dout + (j * M + r) * D, xx + r * D, mu + j * D, m + (j * M + r) * D, D);
  if (dmu) {
#pragma omp parallel for collapse(2) schedule(static)
    for (i64 j = 0; j < J; ++j)
      for (i64 c0 = 0; c0 < D; c0 += kColBlock) {
        const i64 w = std::min(D, c0 + kColBlock) - c0;
        for (i64 r = 0; r < M; ++r) rows::add_product(dmu + j * D + c0, dout + (j * M + r) * D + c0, xx + r * D + c0, w);
      }
  }
}

void decay_forward(float* logw, const float* lambda, const float* z, i64 M, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < M; ++r) rows::neg_exp_of_sum(logw + r * D, lambda, z + r * D, D);
}

void decay_backward(float* dlambda, float* dz, const float* dlogw, const float* logw, i64 M, i64 D) {
  if (dz) rows::for_spans(M * D, [&](i64 i, i64 len) { rows::add_product(dz + i, dlogw + i, logw + i, len); });
  if (dlambda) {
#pragma omp parallel for schedule(static)
    for (i64 c0 = 0; c0 < D; c0 += kColBlock) {
      const i64 w = std::min(D, c0 + kColBlock) - c0;
      for (i64 r = 0; r < M; ++r) rows::add_product(dlambda + c0, dlogw + r * D + c0, logw + r * D + c0, w);
    }
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
