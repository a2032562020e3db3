// kernels/mlp.cpp — see mlp.hpp. The fast path is three sgemms plus one fused elementwise pass in
// each direction (the gelu product and its derivative read h1, h2 once), SIMD-dispatched rows
// (vector_rows.hpp).
#include "kernels/mlp.hpp"

#include <algorithm>

#include "kernels/linear.hpp"
#include "kernels/vector_rows.hpp"

namespace scanshard::kernels {

namespace ref {

template <class F> void gelu_mul_forward(F* out, const F* a, const F* b, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = gelu_ref(a[i]) * (b ? b[i] : F(1));  // gelu(a) ⊙ b
}

template <class F> void gelu_mul_backward(F* da, F* db, const F* dout, const F* a, const F* b, i64 n) {
  for (i64 i = 0; i < n; ++i) {
    if (da) da[i] += dout[i] * (b ? b[i] : F(1)) * gelu_grad_ref(a[i]);  // da += dout b gelu'(a)
    if (db && b) db[i] += dout[i] * gelu_ref(a[i]);                      // db += dout gelu(a)
  }
}

template <class F>
void gated_mlp_forward(F* y, F* h1, F* h2, F* g, const F* x, const F* w1, const F* b1, const F* w2,
                       const F* b2, const F* w3, const F* b3, i64 M, i64 D, i64 Fh) {
  linear_forward(h1, x, w1, b1, M, D, Fh);
  linear_forward(h2, x, w2, b2, M, D, Fh);
  gelu_mul_forward(g, h1, h2, M * Fh);
  linear_forward(y, g, w3, b3, M, Fh, D);
}

template <class F>
void gated_mlp_backward(F* dx, F* dw1, F* db1, F* dw2, F* db2, F* dw3, F* db3, F* work, const F* dy,
                        const F* x, const F* h1, const F* h2, const F* g, const F* w1, const F* w2,
                        const F* w3, i64 M, i64 D, i64 Fh) {
  F* dg = work;
  F* dh1 = work + M * Fh;
  F* dh2 = work + 2 * M * Fh;
  std::fill(work, work + 3 * M * Fh, F(0));
  linear_backward(dg, dw3, db3, dy, g, w3, M, Fh, D);
  gelu_mul_backward(dh1, dh2, dg, h1, h2, M * Fh);
  linear_backward(dx, dw1, db1, dh1, x, w1, M, D, Fh);
  linear_backward(dx, dw2, db2, dh2, x, w2, M, D, Fh);
}

#define SCANSHARD_INSTANTIATE(F)                                                                  \
  template void gelu_mul_forward<F>(F*, const F*, const F*, i64);                                 \
  template void gelu_mul_backward<F>(F*, F*, const F*, const F*, const F*, i64);                  \
  template void gated_mlp_forward<F>(F*, F*, F*, F*, const F*, const F*, const F*, const F*,      \
                                     const F*, const F*, const F*, i64, i64, i64);                \
  template void gated_mlp_backward<F>(F*, F*, F*, F*, F*, F*, F*, F*, const F*, const F*,         \
                                      const F*, const F*, const F*, const F*, const F*, const F*,  \
                                      i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

void gelu_mul_forward(float* out, const float* a, const float* b, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) { rows::gelu_mul(out + i, a + i, b ? b + i : nullptr, len); });
}

void gelu_mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, i64 n) {
  rows::for_spans(n, [&](i64 i, i64 len) {
    rows::gelu_mul_grad(da ? da + i : nullptr, db ? db + i : nullptr, dout + i, a + i, b ? b + i : nullptr, len,
                        /*accumulate=*/true);
  });
}

void gated_mlp_forward(float* y, float* h1, float* h2, float* g, const float* x, const float* w1,
                       const float* b1, const float* w2, const float* b2, const float* w3,
                       const float* b3, i64 M, i64 D, i64 F) {
  linear_forward(h1, x, w1, b1, M, D, F);
  linear_forward(h2, x, w2, b2, M, D, F);
  gelu_mul_forward(g, h1, h2, M * F);
  linear_forward(y, g, w3, b3, M, F, D);
}

void gated_mlp_backward(float* dx, float* dw1, float* db1, float* dw2, float* db2, float* dw3,
                        float* db3, float* work, const float* dy, const float* x, const float* h1,
                        const float* h2, const float* g, const float* w1, const float* w2,
                        const float* w3, i64 M, i64 D, i64 F) {
  float* dg = work;
  float* dh1 = work + M * F;
  float* dh2 = work + 2 * M * F;
  // dg = dy W3ᵀ (written, not accumulated: sgemm with beta 0 through a zeroed buffer is avoided)
  #pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < M * F; ++i) dg[i] = 0.0f;
  linear_backward(dg, dw3, db3, dy, g, w3, M, F, D);
  // fused: dh1 = dg ⊙ h2 ⊙ gelu'(h1), dh2 = dg ⊙ gelu(h1) (written)
  rows::for_spans(M * F, [&](i64 i, i64 len) {
    rows::gelu_mul_grad(dh1 + i, dh2 + i, dg + i, h1 + i, h2 + i, len, /*accumulate=*/false);
  });
  linear_backward(dx, dw1, db1, dh1, x, w1, M, D, F);
  linear_backward(dx, dw2, db2, dh2, x, w2, M, D, F);
}

}  // namespace fast

}  // namespace scanshard::kernels
