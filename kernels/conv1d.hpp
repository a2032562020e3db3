// kernels/conv1d.hpp — causal depthwise Conv1D (width K = 4 in Griffin) with bias, the
// document-boundary mask and a sequence-chunk API.
//
// For: the temporal conv of the recurrent block (DESIGN §3.1), and sequence sharding (§4: a chunk
// needs the last K−1 inputs of its left neighbour). Not for: dense convolutions.
// Convention: kernels.hpp. Shapes: x, y [B,T,R]; w [K,R] (w[K−1] multiplies the current token);
// b [R]; reset [B,T] uint8 (nullable); conv state [B,K−1,R], entry k is the input at position
// k − (K−1) relative to the chunk start (k = K−2 is the token just before the chunk).
//
// Masking: token t sees x_{t−j} (j = 0..K−1) only if no document starts at positions t−j+1 … t.
// The outgoing state stores the last K−1 inputs already masked for a future token (zero when a
// document starts after them inside this chunk), so chaining chunks needs no extra flags:
// chunk(x₁ ‖ x₂) == chunk₂(chunk₁(x₁).state_out, x₂) exactly.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// y[b,t,r] = bias[r] + Σ_{j=0}^{K−1} w[K−1−j, r] · x[b,t−j,r] · visible(t, j)
// state_out (nullable) = masked last K−1 inputs; state_in nullable = zeros.
template <class F>
void conv1d_forward(F* y, F* state_out, const F* x, const F* state_in, const std::uint8_t* reset,
                    const F* w, const F* bias, i64 B, i64 T, i64 R, i64 K);
// dx, dstate_in, dw, dbias accumulate (+=, each nullable); dstate_out nullable = no gradient
// arriving from the next chunk.
template <class F>
void conv1d_backward(F* dx, F* dstate_in, F* dw, F* dbias, const F* dy, const F* dstate_out,
                     const F* x, const F* state_in, const std::uint8_t* reset, const F* w, i64 B,
                     i64 T, i64 R, i64 K);
}  // namespace ref

namespace fast {
void conv1d_forward(float* y, float* state_out, const float* x, const float* state_in,
                    const std::uint8_t* reset, const float* w, const float* bias, i64 B, i64 T,
                    i64 R, i64 K);
void conv1d_backward(float* dx, float* dstate_in, float* dw, float* dbias, const float* dy,
                     const float* dstate_out, const float* x, const float* state_in,
                     const std::uint8_t* reset, const float* w, i64 B, i64 T, i64 R, i64 K);
}  // namespace fast

}  // namespace scanshard::kernels
