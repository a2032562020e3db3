// kernels/mlp.hpp — the gated MLP of Griffin: y = (gelu_tanh(x W1 + b1) ⊙ (x W2 + b2)) W3 + b3,
// and its elementwise core gelu(a) ⊙ b.
//
// For: the MLP half of every Griffin / Hawk / MQA block, and the gate of the recurrent branch
// (gelu alone). Not for: RWKV channel mix.
// Convention: kernels.hpp. Shapes: x, y [M,D]; W1, W2 [D,F]; W3 [F,D]; saved h1, h2, g [M,F].
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// out = gelu_tanh(a) ⊙ b
template <class F> void gelu_mul_forward(F* out, const F* a, const F* b, i64 n);
// da += dout ⊙ b ⊙ gelu'(a);  db += dout ⊙ gelu(a)   (b == nullptr: out = gelu(a), da only)
template <class F> void gelu_mul_backward(F* da, F* db, const F* dout, const F* a, const F* b, i64 n);

// h1 = x W1 + b1;  h2 = x W2 + b2;  g = gelu(h1) ⊙ h2;  y = g W3 + b3
template <class F>
void gated_mlp_forward(F* y, F* h1, F* h2, F* g, const F* x, const F* w1, const F* b1, const F* w2,
                       const F* b2, const F* w3, const F* b3, i64 M, i64 D, i64 Fh);
// work: scratch [3·M·F]
template <class F>
void gated_mlp_backward(F* dx, F* dw1, F* db1, F* dw2, F* db2, F* dw3, F* db3, F* work, const F* dy,
                        const F* x, const F* h1, const F* h2, const F* g, const F* w1, const F* w2,
                        const F* w3, i64 M, i64 D, i64 Fh);
}  // namespace ref

namespace fast {
void gelu_mul_forward(float* out, const float* a, const float* b, i64 n);
void gelu_mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, i64 n);
void gated_mlp_forward(float* y, float* h1, float* h2, float* g, const float* x, const float* w1,
                       const float* b1, const float* w2, const float* b2, const float* w3,
                       const float* b3, i64 M, i64 D, i64 F);
// work: scratch [3·M·F] (dg, dh1, dh2)
void gated_mlp_backward(float* dx, float* dw1, float* db1, float* dw2, float* db2, float* dw3,
                        float* db3, float* work, const float* dy, const float* x, const float* h1,
                        const float* h2, const float* g, const float* w1, const float* w2,
                        const float* w3, i64 M, i64 D, i64 F);
}  // namespace fast

}  // namespace scanshard::kernels
