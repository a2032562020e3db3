// kernels/rwkv6.hpp — the RWKV-6 (Finch) matrix-state WKV (DESIGN §3.3): reference (sequential per
// token) and fast (chunked: cumulative log decay inside a chunk, small matrix products, state
// passed between chunks; OpenMP over batch × heads), backward of both, and the sequence-chunk API
// (incoming/outgoing state + per-head decay summary) for sequence sharding (DESIGN §4).
//
// For: the WKV core of the RWKV-6 time mix. Not for: the data-dependent token shift, the LoRAs,
// GroupNorm and the projections (rwkv_blocks.hpp composes those), communication (train/).
// Convention: kernels.hpp. Shapes: r, k, v, logw, y [B,T,H,N] (= [B,T,D], D = H·N); u [H,N];
// state [B,H,N,N] with S[i][j], i the key channel and j the value channel.
//
// The decay enters as logw = log w_t = −exp(d_t) ≤ 0 (the caller computes it from d_t; passing the
// log keeps decays within 1e-6 of 1 and far below e^{−87} exact). Per head, token by token:
//   y_t[j] = Σ_i r_t[i] (S[i][j] + u[i] k_t[i] v_t[j])
//   S[i][j] ← w_t[i] S[i][j] + k_t[i] v_t[j]
// Chunked form (fast): with A_t = Σ_{s<t} logw_s inside a chunk (A_0 = 0) and S_0 its incoming
// state,
//   y_t = (r_t ⊙ e^{A_t}) S_0 + Σ_{s<t} [Σ_i r_t[i] e^{A_t[i]} · k_s[i] e^{−A_{s+1}[i]}] v_s
//         + (Σ_i r_t[i] u[i] k_t[i]) v_t
//   S_L = diag(e^{A_L}) S_0 + Σ_s (k_s ⊙ e^{A_L − A_{s+1}})ᵀ v_s
// Every exp argument is ≤ 0 except e^{−A_{s+1}}; a chunk is cut short (down to one token) so that
// −A ≤ 60 wherever that factor is used, hence nothing overflows even for tiny decays.
// At head sizes 32 and 64 the forward evaluates the same chunk as a recurrence on the rescaled
// state S̃_t = S_0 + Σ_{s<t} (k_s ⊙ e^{−A_{s+1}})ᵀ v_s, y_t = (r_t ⊙ e^{A_t}) S̃_t + (Σ r u k) v_t,
// S_L = diag(e^{A_L}) S̃_{L−1} + k_{L−1}ᵀ v_{L−1}, with tiles of S̃ held in registers for the chunk
// (2N² multiply-adds per token instead of the score form's ~3N²; kernels/rwkv6.cpp).
//
// Sequence chunks: state_in nullable (= zero state). The decay summary of a chunk is
// log_decay[b,h,i] = Σ_t logw_t[i] = log of the diagonal of Π w. A runner either passes the state
// rank to rank, or runs every chunk from the zero state, composes with wkv6_state_combine
// (S_out = diag(e^{log_decay}) S_in + S_local) and re-runs the chunk with its true state. Backward
// mirrors it: dS_in = diag(e^{log_decay}) dS_out + (local part), wkv6_grad_state_combine.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

inline constexpr i64 kWkv6Chunk = 16;  // default chunk length of the fast kernel (fastest in bench_rwkv)
// Shortest chunk the fast kernel runs: a requested chunk below it runs as chunks of this length
// (same results within rounding). Chunks of 1-3 tokens pay each chunk's fixed work (decay
// factors, tile copies, S_0 g and dS v as dot products) per token: at runtime head sizes their
// backward was 0.6-0.9x the sequential reference (docs/kernels-wkv-2026-12-07.md, 5.2 and 6).
inline constexpr i64 kWkv6MinChunk = 4;

namespace ref {
// Sequential per (b, h, t). state_in, state_out [B,H,N,N] nullable.
template <class F>
void wkv6_forward(F* y, F* state_out, const F* r, const F* k, const F* v, const F* logw,
                  const F* u, const F* state_in, i64 B, i64 T, i64 H, i64 N);
// dr, dk, dv, dlogw [B,T,H,N], du [H,N] accumulate (+=); dstate_in [B,H,N,N] written (=) when
// non-null; dstate_out nullable (= 0). Forward states are recomputed (T+1 states per head).
template <class F>
void wkv6_backward(F* dr, F* dk, F* dv, F* dlogw, F* du, F* dstate_in, const F* dy,
                   const F* dstate_out, const F* r, const F* k, const F* v, const F* logw,
                   const F* u, const F* state_in, i64 B, i64 T, i64 H, i64 N);
}  // namespace ref

namespace fast {
// Chunked (chunk ≥ 1 tokens, run as max(chunk, kWkv6MinChunk); cut shorter where the decay
// demands); same contracts as ref.
// Head sizes N ≤ 256 (N = 32, 64 compiled as constants); larger N falls back to the reference.
void wkv6_forward(float* y, float* state_out, const float* r, const float* k, const float* v,
                  const float* logw, const float* u, const float* state_in, i64 B, i64 T, i64 H,
                  i64 N, i64 chunk = kWkv6Chunk);
void wkv6_backward(float* dr, float* dk, float* dv, float* dlogw, float* du, float* dstate_in,
                   const float* dy, const float* dstate_out, const float* r, const float* k,
                   const float* v, const float* logw, const float* u, const float* state_in, i64 B,
                   i64 T, i64 H, i64 N, i64 chunk = kWkv6Chunk);
}  // namespace fast

// ─── sequence-chunk API (fast kernels) ───────────────────────────────────────────────────────
// Forward of one sequence chunk of T tokens: y [B,T,H,N]; state_out [B,H,N,N] nullable;
// log_decay [B,H,N] nullable = Σ_t logw; state_in nullable (= zero).
void wkv6_chunk_forward(float* y, float* state_out, float* log_decay, const float* r,
                        const float* k, const float* v, const float* logw, const float* u,
                        const float* state_in, i64 B, i64 T, i64 H, i64 N,
                        i64 chunk = kWkv6Chunk);
// Backward of one sequence chunk: accumulates dr, dk, dv, dlogw, du; writes dstate_in (nullable);
// dstate_out = dL/d(state_out) from later chunks (nullable = 0).
void wkv6_chunk_backward(float* dr, float* dk, float* dv, float* dlogw, float* du,
                         float* dstate_in, const float* dy, const float* dstate_out,
                         const float* r, const float* k, const float* v, const float* logw,
                         const float* u, const float* state_in, i64 B, i64 T, i64 H, i64 N,
                         i64 chunk = kWkv6Chunk);
// out[b,h,i,j] = e^{log_decay[b,h,i]} in[b,h,i,j] + local[b,h,i,j]; in nullable (= 0); out may
// alias local.
void wkv6_state_combine(float* out, const float* in, const float* local, const float* log_decay,
                        i64 B, i64 H, i64 N);
// dstate_in = e^{log_decay} ⊙_rows dstate_out + local_dstate_in (local: computed with
// dstate_out = 0). dstate_in may alias local_dstate_in.
void wkv6_grad_state_combine(float* dstate_in, const float* dstate_out,
                             const float* local_dstate_in, const float* log_decay, i64 B, i64 H,
                             i64 N);

}  // namespace scanshard::kernels
