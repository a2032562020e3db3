// kernels/vector_rows.hpp — the elementwise bodies of the fast kernels as contiguous rows of n
// floats, written once with Google Highway and dispatched to the best SIMD target of the CPU at
// run time (simd.hpp; the tests pin every target). Math: contrib's Exp / Tanh (simd_math-inl.h).
//
// For: fast:: kernels in rwkv_ops.cpp, mlp.cpp, rwkv4.cpp (token shift), which keep their OpenMP
// work split and call one row per (thread's) span. Not for: the recurrences (their own per-target
// code: rglru.cpp, rwkv4.cpp, rwkv6.cpp, conv1d.cpp), references (ref::, plain loops).
// Convention: "+=" rows accumulate into their outputs, the others write (=); every row accepts
// n = 0 and any alignment.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels::rows {

// out = σ(a) ⊙ b
void sigmoid_mul(float* out, const float* a, const float* b, i64 n);
// da += dout ⊙ b ⊙ σ(a)(1 − σ(a));  db += dout ⊙ σ(a)   (each nullable)
void sigmoid_mul_grad(float* da, float* db, const float* dout, const float* a, const float* b, i64 n);
// out = a ⊙ g σ(g)
void silu_mul(float* out, const float* a, const float* g, i64 n);
// da += dout ⊙ g σ(g);  dg += dout ⊙ a ⊙ σ(g)(1 + g(1 − σ(g)))   (each nullable)
void silu_mul_grad(float* da, float* dg, const float* dout, const float* a, const float* g, i64 n);
// out = max(x, 0)²
void relu_square(float* out, const float* x, i64 n);
// dx += dout ⊙ 2 max(x, 0)
void relu_square_grad(float* dx, const float* dout, const float* x, i64 n);
// y = tanh(x)
void tanh(float* y, const float* x, i64 n);
// dx += dy ⊙ (1 − y²)
void tanh_grad(float* dx, const float* dy, const float* y, i64 n);
// out = gelu(a) ⊙ b   (b nullable = 1)
void gelu_mul(float* out, const float* a, const float* b, i64 n);
// da ⊕= dout ⊙ b ⊙ gelu'(a);  db ⊕= dout ⊙ gelu(a)   (⊕ = += if accumulate, else =; da, db and b
// nullable, b = 1)
void gelu_mul_grad(float* da, float* db, const float* dout, const float* a, const float* b, i64 n, bool accumulate);
// out = −e^{a + b}
void neg_exp_of_sum(float* out, const float* a, const float* b, i64 n);
// acc += a ⊙ b
void add_product(float* acc, const float* a, const float* b, i64 n);
// acc += g ⊙ (p − x)   (p, x nullable = 0)
void add_product_of_difference(float* acc, const float* g, const float* p, const float* x, i64 n);
// out = μ ⊙ x + (1 − μ) ⊙ p   (p nullable = 0)
void lerp(float* out, const float* x, const float* p, const float* mu, i64 n);
// dx += μ ⊙ g + (1 − μ) ⊙ g_next   (g_next nullable = 0)
void lerp_grad(float* dx, const float* g, const float* g_next, const float* mu, i64 n);
// xx = p − x;  xxx = x + xx ⊙ μ   (p nullable = 0)
void shift_mix(float* xx, float* xxx, const float* x, const float* p, const float* mu, i64 n);
// with G(dxx, dxxx) = dxx + dxxx ⊙ μ (dxx nullable = 0):
//   dx += dxxx − G(dxx, dxxx) + G(dxx_next, dxxx_next)   (dxxx_next nullable: no next token)
void shift_mix_grad(float* dx, const float* dxx, const float* dxxx, const float* dxx_next, const float* dxxx_next,
                    const float* mu, i64 n);
// out = x + xx ⊙ (μ + m)
void mix(float* out, const float* x, const float* xx, const float* mu, const float* m, i64 n);
// dx += g;  dxx += g ⊙ (μ + m);  dm += g ⊙ xx   (each nullable)
void mix_grad(float* dx, float* dxx, float* dm, const float* g, const float* xx, const float* mu, const float* m,
              i64 n);

// fn(i0, len) for consecutive spans of [0, n) (len ≤ span), spread over the OpenMP threads: how
// the fast kernels hand rows to the functions above.
template <class Fn>
void for_spans(i64 n, const Fn& fn, i64 span = 8192) {
#pragma omp parallel for schedule(static)
  for (i64 i0 = 0; i0 < n; i0 += span) fn(i0, n - i0 < span ? n - i0 : span);
}

}  // namespace scanshard::kernels::rows
