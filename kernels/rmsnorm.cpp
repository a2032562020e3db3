// kernels/rmsnorm.cpp — see rmsnorm.hpp. The fast rows run on the dispatched SIMD target
// (vector_rows.hpp); the reference is plain loops in double.
#include "kernels/rmsnorm.hpp"
#include "kernels/vector_rows.hpp"

#include <cmath>
#include <vector>

namespace scanshard::kernels {

namespace ref {

template <class F>
void rmsnorm_forward(F* y, F* rstd, const F* x, const F* scale, i64 M, i64 D, F eps) {
  for (i64 m = 0; m < M; ++m) {
    // rstd = 1/√(mean x² + eps)
    double ss = 0;
    for (i64 d = 0; d < D; ++d) ss += double(x[m * D + d]) * x[m * D + d];
    const F r = F(1.0 / std::sqrt(ss / double(D) + double(eps)));
    rstd[m] = r;
    // y = x · rstd · (1 + scale)
    for (i64 d = 0; d < D; ++d) y[m * D + d] = x[m * D + d] * r * (F(1) + scale[d]);
  }
}

template <class F>
void rmsnorm_backward(F* dx, F* dscale, const F* dy, const F* x, const F* rstd, const F* scale, i64 M, i64 D) {
  for (i64 m = 0; m < M; ++m) {
    const F r = rstd[m];
    // mean_d(dn · n), with n = x·rstd and dn = dy·(1+scale)
    double dot = 0;
    for (i64 d = 0; d < D; ++d) dot += double(dy[m * D + d]) * (F(1) + scale[d]) * x[m * D + d] * r;
    const F mean = F(dot / double(D));
    for (i64 d = 0; d < D; ++d) {
      const F n = x[m * D + d] * r, dn = dy[m * D + d] * (F(1) + scale[d]);
      if (dscale) dscale[d] += dy[m * D + d] * n;       // dscale += dy · n
      if (dx) dx[m * D + d] += r * (dn - n * mean);     // dx += rstd (dn − n mean(dn n))
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, i64, i64, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, i64, i64, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, i64, i64);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*, const double*, i64, i64);

}  // namespace ref

namespace fast {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* scale, i64 M, i64 D, float eps) {
  #pragma omp parallel for schedule(static) if (M > 1)  // one row (a decode step): no region to wait on
  for (i64 m = 0; m < M; ++m) rstd[m] = rows::rmsnorm(y + m * D, x + m * D, scale, D, eps);
}

void rmsnorm_backward(float* dx, float* dscale, const float* dy, const float* x, const float* rstd,
                      const float* scale, i64 M, i64 D) {
  #pragma omp parallel
  {
    std::vector<float> ds(dscale ? D : 0, 0.0f);
    #pragma omp for schedule(static)
    for (i64 m = 0; m < M; ++m)
      rows::rmsnorm_grad(dx ? dx + m * D : nullptr, dscale ? ds.data() : nullptr, dy + m * D, x + m * D, scale, rstd[m],
                         D);
    if (dscale) {
      #pragma omp critical
      for (i64 d = 0; d < D; ++d) dscale[d] += ds[d];
    }
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
