// kernels/embedding.hpp — token embedding, the tied output head (logits = x Eᵀ) and a fused,
// numerically stable softmax cross-entropy.
//
// For: the first and last op of every model. An untied head (RWKV) is a plain linear
// (linear.hpp, W [D,V]) followed by softmax_ce_*. Not for: the mean over tokens and the loss
// scaling — pass dlosses[m] = 1/M (or any weights) to the backward.
// Convention: kernels.hpp. Shapes: tokens/targets int32 [M] with M = B·T, table E [V,D].
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

namespace ref {
// out[m,:] = scale · E[tokens[m], :]          (scale = 1, or √D for RecurrentGemma)
template <class F>
void embedding_forward(F* out, const std::int32_t* tokens, const F* table, i64 M, i64 D, F scale);
// dE[tokens[m], :] += scale · dout[m, :]
template <class F>
void embedding_backward(F* dtable, const F* dout, const std::int32_t* tokens, i64 M, i64 D, F scale);

// logits[m,v] = Σ_d x[m,d] E[v,d]
template <class F>
void logits_tied_forward(F* logits, const F* x, const F* table, i64 M, i64 D, i64 V);
// dx[m,d] += Σ_v dlogits[m,v] E[v,d];  dE[v,d] += Σ_m dlogits[m,v] x[m,d]
template <class F>
void logits_tied_backward(F* dx, F* dtable, const F* dlogits, const F* x,
                          const F* table, i64 M, i64 D, i64 V);

// probs[m,:] = softmax(logits[m,:]);  losses[m] = −log probs[m, targets[m]]
//   computed as  logsumexp(l) − l[target]  with the max subtracted (stable).
// probs may alias logits (in place). targets[m] < 0 means "no target": loss 0, no gradient.
template <class F>
void softmax_ce_forward(F* losses, F* probs, const F* logits, const std::int32_t* targets,
                        i64 M, i64 V);
// dlogits[m,v] += dlosses[m] · (probs[m,v] − [v == targets[m]])
template <class F>
void softmax_ce_backward(F* dlogits, const F* dlosses, const F* probs,
                         const std::int32_t* targets, i64 M, i64 V);
}  // namespace ref

namespace fast {
void embedding_forward(float* out, const std::int32_t* tokens, const float* table, i64 M, i64 D, float scale);
void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens, i64 M, i64 D, float scale);
void logits_tied_forward(float* logits, const float* x, const float* table, i64 M, i64 D, i64 V);
void logits_tied_backward(float* dx, float* dtable, const float* dlogits, const float* x,
                          const float* table, i64 M, i64 D, i64 V);
void softmax_ce_forward(float* losses, float* probs, const float* logits, const std::int32_t* targets,
                        i64 M, i64 V);
// Same as ref, and may run in place: dlogits == probs overwrites probs with the gradient
// (then the += is relative to nothing: dlogits[m,v] = dlosses[m]·(probs − onehot)).
void softmax_ce_backward(float* dlogits, const float* dlosses, const float* probs,
                         const std::int32_t* targets, i64 M, i64 V);

// ---- vocab-parallel forms (Megatron): this rank holds table rows / logit columns [v0, v0+Vl) --
// out[m,:] = scale · E[tokens[m] − v0, :] if v0 ≤ tokens[m] < v0+Vl, else 0 (partial sums over ranks)
void embedding_shard_forward(float* out, const std::int32_t* tokens, const float* table, i64 v0, i64 Vl, i64 M, i64 D,
                             float scale);
// dE[tokens[m] − v0, :] += scale · dout[m, :] for the tokens in range
void embedding_shard_backward(float* dtable, const float* dout, const std::int32_t* tokens, i64 v0, i64 Vl, i64 M,
                              i64 D, float scale);
// stats[m] = (max_v l[m,v], Σ_v exp(l[m,v] − max)) over the local columns
void softmax_stats(float* stats, const float* logits, i64 M, i64 Vl);
// Merges stats of two vocab shards in place: io ← merge(io, in), n rows (an MPI user reduction).
void merge_softmax_stats(float* io, const float* in, i64 n);
// With the merged stats: lse = max + log Σ; probs = exp(l − lse) (may alias logits);
// losses[m] = lse − l[targets[m] − v0] when the target is a local column, else 0 (targets < 0: 0).
void softmax_ce_shard_finish(float* losses, float* probs, const float* logits, const float* stats,
                             const std::int32_t* targets, i64 v0, i64 M, i64 Vl);
// dlogits[m,v] = dlosses[m] · (probs[m,v] − [v + v0 == targets[m]])   (overwrites; rows with a
// negative target get zero)
void softmax_ce_shard_backward(float* dlogits, const float* dlosses, const float* probs, const std::int32_t* targets,
                               i64 v0, i64 M, i64 Vl);
}  // namespace fast

}  // namespace scanshard::kernels
