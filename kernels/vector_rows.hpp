// kernels/vector_rows.hpp — the elementwise bodies of the fast kernels as contiguous rows of n
// floats, written once with Google Highway and dispatched to the best SIMD target of the CPU at
// run time (simd.hpp; the tests pin every target). Math: contrib's Exp / Tanh (simd_math-inl.h).
//
// For: fast:: kernels in rwkv_ops.cpp, mlp.cpp, rwkv4.cpp (token shift), rmsnorm.cpp, layernorm.cpp
// (GroupNorm / LayerNorm) and attention.cpp (the flash softmax), which keep their OpenMP work
// split and call one row per (thread's) span, token or group. Not for: the recurrences (their own
// per-target code: rglru.cpp, rwkv4.cpp, rwkv6.cpp, conv1d.cpp), references (ref::, plain loops).
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

// ─── reductions over one row (norms, softmax; sums in float, per-lane partial sums) ─────────────
// RMSNorm of one row: returns r = 1/√(Σ x²/n + eps) and writes y = x·r·(1 + scale)
float rmsnorm(float* y, const float* x, const float* scale, i64 n, float eps);
// its gradient, mean = Σ dy(1 + scale)x·r / n:  dx += r(dy(1 + scale) − x·r·mean);  dscale += dy·x·r
// (dx, dscale nullable)
void rmsnorm_grad(float* dx, float* dscale, const float* dy, const float* x, const float* scale, float rstd, i64 n);
// one group of n channels: μ, rstd = 1/√(Σ(x − μ)²/n + eps) into *mean, *rstd; y = (x − μ)·rstd·scale + bias
void group_norm(float* y, float* mean, float* rstd, const float* x, const float* scale, const float* bias, i64 n,
                float eps);
// with x̂ = (x − μ)·rstd, ĝ = dy·scale: dx += rstd(ĝ − mean(ĝ) − x̂·mean(ĝ x̂)); dscale += dy·x̂; dbias += dy
// (each nullable)
void group_norm_grad(float* dx, float* dscale, float* dbias, const float* dy, const float* x, const float* scale,
                     float mean, float rstd, i64 n);
// max(init, max x)
float max_of(const float* x, i64 n, float init);
// Σ a·b in per-lane float sums (GCC leaves `omp simd reduction` dot products scalar)
float dot(const float* a, const float* b, i64 n);
// out[r] = Σ_j a[r·n + j]·x[j] for r < rows: a row-major [rows, n] matrix times one vector, its
// rows read in memory order (one sequential stream), each a dot() of n
void dot_rows(float* out, const float* a, const float* x, i64 rows, i64 n);
// x ⊙= m (elementwise)
void mul_by(float* x, const float* m, i64 n);
// x = e^{x − c} (in place); returns Σ of the new x
float exp_minus_sum(float* x, i64 n, float c);
// Σ e^{x − c} over a row of any length: per-lane float sums over blocks of 128, the blocks summed
// in double (≲ 1e-6 relative even on the one-lane scalar target); out = e^{x − c} when out is
// non-null (out may be x)
double exp_minus_sum_blocked(float* out, const float* x, i64 n, float c);
// softmax backward from scores: p = e^{p − lse} (in place);  dp = p·(dp − dot)·scale
void softmax_grad(float* p, float* dp, i64 n, float lse, float dot, float scale);

// fn(i0, len) for consecutive spans of [0, n) (len ≤ span), spread over the OpenMP threads: how
// the fast kernels hand rows to the functions above. One span (a decode step's single row) runs
// on the calling thread: no parallel region, whose barrier waits for idle threads to be
// scheduled (on a loaded machine, a time slice per region).
template <class Fn>
void for_spans(i64 n, const Fn& fn, i64 span = 8192) {
#pragma omp parallel for schedule(static) if (n > span)
  for (i64 i0 = 0; i0 < n; i0 += span) fn(i0, n - i0 < span ? n - i0 : span);
}

}  // namespace scanshard::kernels::rows
