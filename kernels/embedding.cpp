// kernels/embedding.cpp — see embedding.hpp.
#include "kernels/embedding.hpp"
#include "kernels/vector_rows.hpp"

#include <cblas.h>

#include <cmath>
#include <vector>

namespace scanshard::kernels {

namespace ref {

template <class F>
void embedding_forward(F* out, const std::int32_t* tokens, const F* table, i64 M, i64 D, F scale) {
  for (i64 m = 0; m < M; ++m)
    for (i64 d = 0; d < D; ++d) out[m * D + d] = scale * table[i64(tokens[m]) * D + d];
}

template <class F>
void embedding_backward(F* dtable, const F* dout, const std::int32_t* tokens, i64 M, i64 D, F scale) {
  for (i64 m = 0; m < M; ++m)
    for (i64 d = 0; d < D; ++d) dtable[i64(tokens[m]) * D + d] += scale * dout[m * D + d];
}

template <class F>
void logits_tied_forward(F* logits, const F* x, const F* table, i64 M, i64 D, i64 V) {
  for (i64 m = 0; m < M; ++m)
    for (i64 v = 0; v < V; ++v) {
      double acc = 0;
      for (i64 d = 0; d < D; ++d) acc += double(x[m * D + d]) * table[v * D + d];
      logits[m * V + v] = F(acc);
    }
}

template <class F>
void logits_tied_backward(F* dx, F* dtable, const F* dlogits, const F* x,
                          const F* table, i64 M, i64 D, i64 V) {
  if (dx)
    for (i64 m = 0; m < M; ++m)
      for (i64 d = 0; d < D; ++d) {
        double acc = 0;
        for (i64 v = 0; v < V; ++v) acc += double(dlogits[m * V + v]) * table[v * D + d];
        dx[m * D + d] += F(acc);
      }
  if (dtable)
    for (i64 v = 0; v < V; ++v)
      for (i64 d = 0; d < D; ++d) {
        double acc = 0;
        for (i64 m = 0; m < M; ++m) acc += double(dlogits[m * V + v]) * x[m * D + d];
        dtable[v * D + d] += F(acc);
      }
}

template <class F>
void softmax_ce_forward(F* losses, F* probs, const F* logits, const std::int32_t* targets,
                        i64 M, i64 V) {
  for (i64 m = 0; m < M; ++m) {
    const F* l = logits + m * V;
    // mx = max_v l[v];  lse = mx + log Σ_v e^{l[v] − mx};  loss = lse − l[target]
    double mx = l[0];
    for (i64 v = 1; v < V; ++v) mx = l[v] > mx ? l[v] : mx;
    double sum = 0;
    for (i64 v = 0; v < V; ++v) sum += std::exp(double(l[v]) - mx);
    const double lse = mx + std::log(sum);
    const std::int32_t tg = targets[m];
    losses[m] = tg >= 0 ? F(lse - l[tg]) : 0.0f;
    for (i64 v = 0; v < V; ++v) probs[m * V + v] = F(std::exp(double(l[v]) - lse));
  }
}

template <class F>
void softmax_ce_backward(F* dlogits, const F* dlosses, const F* probs,
                         const std::int32_t* targets, i64 M, i64 V) {
  for (i64 m = 0; m < M; ++m) {
    const std::int32_t tg = targets[m];
    if (tg < 0) continue;
    for (i64 v = 0; v < V; ++v)
      dlogits[m * V + v] += dlosses[m] * (probs[m * V + v] - (v == tg ? 1.0f : 0.0f));
  }
}


#define SCANSHARD_INSTANTIATE(F) \
  template void embedding_forward<F>(F*, const std::int32_t*, const F*, i64, i64, F); \
  template void embedding_backward<F>(F*, const F*, const std::int32_t*, i64, i64, F); \
  template void logits_tied_forward<F>(F*, const F*, const F*, i64, i64, i64); \
  template void logits_tied_backward<F>(F*, F*, const F*, const F*, const F*, i64, i64, i64); \
  template void softmax_ce_forward<F>(F*, F*, const F*, const std::int32_t*, i64, i64); \
  template void softmax_ce_backward<F>(F*, const F*, const F*, const std::int32_t*, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

void embedding_forward(float* out, const std::int32_t* tokens, const float* table, i64 M, i64 D, float scale) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float* src = table + i64(tokens[m]) * D;
    float* dst = out + m * D;
    #pragma omp simd
    for (i64 d = 0; d < D; ++d) dst[d] = scale * src[d];
  }
}

void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens, i64 M, i64 D, float scale) {
  // Rows of the table may repeat; parallelise over columns so no two threads touch one element.
  #pragma omp parallel
  {
    #pragma omp for schedule(static)
    for (i64 d0 = 0; d0 < D; d0 += 64) {
      const i64 d1 = d0 + 64 < D ? d0 + 64 : D;
      for (i64 m = 0; m < M; ++m) {
        float* dst = dtable + i64(tokens[m]) * D;
        const float* src = dout + m * D;
        for (i64 d = d0; d < d1; ++d) dst[d] += scale * src[d];
      }
    }
  }
}

void logits_tied_forward(float* logits, const float* x, const float* table, i64 M, i64 D, i64 V) {
  // logits [M,V] = x [M,D] · Eᵀ [D,V]
  if (M == 1) {  // one row (batch-1 decoding): logit v = E[v,:]·x, E's rows read once in memory order
    // (sgemm would pack all of E first; cblas_sgemv reads 4 rows at once, 4 interleaved streams, at
    // ~0.6 of the triad on the 786 MB table where one sequential stream reaches ~0.9: bench_decode's
    // head-alone line)
    rows::for_spans(V, [&](i64 v0, i64 n) { rows::dot_rows(logits + v0, table + v0 * D, x, n, D); }, 1024);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(V), int(D), 1.0f, x, int(D), table,
              int(D), 0.0f, logits, int(V));
}

