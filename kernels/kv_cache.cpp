// kernels/kv_cache.cpp — see kv_cache.hpp.
#include "kernels/kv_cache.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/vector_rows.hpp"

namespace scanshard::kernels {

namespace ref {
template <class F>
void attention_decode(F* out, const F* q, const F* k, const F* v, i64 B, i64 C, i64 n, i64 H, i64 Hk, i64 N) {
  const i64 group = H / Hk;
  const F scale = F(1) / std::sqrt(F(N));
  std::vector<F> s(static_cast<std::size_t>(n));
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const F* qh = q + (b * H + h) * N;
      const i64 kh = h / group;
      // s_j = (q · k_j)/√N
      F mx = -INFINITY;
      for (i64 j = 0; j < n; ++j) {
        const F* kj = k + ((b * C + j) * Hk + kh) * N;
        F dot = 0;
        for (i64 d = 0; d < N; ++d) dot += qh[d] * kj[d];
        s[static_cast<std::size_t>(j)] = dot * scale;
        mx = std::max(mx, s[static_cast<std::size_t>(j)]);
      }
      // p_j = e^{s_j − max} / Σ e^{s − max};  out = Σ_j p_j v_j
      F sum = 0;
      for (i64 j = 0; j < n; ++j) sum += std::exp(s[static_cast<std::size_t>(j)] - mx);
      F* o = out + (b * H + h) * N;
      for (i64 d = 0; d < N; ++d) o[d] = 0;
      for (i64 j = 0; j < n; ++j) {
        const F p = std::exp(s[static_cast<std::size_t>(j)] - mx) / sum;
        const F* vj = v + ((b * C + j) * Hk + kh) * N;
        for (i64 d = 0; d < N; ++d) o[d] += p * vj[d];
      }
    }
}
template void attention_decode<float>(float*, const float*, const float*, const float*, i64, i64, i64, i64, i64, i64);
template void attention_decode<double>(double*, const double*, const double*, const double*, i64, i64, i64, i64, i64,
                                       i64);
}  // namespace ref

namespace fast {
// Per (sequence, KV head): the group's G query heads at once (MQA: every head), as two GEMMs over
// the cache rows, K and V rows strided by Hk·N: S [G×n] = Q_g · Kᵀ · scale, softmax rows, O [G×N]
// = P · V. The per-key dot products of the loop this replaces stayed scalar on the baseline
// target (GCC left the omp-simd reductions unvectorised; the build has no -march). Q · Kᵀ runs in
// key blocks (program/inference.hpp kDecodeAttentionScoreBlock says why), P · V in one call.
i64 attention_decode(float* out, const float* q, const float* k, const float* v, i64 B, i64 C, i64 n, i64 H, i64 Hk, i64 N,
                     i64 key_block, bool gemv) {
  const i64 G = H / Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(N));
  const int ld = static_cast<int>(Hk * N);
  if (n <= 0) {  // no key yet: nothing to attend to
    std::fill_n(out, B * H * N, 0.0f);
    return 0;
  }
  const i64 block = std::clamp<i64>(key_block, 1, n);
  const i64 blocks = (n + block - 1) / block;
#pragma omp parallel for collapse(2) schedule(static) if (B * H * n * N > 32768)
  for (i64 b = 0; b < B; ++b)
    for (i64 kh = 0; kh < Hk; ++kh) {
      thread_local std::vector<float> s;  // the scores: kept per thread, no allocation per token
      s.resize(static_cast<std::size_t>(G * n));
      const float* qg = q + (b * H + kh * G) * N;  // the group's heads are consecutive
      const float* kb = k + (b * C * Hk + kh) * N;
      const float* vb = v + (b * C * Hk + kh) * N;
      float* og = out + (b * H + kh * G) * N;
      // one query head per KV head (MHA): GEMVs, which stream the cache rows once (sgemm would
      // first pack them into a buffer: twice the cache's traffic for one output row)
      if (gemv)
        for (i64 g = 0; g < G; ++g)
          cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n), int(N), scale, kb, ld, qg + g * N, 1, 0.0f, s.data() + g * n, 1);
      else
        for (i64 j = 0; j < n; j += block)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(G), int(std::min(block, n - j)), int(N), scale, qg, int(N),
                      kb + j * ld, ld, 0.0f, s.data() + j, int(n));
      for (i64 g = 0; g < G; ++g) {
        float* sg = s.data() + g * n;
        const float mx = rows::max_of(sg, n, -INFINITY);
        const float inv = float(1.0 / rows::exp_minus_sum_blocked(sg, sg, n, mx));
        for (i64 j = 0; j < n; ++j) sg[j] *= inv;
      }
      if (gemv)
        for (i64 g = 0; g < G; ++g)
          cblas_sgemv(CblasRowMajor, CblasTrans, int(n), int(N), 1.0f, vb, ld, s.data() + g * n, 1, 0.0f, og + g * N, 1);
      else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(G), int(N), int(n), 1.0f, s.data(), int(n), vb, ld, 0.0f, og,
                       int(N));
    }
  return B * Hk * (gemv ? 2 * G : blocks + 1);
}
}  // namespace fast

}  // namespace scanshard::kernels
