// kernels/rwkv_ops.hpp — the elementwise pieces of the RWKV-4 / RWKV-6 blocks (DESIGN §3.2–3.3):
// receptance gate σ(a) ⊙ b, relu², SiLU gate, tanh, RWKV-6's data-dependent token shift (ddlerp)
// and its decay w = exp(−exp(d)) (returned as log w).
//
// For: composing the time mix and channel mix around linear.hpp, layernorm.hpp, rwkv4.hpp and
// rwkv6.hpp. Not for: the recurrences (rwkv4.hpp, rwkv6.hpp), projections (linear.hpp).
// Convention: kernels.hpp. n = number of elements; [M,D] with M = B·T rows.
// Non-smooth points (excluded from finite-difference probes): relu² at x = 0 (C¹ there).
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// out = σ(a) ⊙ b.   da += dout ⊙ b ⊙ σ(a)(1 − σ(a));  db += dout ⊙ σ(a)
template <class F> void sigmoid_mul_forward(F* out, const F* a, const F* b, i64 n);
template <class F> void sigmoid_mul_backward(F* da, F* db, const F* dout, const F* a, const F* b, i64 n);
// out = max(x, 0)².   dx += dout ⊙ 2·max(x, 0)
template <class F> void relu_square_forward(F* out, const F* x, i64 n);
template <class F> void relu_square_backward(F* dx, const F* dout, const F* x, i64 n);
// out = a ⊙ silu(g), silu(g) = g·σ(g).   da += dout ⊙ silu(g);
// dg += dout ⊙ a ⊙ σ(g)(1 + g(1 − σ(g)))
template <class F> void silu_mul_forward(F* out, const F* a, const F* g, i64 n);
template <class F> void silu_mul_backward(F* da, F* dg, const F* dout, const F* a, const F* g, i64 n);
// y = tanh(x).   dx += dy ⊙ (1 − y²)   (uses the saved output y)
template <class F> void tanh_forward(F* y, const F* x, i64 n);
template <class F> void tanh_backward(F* dx, const F* dy, const F* y, i64 n);

// RWKV-6 token shift, first stage ([B,T,D]; prev [B,D] nullable = zero, the 1-token halo):
//   xx_t = x_{t−1} − x_t;  xxx_t = x_t + xx_t ⊙ μ_x
template <class F>
void ddlerp_shift_forward(F* xx, F* xxx, const F* x, const F* prev, const F* mu_x, i64 B, i64 T, i64 D);
// given dxx and dxxx: dxx' = dxx + dxxx ⊙ μ_x;  dx_t += dxxx_t − dxx'_t;  dx_{t−1} += dxx'_t
// (dprev for t = 0);  dμ_x += Σ dxxx ⊙ xx.   dxx may be nullptr (= 0); dx, dprev, dmu_x nullable.
template <class F>
void ddlerp_shift_backward(F* dx, F* dprev, F* dmu_x, const F* dxx, const F* dxxx, const F* x,
                           const F* prev, const F* mu_x, i64 B, i64 T, i64 D);
// Second stage, J targets (J = 5: w, k, v, r, g): out[j] = x + xx ⊙ (μ[j] + m[j]);
// out, m [J,M,D]; mu [J,D].
template <class F>
void ddlerp_mix_forward(F* out, const F* x, const F* xx, const F* mu, const F* m, i64 J, i64 M, i64 D);
// dx += Σ_j dout[j];  dxx += Σ_j dout[j] ⊙ (μ[j] + m[j]);  dμ[j] += Σ_rows dout[j] ⊙ xx;
// dm[j] += dout[j] ⊙ xx.  (each gradient nullable)
template <class F>
void ddlerp_mix_backward(F* dx, F* dxx, F* dmu, F* dm, const F* dout, const F* xx, const F* mu,
                         const F* m, i64 J, i64 M, i64 D);

// RWKV-6 decay: logw = log w = −exp(λ + z), z [M,D] the LoRA output, λ [D].
// dz += dlogw ⊙ logw;  dλ += Σ_rows dlogw ⊙ logw   (d(−e^d)/dd = −e^d = logw)
template <class F> void decay_forward(F* logw, const F* lambda, const F* z, i64 M, i64 D);
template <class F>
void decay_backward(F* dlambda, F* dz, const F* dlogw, const F* logw, i64 M, i64 D);
}  // namespace ref

namespace fast {
void sigmoid_mul_forward(float* out, const float* a, const float* b, i64 n);
void sigmoid_mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, i64 n);
void relu_square_forward(float* out, const float* x, i64 n);
void relu_square_backward(float* dx, const float* dout, const float* x, i64 n);
void silu_mul_forward(float* out, const float* a, const float* g, i64 n);
void silu_mul_backward(float* da, float* dg, const float* dout, const float* a, const float* g, i64 n);
void tanh_forward(float* y, const float* x, i64 n);
void tanh_backward(float* dx, const float* dy, const float* y, i64 n);
void ddlerp_shift_forward(float* xx, float* xxx, const float* x, const float* prev, const float* mu_x,
                          i64 B, i64 T, i64 D);
void ddlerp_shift_backward(float* dx, float* dprev, float* dmu_x, const float* dxx, const float* dxxx,
                           const float* x, const float* prev, const float* mu_x, i64 B, i64 T, i64 D);
void ddlerp_mix_forward(float* out, const float* x, const float* xx, const float* mu, const float* m,
                        i64 J, i64 M, i64 D);
void ddlerp_mix_backward(float* dx, float* dxx, float* dmu, float* dm, const float* dout,
                         const float* xx, const float* mu, const float* m, i64 J, i64 M, i64 D);
void decay_forward(float* logw, const float* lambda, const float* z, i64 M, i64 D);
void decay_backward(float* dlambda, float* dz, const float* dlogw, const float* logw, i64 M, i64 D);
}  // namespace fast

}  // namespace scanshard::kernels
