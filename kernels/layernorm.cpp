// kernels/layernorm.cpp — see layernorm.hpp. Reference: two-pass statistics in double, obvious
// loops. Fast: fp32 two-pass statistics per (row, group) on the dispatched SIMD target
// (vector_rows.hpp; OpenMP over rows); the weight gradients are reduced through one partial
// buffer per thread.
#include "kernels/layernorm.hpp"
#include "kernels/vector_rows.hpp"

#include <omp.h>

#include <vector>

namespace scanshard::kernels {

namespace ref {

template <class F>
void group_norm_forward(F* y, F* mean, F* rstd, const F* x, const F* scale, const F* bias,
                        i64 M, i64 G, i64 N, F eps) {
  const i64 D = G * N;
  for (i64 m = 0; m < M; ++m)
    for (i64 g = 0; g < G; ++g) {
      const F* xr = x + m * D + g * N;
      // μ = (1/N) Σ_n x
      double mu = 0;
      for (i64 n = 0; n < N; ++n) mu += xr[n];
      mu /= double(N);
      // σ² = (1/N) Σ_n (x − μ)²
      double var = 0;
      for (i64 n = 0; n < N; ++n) var += (xr[n] - mu) * (xr[n] - mu);
      var /= double(N);
      const double rs = 1.0 / std::sqrt(var + double(eps));
      mean[m * G + g] = F(mu);
      rstd[m * G + g] = F(rs);
      // y = (x − μ)·rstd·scale + bias
      for (i64 n = 0; n < N; ++n) {
        const i64 c = g * N + n;
        y[m * D + c] = F((xr[n] - mu) * rs * scale[c] + bias[c]);
      }
    }
}

template <class F>
void group_norm_backward(F* dx, F* dscale, F* dbias, const F* dy, const F* mean, const F* rstd,
                         const F* x, const F* scale, i64 M, i64 G, i64 N) {
  const i64 D = G * N;
  for (i64 m = 0; m < M; ++m)
    for (i64 g = 0; g < G; ++g) {
      const double mu = mean[m * G + g], rs = rstd[m * G + g];
      // mean(ĝ), mean(ĝ·x̂) with ĝ = dy·scale, x̂ = (x − μ)·rstd
      double mg = 0, mgx = 0;
      for (i64 n = 0; n < N; ++n) {
        const i64 c = g * N + n;
        const double xh = (x[m * D + c] - mu) * rs, gh = double(dy[m * D + c]) * scale[c];
        mg += gh;
        mgx += gh * xh;
        if (dscale) dscale[c] += F(double(dy[m * D + c]) * xh);  // dscale += dy·x̂
        if (dbias) dbias[c] += dy[m * D + c];                     // dbias += dy
      }
      mg /= double(N);
      mgx /= double(N);
      if (dx)
        for (i64 n = 0; n < N; ++n) {
          const i64 c = g * N + n;
          const double xh = (x[m * D + c] - mu) * rs, gh = double(dy[m * D + c]) * scale[c];
          // dx += rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
          dx[m * D + c] += F(rs * (gh - mg - xh * mgx));
        }
    }
}

template void group_norm_forward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, i64, i64, i64, float);
template void group_norm_forward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, i64, i64, i64, double);
template void group_norm_backward<float>(float*, float*, float*, const float*, const float*,
                                         const float*, const float*, const float*, i64, i64, i64);
template void group_norm_backward<double>(double*, double*, double*, const double*,
                                          const double*, const double*, const double*,
                                          const double*, i64, i64, i64);
}  // namespace ref

namespace fast {

void group_norm_forward(float* y, float* mean, float* rstd, const float* x, const float* scale,
                        const float* bias, i64 M, i64 G, i64 N, float eps) {
  const i64 D = G * N;
#pragma omp parallel for schedule(static) if (M * G > 1)  // one group of one row: no region to wait on
  for (i64 mg = 0; mg < M * G; ++mg) {
    const i64 o = (mg / G) * D + (mg % G) * N, c0 = (mg % G) * N;
    rows::group_norm(y + o, mean + mg, rstd + mg, x + o, scale + c0, bias + c0, N, eps);
  }
}

void group_norm_backward(float* dx, float* dscale, float* dbias, const float* dy,
                         const float* mean, const float* rstd, const float* x, const float* scale,
                         i64 M, i64 G, i64 N) {
  const i64 D = G * N;
  const int nt = omp_get_max_threads();
  std::vector<float> part((dscale || dbias) ? size_t(nt) * 2 * D : 0, 0.0f);
#pragma omp parallel
  {
    float* ps = part.empty() ? nullptr : part.data() + size_t(omp_get_thread_num()) * 2 * D;
#pragma omp for schedule(static)
    for (i64 mg = 0; mg < M * G; ++mg) {
      const i64 o = (mg / G) * D + (mg % G) * N, c0 = (mg % G) * N;
      rows::group_norm_grad(dx ? dx + o : nullptr, ps ? ps + c0 : nullptr, ps ? ps + D + c0 : nullptr, dy + o, x + o,
                            scale + c0, mean[mg], rstd[mg], N);
    }
  }
  for (int t = 0; t < nt && !part.empty(); ++t)
    for (i64 c = 0; c < D; ++c) {
      if (dscale) dscale[c] += part[size_t(t) * 2 * D + c];
      if (dbias) dbias[c] += part[size_t(t) * 2 * D + D + c];
    }
}

}  // namespace fast

}  // namespace scanshard::kernels
