// kernels/kv_cache.cpp — see kv_cache.hpp.
#include "kernels/kv_cache.hpp"

#include <cmath>
#include <vector>

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
void attention_decode(float* out, const float* q, const float* k, const float* v, i64 B, i64 C, i64 n, i64 H, i64 Hk,
                      i64 N) {
  const i64 group = H / Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(N));
#pragma omp parallel for collapse(2) schedule(static) if (B * H * n * N > 32768)
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      thread_local std::vector<float> s;  // the scores: kept per thread, no allocation per token
      s.resize(static_cast<std::size_t>(n));
      const float* qh = q + (b * H + h) * N;
      const i64 kh = h / group;
      float mx = -INFINITY;
      for (i64 j = 0; j < n; ++j) {
        const float* kj = k + ((b * C + j) * Hk + kh) * N;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (i64 d = 0; d < N; ++d) dot += qh[d] * kj[d];
        s[static_cast<std::size_t>(j)] = dot * scale;
        mx = std::max(mx, s[static_cast<std::size_t>(j)]);
      }
      float sum = 0;
      for (i64 j = 0; j < n; ++j) {
        s[static_cast<std::size_t>(j)] = exp_fast(s[static_cast<std::size_t>(j)] - mx);
        sum += s[static_cast<std::size_t>(j)];
      }
      float* o = out + (b * H + h) * N;
      std::fill_n(o, N, 0.0f);
      const float inv = 1.0f / sum;
      for (i64 j = 0; j < n; ++j) {
        const float p = s[static_cast<std::size_t>(j)] * inv;
        const float* vj = v + ((b * C + j) * Hk + kh) * N;
#pragma omp simd
        for (i64 d = 0; d < N; ++d) o[d] += p * vj[d];
      }
    }
}
}  // namespace fast

}  // namespace scanshard::kernels