void logits_tied_backward(float* dx, float* dtable, const float* dlogits, const float* x,
                          const float* table, i64 M, i64 D, i64 V) {
  if (dx)  // dx [M,D] += dlogits [M,V] · E [V,D]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(D), int(V), 1.0f, dlogits, int(V),
                table, int(D), 1.0f, dx, int(D));
  if (dtable)  // dE [V,D] += dlogitsᵀ [V,M] · x [M,D]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(V), int(D), int(M), 1.0f, dlogits, int(V),
                x, int(D), 1.0f, dtable, int(D));
}

void softmax_ce_forward(float* losses, float* probs, const float* logits, const std::int32_t* targets,
                        i64 M, i64 V) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float* l = logits + m * V;
    float* p = probs + m * V;
    const float mx = rows::max_of(l, V, l[0]);
    const std::int32_t tg = targets[m];
    const float lt = tg >= 0 ? l[tg] : 0.0f;  // read before p may overwrite l (in place)
    const double sum = rows::exp_minus_sum_blocked(p, l, V, mx);
    const float inv = float(1.0 / sum);
    #pragma omp simd
    for (i64 v = 0; v < V; ++v) p[v] *= inv;
    losses[m] = tg >= 0 ? float(double(mx) + std::log(double(sum)) - lt) : 0.0f;
  }
}

void softmax_ce_backward(float* dlogits, const float* dlosses, const float* probs,
                         const std::int32_t* targets, i64 M, i64 V) {
  const bool in_place = dlogits == probs;
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const std::int32_t tg = targets[m];
    float* g = dlogits + m * V;
    const float* p = probs + m * V;
    const float s = tg >= 0 ? dlosses[m] : 0.0f;
    if (in_place) {
      #pragma omp simd
      for (i64 v = 0; v < V; ++v) g[v] = s * p[v];
    } else {
      #pragma omp simd
      for (i64 v = 0; v < V; ++v) g[v] += s * p[v];
    }
    if (tg >= 0) g[tg] -= s;
  }
}

void embedding_shard_forward(float* out, const std::int32_t* tokens, const float* table, i64 v0, i64 Vl, i64 M, i64 D,
                             float scale) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const i64 r = i64(tokens[m]) - v0;
    float* dst = out + m * D;
    if (r < 0 || r >= Vl) {
      for (i64 d = 0; d < D; ++d) dst[d] = 0.0f;
      continue;
    }
    const float* src = table + r * D;
    #pragma omp simd
    for (i64 d = 0; d < D; ++d) dst[d] = scale * src[d];
  }
}

void embedding_shard_backward(float* dtable, const float* dout, const std::int32_t* tokens, i64 v0, i64 Vl, i64 M,
                              i64 D, float scale) {
  #pragma omp parallel for schedule(static)
  for (i64 d0 = 0; d0 < D; d0 += 64) {  // columns per thread: repeated rows never collide
    const i64 d1 = d0 + 64 < D ? d0 + 64 : D;
    for (i64 m = 0; m < M; ++m) {
      const i64 r = i64(tokens[m]) - v0;
      if (r < 0 || r >= Vl) continue;
      float* dst = dtable + r * D;
      const float* src = dout + m * D;
      for (i64 d = d0; d < d1; ++d) dst[d] += scale * src[d];
    }
  }
}

void softmax_stats(float* stats, const float* logits, i64 M, i64 Vl) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float* l = logits + m * Vl;
    const float mx = rows::max_of(l, Vl, l[0]);
    // the dispatched rows' Exp, summed in blocks (rows::exp_minus_sum_blocked). The OpenMP-simd
    // loop this replaces ran at 3.5 ns per logit on the baseline target (the build has no -march),
    // as long as the GEMM that made the logits (docs/validation.md, 2026-12-07 sixteenth session).
    const double sum = rows::exp_minus_sum_blocked(nullptr, l, Vl, mx);
    stats[2 * m] = mx;
    stats[2 * m + 1] = float(sum);
  }
}

void merge_softmax_stats(float* io, const float* in, i64 n) {
  for (i64 m = 0; m < n; ++m) {
    const double a = io[2 * m], b = in[2 * m], mx = a > b ? a : b;
    io[2 * m + 1] = float(double(io[2 * m + 1]) * std::exp(a - mx) + double(in[2 * m + 1]) * std::exp(b - mx));
    io[2 * m] = float(mx);
  }
}

void softmax_ce_shard_finish(float* losses, float* probs, const float* logits, const float* stats,
                             const std::int32_t* targets, i64 v0, i64 M, i64 Vl) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float* l = logits + m * Vl;
    float* p = probs + m * Vl;
    const double lse = double(stats[2 * m]) + std::log(double(stats[2 * m + 1]));
    const i64 r = i64(targets[m]) - v0;
    const bool local = targets[m] >= 0 && r >= 0 && r < Vl;
    losses[m] = local ? float(lse - double(l[r])) : 0.0f;  // before p may overwrite l
    rows::exp_minus_sum_blocked(p, l, Vl, float(lse));
  }
}

void softmax_ce_shard_backward(float* dlogits, const float* dlosses, const float* probs, const std::int32_t* targets,
                               i64 v0, i64 M, i64 Vl) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    float* g = dlogits + m * Vl;
    const float* p = probs + m * Vl;
    const float s = targets[m] >= 0 ? dlosses[m] : 0.0f;
    #pragma omp simd
    for (i64 v = 0; v < Vl; ++v) g[v] = s * p[v];
    const i64 r = i64(targets[m]) - v0;
    if (targets[m] >= 0 && r >= 0 && r < Vl) g[r] -= s;
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
