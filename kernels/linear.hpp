// kernels/linear.hpp — dense linear layers y = x W + b (OpenBLAS sgemm in the fast path) and the
// block-diagonal linear of the RG-LRU gates.
//
// For: every projection of Griffin / Hawk / MQA / RWKV (MLP, recurrent branches, Q/K/V/O).
// Not for: the tied output head (embedding.hpp), fused activations (mlp.hpp).
// Convention: kernels.hpp. Shapes: x [M,C], W [C,OC], b [OC], y [M,OC] with M = B·T rows.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// y[m,o] = b[o] + Σ_c x[m,c] W[c,o]          (b may be nullptr)
template <class F>
void linear_forward(F* y, const F* x, const F* w, const F* b, i64 M, i64 C, i64 OC);
// dx[m,c] += Σ_o dy[m,o] W[c,o];  dW[c,o] += Σ_m x[m,c] dy[m,o];  db[o] += Σ_m dy[m,o]
// (dx, dw, db may each be nullptr to skip)
template <class F>
void linear_backward(F* dx, F* dw, F* db, const F* dy, const F* x,
                     const F* w, i64 M, i64 C, i64 OC);

// Block-diagonal linear with Hb blocks of size S = R/Hb:
// y[m, h·S + j] = b[h·S + j] + Σ_i x[m, h·S + i] W[h, i, j];   W [Hb,S,S], b [R] (nullable)
template <class F>
void blockdiag_forward(F* y, const F* x, const F* w, const F* b, i64 M, i64 R, i64 Hb);
template <class F>
void blockdiag_backward(F* dx, F* dw, F* db, const F* dy, const F* x,
                        const F* w, i64 M, i64 R, i64 Hb);
// Grouped linear of G maps side by side (RWKV-6's five LoRA B maps): group g reads columns
// [g·C, (g+1)·C) of x and writes its own output block:
// y[g, m, o] = Σ_c x[m, g·C + c] W[g, c, o];   x [M, G·C], W [G, C, OC], y [G, M, OC] (no bias).
// Backward: dx[m, g·C + c] += Σ_o dy[g, m, o] W[g, c, o];  dW[g, c, o] += Σ_m x[m, g·C + c] dy[g, m, o].
template <class F>
void grouped_linear_forward(F* y, const F* x, const F* w, i64 M, i64 G, i64 C, i64 OC);
template <class F>
void grouped_linear_backward(F* dx, F* dw, const F* dy, const F* x, const F* w, i64 M, i64 G, i64 C, i64 OC);
}  // namespace ref

namespace fast {
void linear_forward(float* y, const float* x, const float* w, const float* b, i64 M, i64 C, i64 OC);
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, i64 M, i64 C, i64 OC);
void blockdiag_forward(float* y, const float* x, const float* w, const float* b, i64 M, i64 R, i64 Hb);
void blockdiag_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const float* w, i64 M, i64 R, i64 Hb);
// Strided sgemm per group: no copies of the column blocks.
void grouped_linear_forward(float* y, const float* x, const float* w, i64 M, i64 G, i64 C, i64 OC);
void grouped_linear_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, i64 M, i64 G,
                             i64 C, i64 OC);
}  // namespace fast

}  // namespace scanshard::kernels
