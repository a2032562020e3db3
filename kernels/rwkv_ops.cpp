// kernels/rwkv_ops.cpp — see rwkv_ops.hpp. Reference: one loop per equation, std:: math. Fast:
// OpenMP over elements or rows with vectorisable bodies (exp_fast / sigmoid_fast / tanh_fast);
// reductions over rows into per-channel gradients are parallel over channel blocks.
#include "kernels/rwkv_ops.hpp"

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
}

void sigmoid_mul_forward(float* out, const float* a, const float* b, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) out[i] = sigmoid_fast(a[i]) * b[i];
}
void sigmoid_mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const float s = sigmoid_fast(a[i]);
    if (da) da[i] += dout[i] * b[i] * s * (1.0f - s);
    if (db) db[i] += dout[i] * s;
  }
}
void relu_square_forward(float* out, const float* x, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const float r = x[i] > 0.0f ? x[i] : 0.0f;
    out[i] = r * r;
  }
}
void relu_square_backward(float* dx, const float* dout, const float* x, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) dx[i] += dout[i] * 2.0f * (x[i] > 0.0f ? x[i] : 0.0f);
}
void silu_mul_forward(float* out, const float* a, const float* g, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) out[i] = a[i] * g[i] * sigmoid_fast(g[i]);
}
void silu_mul_backward(float* da, float* dg, const float* dout, const float* a, const float* g, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const float s = sigmoid_fast(g[i]);
    if (da) da[i] += dout[i] * g[i] * s;
    if (dg) dg[i] += dout[i] * a[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}
void tanh_forward(float* y, const float* x, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) y[i] = tanh_fast(x[i]);
}
void tanh_backward(float* dx, const float* dy, const float* y, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}

void ddlerp_shift_forward(float* xx, float* xxx, const float* x, const float* prev, const float* mu_x,
                          i64 B, i64 T, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 bt = 0; bt < B * T; ++bt) {
    const i64 b = bt / T, t = bt % T;
    const float* xt = x + bt * D;
    const float* xp = t > 0 ? xt - D : (prev ? prev + b * D : nullptr);
#pragma omp simd
    for (i64 c = 0; c < D; ++c) {
      const float d = (xp ? xp[c] : 0.0f) - xt[c];
      xx[bt * D + c] = d;
      xxx[bt * D + c] = xt[c] + d * mu_x[c];
    }
  }
}

void ddlerp_shift_backward(float* dx, float* dprev, float* dmu_x, const float* dxx, const float* dxxx,
                           const float* x, const float* prev, const float* mu_x, i64 B, i64 T, i64 D) {
  if (dx || dprev) {
#pragma omp parallel for schedule(static)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      // own token: dxxx − dxx'_t; as x_{t−1} of token t+1: + dxx'_{t+1}
      if (dx) {
        const bool nxt = t + 1 < T;
#pragma omp simd
        for (i64 c = 0; c < D; ++c) {
          const i64 i = bt * D + c;
          const float g0 = (dxx ? dxx[i] : 0.0f) + dxxx[i] * mu_x[c];
          const float g1 = nxt ? (dxx ? dxx[i + D] : 0.0f) + dxxx[i + D] * mu_x[c] : 0.0f;
          dx[i] += dxxx[i] - g0 + g1;
        }
      }
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
      const i64 c1 = std::min(D, c0 + kColBlock);
      for (i64 bt = 0; bt < B * T; ++bt) {
        const i64 b = bt / T, t = bt % T;
        const float* xt = x + bt * D;
        const float* xp = t > 0 ? xt - D : (prev ? prev + b * D : nullptr);
        for (i64 c = c0; c < c1; ++c) dmu_x[c] += dxxx[bt * D + c] * ((xp ? xp[c] : 0.0f) - xt[c]);
      }
    }
  }
}

void ddlerp_mix_forward(float* out, const float* x, const float* xx, const float* mu, const float* m,
                        i64 J, i64 M, i64 D) {
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 j = 0; j < J; ++j)
    for (i64 r = 0; r < M; ++r) {
      const float *xr = x + r * D, *xxr = xx + r * D, *mj = mu + j * D, *mr = m + (j * M + r) * D;
      float* o = out + (j * M + r) * D;
#pragma omp simd
      for (i64 c = 0; c < D; ++c) o[c] = xr[c] + xxr[c] * (mj[c] + mr[c]);
    }
}

void ddlerp_mix_backward(float* dx, float* dxx, float* dmu, float* dm, const float* dout,
                         const float* xx, const float* mu, const float* m, i64 J, i64 M, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < M; ++r)
    for (i64 j = 0; j < J; ++j) {
      const float *g = dout + (j * M + r) * D, *xxr = xx + r * D, *mj = mu + j * D,
                  *mr = m + (j * M + r) * D;
#pragma omp simd
      for (i64 c = 0; c < D; ++c) {
        if (dx) dx[r * D + c] += g[c];
        if (dxx) dxx[r * D + c] += g[c] * (mj[c] + mr[c]);
        if (dm) dm[(j * M + r) * D + c] += g[c] * xxr[c];
      }
    }
  if (dmu) {
#pragma omp parallel for collapse(2) schedule(static)
    for (i64 j = 0; j < J; ++j)
      for (i64 c0 = 0; c0 < D; c0 += kColBlock) {
        const i64 c1 = std::min(D, c0 + kColBlock);
        for (i64 r = 0; r < M; ++r)
          for (i64 c = c0; c < c1; ++c) dmu[j * D + c] += dout[(j * M + r) * D + c] * xx[r * D + c];
      }
  }
}

void decay_forward(float* logw, const float* lambda, const float* z, i64 M, i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < M; ++r) {
#pragma omp simd
    for (i64 c = 0; c < D; ++c) logw[r * D + c] = -exp_fast(lambda[c] + z[r * D + c]);
  }
}

void decay_backward(float* dlambda, float* dz, const float* dlogw, const float* logw, i64 M, i64 D) {
  if (dz) {
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < M * D; ++i) dz[i] += dlogw[i] * logw[i];
  }
  if (dlambda) {
#pragma omp parallel for schedule(static)
    for (i64 c0 = 0; c0 < D; c0 += kColBlock) {
      const i64 c1 = std::min(D, c0 + kColBlock);
      for (i64 r = 0; r < M; ++r)
        for (i64 c = c0; c < c1; ++c) dlambda[c] += dlogw[r * D + c] * logw[r * D + c];
    }
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
