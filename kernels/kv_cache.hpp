// kernels/kv_cache.hpp — the attention of a decode step: one new query per sequence against a
// key/value cache, for global attention (the cache grows with the context) and local attention
// (a ring buffer of window + 1 rows, so it never holds more than the window), with multi-query /
// grouped-query K/V heads.
//
// For: train/decode.cpp (token-by-token generation). Not for: the training forward over a whole
// sequence (attention.hpp: its causal mask is this kernel's cache contents), the projections and
// RoPE (linear.hpp, attention.hpp), communication.
// Convention: kernels.hpp. Shapes: q, out [B,H,N]; cache k, v [B,C,Hk,N] with C rows of capacity,
// of which rows [0, n) hold keys (n ≤ C; which position sits in which row does not matter to the
// softmax). Query head h uses K/V head h / (H/Hk), as in attention.hpp.
//
// Ring rule (kv_cache_row): the token at position p is stored in row p mod C. A global cache has
// C ≥ the longest context, so row = p. A local cache has C = W + 1: after writing position p its
// rows hold exactly positions max(0, p−W) … p — the W + 1 keys attention.hpp lets query p see.
#pragma once
#include <algorithm>

#include "kernels/kernels.hpp"

namespace scanshard::kernels {

// Rows a layer's cache needs for contexts of up to max_len tokens: W + 1 (local), max_len (global).
[[nodiscard]] constexpr i64 kv_cache_capacity(i64 window, i64 max_len) noexcept {
  return window > 0 ? std::min(window + 1, max_len) : max_len;
}
// The row holding position p.
[[nodiscard]] constexpr i64 kv_cache_row(i64 pos, i64 capacity) noexcept { return pos % capacity; }
// Rows holding keys once position p has been written.
[[nodiscard]] constexpr i64 kv_cache_valid(i64 pos, i64 capacity) noexcept { return std::min(pos + 1, capacity); }

namespace ref {
// s_j = (q · k_j)/√N for the n valid rows j;  p = softmax_j(s);  out = Σ_j p_j v_j
template <class F>
void attention_decode(F* out, const F* q, const F* k, const F* v, i64 B, i64 C, i64 n, i64 H, i64 Hk, i64 N);
}  // namespace ref

namespace fast {
// Same contract. Per (sequence, K/V head), OpenMP over them: the G = H/Hk query heads that share
// the K/V head as GEMMs over the cache rows, S [G×n] = Q·Kᵀ/√N (BLAS calls over blocks of
// `key_block` keys; key_block ≥ 1, ≥ n: one call), softmax rows, O [G×N] = P·V (one call); with
// `gemv`, one GEMV per query head and product instead (no blocks). The shape — G, the blocks,
// GEMV or GEMM — is the caller's, from program/inference.hpp decode_attention_gemms, which the
// simulator prices. Returns the BLAS calls it made (all pairs).
i64 attention_decode(float* out, const float* q, const float* k, const float* v, i64 B, i64 C, i64 n, i64 H, i64 Hk, i64 N,
                     i64 key_block, bool gemv);
}  // namespace fast

}  // namespace scanshard::kernels
