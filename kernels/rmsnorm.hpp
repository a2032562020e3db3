// kernels/rmsnorm.hpp — RMSNorm as in Griffin: y = x · rsqrt(mean(x²) + eps) · (1 + scale).
//
// For: the pre-norms of every residual block and the final norm (DESIGN §3.1).
// Not for: LayerNorm with bias (RWKV has its own, kernels/layernorm*).
// Convention: kernels.hpp. Shapes: x, y [M,D]; scale [D]; saved rstd [M].
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// rstd[m] = 1/√(Σ_d x[m,d]²/D + eps);   y[m,d] = x[m,d] · rstd[m] · (1 + scale[d])
template <class F>
void rmsnorm_forward(F* y, F* rstd, const F* x, const F* scale, i64 M, i64 D, F eps = F(1e-6));
// n = x·rstd, dn = dy·(1+scale):  dscale[d] += Σ_m dy·n;  dx += rstd·(dn − n·mean_d(dn·n))
template <class F>
void rmsnorm_backward(F* dx, F* dscale, const F* dy, const F* x, const F* rstd, const F* scale, i64 M, i64 D);
}  // namespace ref

namespace fast {
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* scale, i64 M, i64 D, float eps = 1e-6f);
void rmsnorm_backward(float* dx, float* dscale, const float* dy, const float* x, const float* rstd,
                      const float* scale, i64 M, i64 D);
}  // namespace fast

}  // namespace scanshard::kernels
