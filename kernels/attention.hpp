// kernels/attention.hpp — RoPE (rotate-half, on the first `rot` dims of each head) and causal
// multi-query / multi-head attention, local (window W: query t sees keys t−W … t, W+1 keys) or
// global (W = 0), with the document mask; forward and backward.
//
// For: Griffin's local MQA block and the MQA transformer baseline (DESIGN §3.1).
// Not for: projections (linear.hpp), ring attention across ranks (train/), bf16.
// Convention: kernels.hpp. Shapes: q, out [B,T,H,N]; k, v [B,T,Hk,N] (Hk divides H; query head
// h uses kv head h / (H/Hk)); saved lse [B,H,T] (log-sum-exp of each score row); reset [B,T]
// nullable; pos [B,T] int32 positions for RoPE (nullable = t).
//
// attention_forward / _backward materialise no T×T matrix: the reference walks one score row at
// a time, the fast version streams key blocks with an online softmax (running max and sum) and
// recomputes the probabilities in backward from lse. The materialized variant at the end of
// `fast` does write (and keep) the whole probability matrix, as unfused Megatron-LM does.
#pragma once
#include "kernels/dropout.hpp"
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

// Dropout of the attention probabilities inside the blocked kernels (FlashAttention's dropout_p,
// Dao et al. 2022 §3.1: the mask is regenerated in backward, nothing is stored). p_{t,τ} of batch
// row b, head h, row t and key row τ is kept iff dropout_keep(dropout_row(key, first_seq + b,
// pos0 + t), (head0 + h)·seq_len + pos0 + τ) (kernels/dropout.hpp), the very mask the materialized
// core draws, so both kernels compute one model. q/k/v rows share positions: row 0 is global
// position pos0. The softmax statistics (lse) are those of the undropped probabilities:
//   out_t = Σ_τ p_{t,τ} z_{t,τ} v_τ,  z = keep / (1 − p);  backward dp = z·(dout_t · v_τ).
struct AttnDropout {
  double p = 0;             // drop probability; 0: no dropout (the other fields are unused)
  std::uint64_t key = 0;    // dropout_key(seed, step, layer, DropSite::attn_probs)
  i64 first_seq = 0;        // global batch index of batch row 0
  i64 pos0 = 0;             // global position of row 0
  i64 head0 = 0;            // global index of head 0 (tensor shards hold heads head0 …)
  i64 seq_len = 0;          // the global sequence length (channel = global head·seq_len + key position)
  // The hash row of query row t of batch row b, and the channel of (head h, key row τ): the one
  // definition of the mask, which the materialized core's executor step draws from too.
  std::uint64_t row(i64 b, i64 t) const { return dropout_row(key, first_seq + b, pos0 + t); }
  i64 channel(i64 h, i64 tau) const { return (head0 + h) * seq_len + pos0 + tau; }
  // z of one pair: 0 or 1/(1 − p)
  double factor(std::uint64_t row, i64 h, i64 tau) const {
    return dropout_keep(row, channel(h, tau), dropout_threshold(p)) ? 1.0 / (1.0 - p) : 0.0;
  }
};

namespace ref {
// With n = rot/2, f_j = base^{−2j/rot}, θ = pos·f_j, for j < n (dims ≥ rot pass through):
//   y_j = x_j cos θ − x_{j+n} sin θ;   y_{j+n} = x_{j+n} cos θ + x_j sin θ
template <class F>
void rope_forward(F* y, const F* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base);
// dx += Rᵀ dy (rotation by −θ)
template <class F>
void rope_backward(F* dx, const F* dy, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base);

// s_{t,τ} = (q_t · k_τ)/√N over visible τ (τ ≤ t, t − τ ≤ W if W > 0, no document start in (τ, t]);
// p = softmax_τ(s);  out_t = Σ_τ p_{t,τ} v_τ;  lse_t = log Σ_τ e^{s_{t,τ}}
// With dropout (drop.p > 0) p_{t,τ} in out is multiplied by z_{t,τ} (AttnDropout).
template <class F>
void attention_forward(F* out, F* lse, const F* q, const F* k, const F* v, const std::uint8_t* reset,
                       i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W, const AttnDropout& drop = {});
// D_t = dout_t · out_t;  dp = z dout_t · v_τ;  ds = p (dp − D_t)   (z = 1 without dropout)
// dq_t += Σ_τ ds k_τ/√N;  dk_τ += Σ_t ds q_t/√N;  dv_τ += Σ_t p z dout_t
template <class F>
void attention_backward(F* dq, F* dk, F* dv, const F* dout, const F* out, const F* lse, const F* q,
                        const F* k, const F* v, const std::uint8_t* reset, i64 B, i64 T, i64 H,
                        i64 Hk, i64 N, i64 W, const AttnDropout& drop = {});
}  // namespace ref

namespace fast {
// Queries per task of the blocked kernel: each task computes its whole tile of queries against
// every key any of them sees (program/lower.cpp prices those pairs: kAttentionQueryTile).
inline constexpr std::int64_t kAttentionQueryBlock = 32;
void rope_forward(float* y, const float* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base);
void rope_backward(float* dx, const float* dy, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base);
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W,
                       const AttnDropout& drop = {});
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W,
                        const AttnDropout& drop = {});

// Materialized attention (Megatron-LM's unfused core, plan `attention: materialized`): the
// probabilities of every (query, key) pair are written to memory and kept for backward —
// mathematically the attention above. Queries are rows q0..T−1 of q (the local rows after a halo
// of q0 key-only rows; rows below q0 of out / dq are not touched), keys all T rows of k, v.
// P [B, H, T−q0, T]: p_{t,τ} = softmax_τ((q_t·k_τ)/√N) over visible τ, 0 elsewhere.
void attention_scores_forward(float* P, const float* q, const float* k, const std::uint8_t* reset, i64 B, i64 T,
                              i64 q0, i64 H, i64 Hk, i64 N, i64 W);
// out_t = Σ_τ p_{t,τ} v_τ
void attention_context_forward(float* out, const float* P, const float* v, i64 B, i64 T, i64 q0, i64 H, i64 Hk, i64 N);
// dP = dout·vᵀ (written, [B, H, T−q0, T]);  dv += Pᵀ·dout
void attention_context_backward(float* dP, float* dv, const float* dout, const float* P, const float* v, i64 B, i64 T,
                                i64 q0, i64 H, i64 Hk, i64 N);
// dS = P ⊙ (dP − Σ_τ P ⊙ dP) (overwrites dP);  dq += dS·k/√N;  dk += dSᵀ·q/√N
void attention_scores_backward(float* dq, float* dk, float* dP, const float* P, const float* q, const float* k, i64 B,
                               i64 T, i64 q0, i64 H, i64 Hk, i64 N);
}  // namespace fast

}  // namespace scanshard::kernels
