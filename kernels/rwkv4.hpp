// kernels/rwkv4.hpp — the RWKV-4 WKV recurrence (DESIGN §3.2) with a running maximum exponent, its
// backward, the sequence-chunk API (incoming/outgoing state + decay summary) for sequence
// sharding (DESIGN §4), and the RWKV token shift.
//
// For: RWKV-4 time mix (the WKV core) and the token-shift mix of RWKV-4 time/channel mix and of
// RWKV-6 channel mix. Not for: the projections (linear.hpp), the RWKV-6 matrix-state WKV
// (rwkv6.hpp), the block composition (rwkv_blocks.hpp), communication (train/).
// Convention: kernels.hpp. Shapes: k, v, y [B,T,D]; decay, bonus [D].
//
// WKV-4 (per batch row b and channel c; w = exp(decay) ≥ 0, u = bonus):
//   wkv_t = (Σ_{i<t} e^{−(t−1−i)w + k_i} v_i + e^{u+k_t} v_t) / (Σ_{i<t} e^{−(t−1−i)w + k_i} + e^{u+k_t})
// State before token t: α_t = Σ_{i<t} e^{−(t−1−i)w + k_i} v_i, β_t = Σ_{i<t} e^{−(t−1−i)w + k_i},
// stored scaled by a running maximum exponent p: α = a·e^p, β = b·e^p, so no exp overflows
// (every exp below has an argument ≤ 0) and b ≥ 1 once a token has been absorbed.
//   α_{t+1} = e^{−w} α_t + e^{k_t} v_t,   β_{t+1} = e^{−w} β_t + e^{k_t}
//
// Sequence chunks. A state tensor is [3,B,D]: planes a (scaled numerator), b (scaled denominator),
// p (exponent). The zero state is a = b = 0, p = −1e38 (kWkv4NoState); state_in == nullptr means
// the zero state. The gradient of a state is [2,B,D]: dL/da and dL/db with p held fixed (so it
// is as well scaled as the state). The decay summary of a chunk of T tokens is log Π e^{−w} =
// −T·w per channel, [D]. A runner that splits the sequence over ranks either passes the state
// rank to rank, or runs every chunk from the zero state, composes the summaries with
// wkv4_state_combine (state_out = e^{log_decay}·state_in + local, an affine map), and re-runs the
// chunk with its true incoming state. Backward mirrors it: dstate_in is affine in dstate_out
// (wkv4_grad_state_combine).
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

inline constexpr float kWkv4NoState = -1e38f;  // p of the zero state

namespace ref {
// Sequential per (b, c), obvious loops, std::exp. state_in / state_out [3,B,D] nullable.
template <class F>
void wkv4_forward(F* y, F* state_out, const F* k, const F* v, const F* decay, const F* bonus,
                  const F* state_in, i64 B, i64 T, i64 D);
// dk, dv [B,T,D], ddecay, dbonus [D] accumulate (+=); dstate_in [2,B,D] is written (=) when
// non-null; dstate_out [2,B,D] nullable (= 0). Forward states are recomputed from the inputs.
template <class F>
void wkv4_backward(F* dk, F* dv, F* ddecay, F* dbonus, F* dstate_in, const F* dy,
                   const F* dstate_out, const F* k, const F* v, const F* decay, const F* bonus,
                   const F* state_in, i64 B, i64 T, i64 D);
}  // namespace ref

// Forward checkpoints: the state (a, b, q) before every token t = s·kWkv4CheckpointTokens,
// s = 1 … wkv4_checkpoints(T), laid out [B, wkv4_checkpoints(T), 3, D] — the backward's segment
// starts, so with them it skips its recomputing pass and streams k, v once. 3 floats per 16 tokens
// per channel: 3/32 of the k, v bytes. (The segment start 0 is state_in.) Unlike a state tensor,
// q is the lazy forward's reference exponent, not the running maximum (α = a·e^q, b ≥ 1): the
// forward then needs no running maximum, and the backward rescales its adjoint at each segment
// end from q to the recomputed maximum (one exp per channel per segment).
inline constexpr i64 kWkv4CheckpointTokens = 16;
inline constexpr i64 wkv4_checkpoints(i64 T) { return T > 0 ? (T - 1) / kWkv4CheckpointTokens : 0; }
inline constexpr i64 wkv4_checkpoint_floats(i64 B, i64 T, i64 D) { return 3 * B * D * wkv4_checkpoints(T); }

