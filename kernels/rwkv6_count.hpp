// kernels/rwkv6_count.hpp — the multiply-class operation count of the WKV-6 forward's two chunk
// forms (kernels/rwkv6.cpp: score form at runtime head sizes, tiled recurrence at 32 and 64), as
// pure functions of the head size and chunk length: bench_rwkv prints the forward's time against
// the one the kernel runs beside the issue's own roofline (which counts the sequential 2N²).
// Not for: the model's FLOPs (program/ computes those once).
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

// Multiply-class vector lane operations (multiplies and multiply-adds) per token and head that
// the chunked forward must do at full chunks of L tokens, head size N — the hand count of
// docs/kernels-wkv-2026-12-07.md §7.4, against the sequential count 2N² multiply-adds that the
// bench's own roofline uses (12064 vs 8192 at N = 64, L = 16). The count of the algorithm, not of
// any one implementation (the kernel computes whole score rows and pads partial vectors).
constexpr double wkv6_chunked_forward_mul_ops(i64 N, i64 L) {
  const double n = double(N), l = double(L);
  return n * n                // (r_t ⊙ e^{A_t}) S_0
         + n * n + n * n / l  // the state update KHᵀV and the e^{A_L} scale of S_0 (once per chunk)
         + l * n              // score rows P[t][·] = RT_t KTᵀ, whole rows of L
         + (l + 1) / 2 * n    // Σ_{s≤t} P[t][s] v_s
         + 3 * 9 * n + 3 * n  // three exps per element (range reduction 2, polynomial 6, scale 1), 3 products
         + 2 * n;             // the diagonal term Σ_i r_t[i] u[i] k_t[i]
}

// The tiled recurrence (docs/kernels-wkv6-tiled-2026-12-07.md): per token y_t += RT_t S̃_t and
// S̃ += KT_tᵀ v_t (N² multiply-adds each), per chunk S_L = diag(e^{A_L}) S̃ + kᵀv (2N²), two exps per
// element (9 each, as above) and the two products RT = r ⊙ e^{A_t}, KT = k ⊙ e^{−A_{t+1}}, the
// diagonal term 2N. 10112 at N = 64, L = 16.
constexpr double wkv6_tiled_forward_mul_ops(i64 N, i64 L) {
  const double n = double(N), l = double(L);
  return 2 * n * n + 2 * n * n / l + 2 * 9 * n + 2 * n + 2 * n;
}

// The head sizes whose forward runs the tiled recurrence (kernels/rwkv6.cpp ForwardTask).
constexpr bool wkv6_forward_tiled(i64 N) { return N == 32 || N == 64; }

// The count of the form the forward runs at head size N.
constexpr double wkv6_forward_mul_ops(i64 N, i64 L) {
  return wkv6_forward_tiled(N) ? wkv6_tiled_forward_mul_ops(N, L) : wkv6_chunked_forward_mul_ops(N, L);
}

}  // namespace scanshard::kernels
