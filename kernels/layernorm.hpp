// kernels/layernorm.hpp — LayerNorm with bias (RWKV pre-norms, the extra norm on the embedding,
// the final norm) and GroupNorm over heads (RWKV-6 time-mix output, eps 64e-5).
//
// For: RWKV-4 / RWKV-6 normalisations. Both are one op: G groups of N channels per row, each
// group normalised on its own, then a per-channel affine over all D = G·N channels; LayerNorm is
// G = 1. Not for: RMSNorm (Griffin, see the Griffin kernels), normalisation across tokens.
// Convention: kernels.hpp. Shapes: x, y [M,D] with M = B·T; scale, bias [D]; mean, rstd [M,G]
// saved for backward.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// For every row m and group g (channels c = g·N + n, n < N):
//   μ = (1/N) Σ_n x[m,c];  σ² = (1/N) Σ_n (x[m,c] − μ)²;  rstd = 1/√(σ² + eps)
//   y[m,c] = (x[m,c] − μ)·rstd·scale[c] + bias[c]
template <class F>
void group_norm_forward(F* y, F* mean, F* rstd, const F* x, const F* scale, const F* bias,
                        i64 M, i64 G, i64 N, F eps);
// With x̂ = (x − μ)·rstd and ĝ = dy·scale (per group of N channels):
//   dx += rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂));  dscale += Σ_m dy·x̂;  dbias += Σ_m dy
// (dx, dscale, dbias may each be nullptr to skip)
template <class F>
void group_norm_backward(F* dx, F* dscale, F* dbias, const F* dy, const F* mean, const F* rstd,
                         const F* x, const F* scale, i64 M, i64 G, i64 N);

// LayerNorm = GroupNorm with one group of D channels.
template <class F>
void layer_norm_forward(F* y, F* mean, F* rstd, const F* x, const F* scale, const F* bias,
                        i64 M, i64 D, F eps) {
  group_norm_forward(y, mean, rstd, x, scale, bias, M, i64(1), D, eps);
}
template <class F>
void layer_norm_backward(F* dx, F* dscale, F* dbias, const F* dy, const F* mean, const F* rstd,
                         const F* x, const F* scale, i64 M, i64 D) {
  group_norm_backward(dx, dscale, dbias, dy, mean, rstd, x, scale, M, i64(1), D);
}
}  // namespace ref

namespace fast {
// Same contracts as ref; OpenMP over rows, vectorised channel loops.
void group_norm_forward(float* y, float* mean, float* rstd, const float* x, const float* scale,
                        const float* bias, i64 M, i64 G, i64 N, float eps);
void group_norm_backward(float* dx, float* dscale, float* dbias, const float* dy,
                         const float* mean, const float* rstd, const float* x, const float* scale,
                         i64 M, i64 G, i64 N);
inline void layer_norm_forward(float* y, float* mean, float* rstd, const float* x,
                               const float* scale, const float* bias, i64 M, i64 D, float eps) {
  group_norm_forward(y, mean, rstd, x, scale, bias, M, 1, D, eps);
}
inline void layer_norm_backward(float* dx, float* dscale, float* dbias, const float* dy,
                                const float* mean, const float* rstd, const float* x,
                                const float* scale, i64 M, i64 D) {
  group_norm_backward(dx, dscale, dbias, dy, mean, rstd, x, scale, M, 1, D);
}
}  // namespace fast

}  // namespace scanshard::kernels