namespace fast {
// Same contracts as ref: OpenMP over (b, channel block), vectorised over channels, exp_fast,
// one exp per step of each recurrence (one of the two scaled terms is always e^0 = 1). With
// AVX-512 the forward keeps the state against a lazily decaying reference instead (one exp per
// token, converted back to the max form at the end; see rwkv4.cpp) and the backward uses explicit
// AVX-512 rows with per-channel data interleaved by 16-channel group.
// ckpt (nullable, wkv4_checkpoint_floats(B, T, D)): the forward writes the checkpoints, the
// backward reads them (written by the forward of the same k, v, decay, bonus, state_in) instead
// of recomputing them.
void wkv4_forward(float* y, float* state_out, const float* k, const float* v, const float* decay,
                  const float* bonus, const float* state_in, i64 B, i64 T, i64 D,
                  float* ckpt = nullptr);
void wkv4_backward(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in,
                   const float* dy, const float* dstate_out, const float* k, const float* v,
                   const float* decay, const float* bonus, const float* state_in, i64 B, i64 T,
                   i64 D, const float* ckpt = nullptr);
}  // namespace fast

// ─── sequence-chunk API (fast kernels) ───────────────────────────────────────────────────────
// Forward of one chunk of T tokens: y [B,T,D]; state_out [3,B,D] (nullable); log_decay [D]
// (nullable) = −T·exp(decay); state_in [3,B,D] (nullable = zero state); ckpt as fast::.
void wkv4_chunk_forward(float* y, float* state_out, float* log_decay, const float* k,
                        const float* v, const float* decay, const float* bonus,
                        const float* state_in, i64 B, i64 T, i64 D, float* ckpt = nullptr);
// Backward of one chunk: accumulates dk, dv, ddecay, dbonus; writes dstate_in [2,B,D] (nullable)
// = dL/d(state_in); dstate_out [2,B,D] = dL/d(state_out) from the later chunks (nullable = 0);
// ckpt (nullable) from the chunk forward with the same state_in.
void wkv4_chunk_backward(float* dk, float* dv, float* ddecay, float* dbonus, float* dstate_in,
                         const float* dy, const float* dstate_out, const float* k, const float* v,
                         const float* decay, const float* bonus, const float* state_in, i64 B,
                         i64 T, i64 D, const float* ckpt = nullptr);
// out = e^{log_decay} ⊙ in + local (as real α, β), rescaled to a running maximum. [3,B,D].
// in == nullptr means the zero state (out = local). out may alias local.
void wkv4_state_combine(float* out, const float* in, const float* local, const float* log_decay,
                        i64 B, i64 D);
// dα_in = e^{log_decay} dα_out + local_dα_in (the local part computed with dstate_out = 0), in
// the scaled representation: d_in = e^{p_in + log_decay − p_out} d_out + local_d_in.
// dstate [2,B,D]; state_in, state_out [3,B,D] are the true states of the chunk. out may alias
// local.
void wkv4_grad_state_combine(float* dstate_in, const float* dstate_out,
                             const float* local_dstate_in, const float* state_in,
                             const float* state_out, const float* log_decay, i64 B, i64 D);

// ─── token shift ─────────────────────────────────────────────────────────────────────────────
// out[b,t,:] = μ ⊙ x[b,t,:] + (1 − μ) ⊙ x[b,t−1,:], x[b,−1,:] = prev[b,:] (prev [B,D] nullable
// = zero: the first token of the sequence, or the last token of the previous chunk = 1-token halo).
namespace ref {
template <class F>
void token_shift_forward(F* out, const F* x, const F* prev, const F* mu, i64 B, i64 T, i64 D);
// dx += μ⊙dout (own token) + (1−μ)⊙dout of the next token; dprev += (1−μ)⊙dout[t=0];
// dmu += dout ⊙ (x − x_prev). dx, dprev, dmu nullable.
template <class F>
void token_shift_backward(F* dx, F* dprev, F* dmu, const F* dout, const F* x, const F* prev,
                          const F* mu, i64 B, i64 T, i64 D);
}  // namespace ref
namespace fast {
void token_shift_forward(float* out, const float* x, const float* prev, const float* mu, i64 B,
                         i64 T, i64 D);
void token_shift_backward(float* dx, float* dprev, float* dmu, const float* dout, const float* x,
                          const float* prev, const float* mu, i64 B, i64 T, i64 D);
}  // namespace fast

}  // namespace scanshard::kernels
