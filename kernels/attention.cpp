// kernels/attention.cpp — see attention.hpp. The flash path's softmax rows run on the dispatched
// SIMD target (vector_rows.hpp); the block products are sgemm calls.
#include "kernels/attention.hpp"
#include "kernels/vector_rows.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include <omp.h>

namespace scanshard::kernels {

namespace {

// first visible key of query t: max(0, t − W (W > 0), last document start ≤ t)
void first_keys(i64* lo, const std::uint8_t* reset, i64 b, i64 T, i64 W) {
  i64 doc = 0;
  for (i64 t = 0; t < T; ++t) {
    if (reset && reset[b * T + t]) doc = t;
    lo[t] = std::max(doc, W > 0 ? t - W : i64(0));
  }
}
template <class F>
void rope_apply(F* y, const F* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot,
                double base, double sign) {
  const i64 n = rot / 2;
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t) {
      const double p = pos ? pos[b * T + t] : double(t);
      for (i64 h = 0; h < H; ++h) {
        const i64 o = ((b * T + t) * H + h) * N;
        for (i64 j = 0; j < n; ++j) {
          const double th = p * std::pow(base, -2.0 * double(j) / double(rot));
          const F c = F(std::cos(th)), s = F(sign * std::sin(th));
          const F x1 = x[o + j], x2 = x[o + j + n];
          y[o + j] += x1 * c - x2 * s;      // y_j     = x_j cos θ − x_{j+n} sin θ
          y[o + j + n] += x2 * c + x1 * s;  // y_{j+n} = x_{j+n} cos θ + x_j sin θ
        }
        for (i64 j = rot; j < N; ++j) y[o + j] += x[o + j];
      }
    }
}

// Key s is visible to query t: causal, within the window W (0: global), no document start in (s, t].
bool visible(const std::uint8_t* reset, i64 b, i64 T, i64 t, i64 s, i64 W) {
  if (s > t || (W > 0 && t - s > W)) return false;
  if (reset)
    for (i64 u = s + 1; u <= t; ++u)
      if (reset[b * T + u]) return false;
  return true;
}
}  // namespace

namespace ref {

template <class F>
void rope_forward(F* y, const F* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  std::fill(y, y + B * T * H * N, F(0));
  rope_apply(y, x, pos, B, T, H, N, rot, base, 1.0);
}

template <class F>
void rope_backward(F* dx, const F* dy, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  rope_apply(dx, dy, pos, B, T, H, N, rot, base, -1.0);  // the inverse rotation accumulates
}

template <class F>
void attention_forward(F* out, F* lse, const F* q, const F* k, const F* v, const std::uint8_t* reset,
                       i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W, const AttnDropout& drop) {
  const double scale = 1.0 / std::sqrt(double(N));
  std::vector<double> s(T), z(T, 1.0);
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      for (i64 t = 0; t < T; ++t) {
        const F* qt = q + ((b * T + t) * H + h) * N;
        // s_τ = q_t·k_τ/√N for visible τ;  lse = log Σ e^{s}
        double mx = -std::numeric_limits<double>::infinity();
        for (i64 u = 0; u <= t; ++u) {
          if (!visible(reset, b, T, t, u, W)) continue;
          const F* ku = k + ((b * T + u) * Hk + hk) * N;
          double d = 0;
          for (i64 j = 0; j < N; ++j) d += double(qt[j]) * ku[j];
          s[u] = d * scale;
          mx = std::max(mx, s[u]);
        }
        double sum = 0;
        for (i64 u = 0; u <= t; ++u)
          if (visible(reset, b, T, t, u, W)) sum += std::exp(s[u] - mx);
        const double l = mx + std::log(sum);
        lse[(b * H + h) * T + t] = F(l);
        if (drop.p > 0) {
          const std::uint64_t row = drop.row(b, t);
          for (i64 u = 0; u <= t; ++u) z[u] = drop.factor(row, h, u);
        }
        // out_t = Σ_τ softmax(s)_τ z_τ v_τ
        F* ot = out + ((b * T + t) * H + h) * N;
        for (i64 j = 0; j < N; ++j) {
          double acc = 0;
          for (i64 u = 0; u <= t; ++u)
            if (visible(reset, b, T, t, u, W)) acc += std::exp(s[u] - l) * z[u] * v[((b * T + u) * Hk + hk) * N + j];
          ot[j] = F(acc);
        }
      }
    }
}

template <class F>
void attention_backward(F* dq, F* dk, F* dv, const F* dout, const F* out, const F* lse, const F* q,
                        const F* k, const F* v, const std::uint8_t* reset, i64 B, i64 T, i64 H,
                        i64 Hk, i64 N, i64 W, const AttnDropout& drop) {
  const double scale = 1.0 / std::sqrt(double(N));
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      for (i64 t = 0; t < T; ++t) {
        const i64 qo = ((b * T + t) * H + h) * N;
        double Dt = 0;  // D_t = dout_t · out_t
        for (i64 j = 0; j < N; ++j) Dt += double(dout[qo + j]) * out[qo + j];
        const std::uint64_t zrow = drop.p > 0 ? drop.row(b, t) : 0;
        for (i64 u = 0; u <= t; ++u) {
          if (!visible(reset, b, T, t, u, W)) continue;
          const i64 ko = ((b * T + u) * Hk + hk) * N;
          double sc = 0, dp = 0;
          for (i64 j = 0; j < N; ++j) {
            sc += double(q[qo + j]) * k[ko + j];
            dp += double(dout[qo + j]) * v[ko + j];
          }
          const double p = std::exp(sc * scale - double(lse[(b * H + h) * T + t]));
          const double z = drop.p > 0 ? drop.factor(zrow, h, u) : 1.0;
          const double ds = p * (z * dp - Dt);  // ds = p (z dp − D)
          for (i64 j = 0; j < N; ++j) {
            dq[qo + j] += F(ds * scale * k[ko + j]);
            dk[ko + j] += F(ds * scale * q[qo + j]);
            dv[ko + j] += F(p * z * dout[qo + j]);
          }
        }
      }
    }
}

#define SCANSHARD_INSTANTIATE(F)                                                                   \
  template void rope_forward<F>(F*, const F*, const std::int32_t*, i64, i64, i64, i64, i64, double); \
  template void rope_backward<F>(F*, const F*, const std::int32_t*, i64, i64, i64, i64, i64, double); \
  template void attention_forward<F>(F*, F*, const F*, const F*, const F*, const std::uint8_t*, i64, \
                                     i64, i64, i64, i64, i64, const AttnDropout&);                 \
  template void attention_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, \
                                      const F*, const std::uint8_t*, i64, i64, i64, i64, i64, i64,  \
                                      const AttnDropout&);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {

// cos/sin tables [T, rot/2] for one batch row (positions may differ per row).
// cos/sin of p·base^(−2j/rot) for positions p < rows, computed once per (base, rot) in double and
// grown on demand: every call after the first only reads it. Kernels are called
// from one thread at a time (see BlasSingleThread below), so one cache serves all.
struct RopeCache {
  double base = 0;
  i64 rot = 0, rows = 0;
  std::vector<float> cs, sn;
  void ensure(double b, i64 r, i64 need) {
    if (b != base || r != rot) { base = b; rot = r; rows = 0; cs.clear(); sn.clear(); }
    if (need <= rows) return;
    const i64 n = rot / 2, grow = std::max(need, 2 * rows);
    std::vector<double> f(n);
    for (i64 j = 0; j < n; ++j) f[j] = std::pow(base, -2.0 * double(j) / double(rot));
    cs.resize(grow * n);
    sn.resize(grow * n);
    for (i64 p = rows; p < grow; ++p)
      for (i64 j = 0; j < n; ++j) {
        cs[p * n + j] = float(std::cos(double(p) * f[j]));
        sn[p * n + j] = float(std::sin(double(p) * f[j]));
      }
    rows = grow;
  }
};

void rope_fast(float* y, const float* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot,
               double base, bool inverse) {
  const i64 n = rot / 2;
  static RopeCache cache;
  i64 top = T;  // positions 0 .. top−1 are needed
  if (pos)
    for (i64 i = 0; i < B * T; ++i) {
      if (pos[i] < 0) throw std::invalid_argument("rope: negative position");
      top = std::max<i64>(top, i64(pos[i]) + 1);
    }
  cache.ensure(base, rot, top);
  const float sg = inverse ? -1.0f : 1.0f;
  // one parallel region over every (sequence, token) row: a decode step's call has one row per
  // sequence, and a region per sequence cost a region's fixed cost each; one row (batch-1
  // decoding) runs on the calling thread (a region's barrier waits for the idle thread to be
  // scheduled: 23 % of mqa-100m's step at 2 threads on a loaded machine, docs/inference-decode-2026-12-07.md)
  #pragma omp parallel for collapse(2) schedule(static) if (B * T > 1)
  for (i64 b = 0; b < B; ++b) {
    for (i64 t = 0; t < T; ++t) {
      const i64 p = pos ? i64(pos[b * T + t]) : t;
      const float* c = cache.cs.data() + p * n;
      const float* s = cache.sn.data() + p * n;
      for (i64 h = 0; h < H; ++h) {
        const i64 o = ((b * T + t) * H + h) * N;
        if (inverse) {  // accumulate
          #pragma omp simd
          for (i64 j = 0; j < n; ++j) {
            const float x1 = x[o + j], x2 = x[o + j + n];
            y[o + j] += x1 * c[j] - x2 * sg * s[j];
            y[o + j + n] += x2 * c[j] + x1 * sg * s[j];
          }
          for (i64 j = rot; j < N; ++j) y[o + j] += x[o + j];
        } else {
          #pragma omp simd
          for (i64 j = 0; j < n; ++j) {
            const float x1 = x[o + j], x2 = x[o + j + n];
            y[o + j] = x1 * c[j] - x2 * s[j];
            y[o + j + n] = x2 * c[j] + x1 * s[j];
          }
          for (i64 j = rot; j < N; ++j) y[o + j] = x[o + j];
        }
      }
    }
  }
}

constexpr i64 kKeyBlock = 64;

}  // namespace

void rope_forward(float* y, const float* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  rope_fast(y, x, pos, B, T, H, N, rot, base, false);
}
void rope_backward(float* dx, const float* dy, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  rope_fast(dx, dy, pos, B, T, H, N, rot, base, true);
}

// Blocked ("flash") attention. One task = (batch row b, kv head hk, block of kQBlock queries);
// its G = H/Hk query heads are gathered into one [rows = queries·G, N] matrix Qs (for MQA every
// head shares the K/V block, so the block products are real GEMMs). Key blocks of kKeyBlock keys
// are visited in order; S = Qs Kᵀ and O += P V are sgemm calls on [rows, ≤ kKeyBlock] tiles, the
// online softmax keeps a running max m and sum l per row. Memory per task: O(rows·(N + kKeyBlock)).
namespace {
constexpr i64 kQBlock = kAttentionQueryBlock;

struct AttnTask {
  i64 b, hk, t0, nq;
};
inline AttnTask attn_task(i64 id, i64 T, i64 Hk) {
  const i64 nqb = (T + kQBlock - 1) / kQBlock;
  const i64 b = id / (Hk * nqb), rem = id % (Hk * nqb);
  const i64 hk = rem / nqb, t0 = (rem % nqb) * kQBlock;
  return {b, hk, t0, std::min(kQBlock, T - t0)};
}

// OpenBLAS (pthreads build) must not start its own threads inside our OpenMP tasks: the per-tile
// GEMMs are small and concurrent threaded calls serialise on its thread pool. Single-threaded
// OpenBLAS for the duration of one attention call; restored afterwards. (Not re-entrant: kernels
// are called from one thread at a time, as everywhere in kernels/.)
struct BlasSingleThread {
  int saved;
  BlasSingleThread() : saved(openblas_get_num_threads()) { if (saved != 1) openblas_set_num_threads(1); }
  ~BlasSingleThread() { if (saved != 1) openblas_set_num_threads(saved); }
};

// x_j ·= z of (b, t, head h, key row kb + j) for the visible j ∈ [j0, j1) (AttnDropout).
void drop_row(float* x, const AttnDropout& drop, i64 b, i64 t, i64 h, i64 kb, i64 j0, i64 j1) {
  const std::uint64_t row = drop.row(b, t), thr = dropout_threshold(drop.p);
  const float keep = static_cast<float>(1.0 / (1.0 - drop.p));
  const i64 c0 = drop.channel(h, kb);
  for (i64 j = j0; j < j1; ++j) x[j] *= dropout_keep(row, c0 + j, thr) ? keep : 0.0f;
}

void sgemm_rm(bool ta, bool tb, i64 M, i64 Nn, i64 K, float alpha, const float* A, i64 lda, const float* Bm,
              i64 ldb, float beta, float* C, i64 ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(Nn),
              int(K), alpha, A, int(lda), Bm, int(ldb), beta, C, int(ldc));
}
}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W,
                       const AttnDropout& drop) {
  const float scale = 1.0f / std::sqrt(float(N));
  const i64 G = H / Hk, ldk = Hk * N;
  std::vector<i64> lo(B * T);
  for (i64 b = 0; b < B; ++b) first_keys(lo.data() + b * T, reset, b, T, W);
  const i64 ntask = B * Hk * ((T + kQBlock - 1) / kQBlock);
  const BlasSingleThread one_blas_thread;
  #pragma omp parallel
  {
    const i64 maxrows = kQBlock * G;
    std::vector<float> Qs(maxrows * N), O(maxrows * N), S(maxrows * kKeyBlock), m(maxrows), l(maxrows);
    #pragma omp for schedule(dynamic, 1)
    for (i64 id = 0; id < ntask; ++id) {
      const auto [b, hk, t0, nq] = attn_task(id, T, Hk);
      const i64 rows = nq * G;
      for (i64 i = 0; i < nq; ++i)
        std::memcpy(Qs.data() + i * G * N, q + ((b * T + t0 + i) * H + hk * G) * N, sizeof(float) * G * N);
      std::fill(O.begin(), O.begin() + rows * N, 0.0f);
      std::fill(m.begin(), m.begin() + rows, -std::numeric_limits<float>::infinity());
      std::fill(l.begin(), l.begin() + rows, 0.0f);
      i64 u_lo = lo[b * T + t0];
      for (i64 i = 1; i < nq; ++i) u_lo = std::min(u_lo, lo[b * T + t0 + i]);
      const i64 u_hi = t0 + nq - 1;
      for (i64 kb = u_lo; kb <= u_hi; kb += kKeyBlock) {
        const i64 nk = std::min(kKeyBlock, u_hi + 1 - kb);
        const float* Kb = k + ((b * T + kb) * Hk + hk) * N;
        const float* Vb = v + ((b * T + kb) * Hk + hk) * N;
        // S = scale · Qs Kbᵀ   [rows, nk]
        sgemm_rm(false, true, rows, nk, N, scale, Qs.data(), N, Kb, ldk, 0.0f, S.data(), nk);
        for (i64 r = 0; r < rows; ++r) {
          const i64 t = t0 + r / G;
          const i64 j0 = std::max<i64>(lo[b * T + t] - kb, 0), j1 = std::min<i64>(t - kb + 1, nk);  // visible [j0, j1)
          float* Sr = S.data() + r * nk;
          if (j0 >= j1) {
            std::fill(Sr, Sr + nk, 0.0f);
            continue;
          }
          const float bm = rows::max_of(Sr + j0, j1 - j0, m[r]);
          const float corr = exp_fast(m[r] - bm);  // ≈ 0 when m was −∞ (clamped), O and l are 0 then
          for (i64 j = 0; j < j0; ++j) Sr[j] = 0.0f;
          const float sum = rows::exp_minus_sum(Sr + j0, j1 - j0, bm);  // dispatched SIMD row
          for (i64 j = j1; j < nk; ++j) Sr[j] = 0.0f;
          if (drop.p > 0) drop_row(Sr, drop, b, t, hk * G + r % G, kb, j0, j1);  // P·V with P ⊙ z; l undropped
          l[r] = l[r] * corr + sum;
          m[r] = bm;
          float* Or = O.data() + r * N;
          #pragma omp simd
          for (i64 j = 0; j < N; ++j) Or[j] *= corr;
        }
        // O += P Vb   [rows, N]
        sgemm_rm(false, false, rows, N, nk, 1.0f, S.data(), nk, Vb, ldk, 1.0f, O.data(), N);
      }
      for (i64 r = 0; r < rows; ++r) {
        const i64 t = t0 + r / G, h = hk * G + r % G;
        const float inv = 1.0f / l[r];
        float* ot = out + ((b * T + t) * H + h) * N;
        const float* Or = O.data() + r * N;
        #pragma omp simd
        for (i64 j = 0; j < N; ++j) ot[j] = Or[j] * inv;
        lse[(b * H + h) * T + t] = m[r] + std::log(l[r]);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W,
                        const AttnDropout& drop) {
  const float scale = 1.0f / std::sqrt(float(N));
  const i64 G = H / Hk, ldk = Hk * N;
  std::vector<i64> lo(B * T);
  for (i64 b = 0; b < B; ++b) first_keys(lo.data() + b * T, reset, b, T, W);
  const i64 ntask = B * Hk * ((T + kQBlock - 1) / kQBlock);
  const i64 nkv = B * T * Hk * N;
  const int nth = omp_get_max_threads();
  std::vector<float> priv(nth > 1 ? size_t(2) * nkv * nth : 0, 0.0f);
  const BlasSingleThread one_blas_thread;
  #pragma omp parallel
  {
    const int me = omp_get_thread_num();
    float* dkp = nth > 1 ? priv.data() + size_t(2) * nkv * me : dk;  // thread-private dK, dV
    float* dvp = nth > 1 ? dkp + nkv : dv;
    const i64 maxrows = kQBlock * G;
    std::vector<float> Qs(maxrows * N), dOs(maxrows * N), dQs(maxrows * N), P(maxrows * kKeyBlock),
        dP(maxrows * kKeyBlock), L(maxrows), Dr(maxrows), Zr(drop.p > 0 ? kKeyBlock : 0);
    #pragma omp for schedule(dynamic, 1)
    for (i64 id = 0; id < ntask; ++id) {
      const auto [b, hk, t0, nq] = attn_task(id, T, Hk);
      const i64 rows = nq * G;
      for (i64 i = 0; i < nq; ++i) {
        const i64 src = ((b * T + t0 + i) * H + hk * G) * N;
        std::memcpy(Qs.data() + i * G * N, q + src, sizeof(float) * G * N);
        std::memcpy(dOs.data() + i * G * N, dout + src, sizeof(float) * G * N);
      }
      for (i64 r = 0; r < rows; ++r) {
        const i64 t = t0 + r / G, h = hk * G + r % G;
        L[r] = lse[(b * H + h) * T + t];
        Dr[r] = rows::dot(dOs.data() + r * N, out + ((b * T + t) * H + h) * N, N);  // D = dout_t · out_t
      }
      std::fill(dQs.begin(), dQs.begin() + rows * N, 0.0f);
      i64 u_lo = lo[b * T + t0];
      for (i64 i = 1; i < nq; ++i) u_lo = std::min(u_lo, lo[b * T + t0 + i]);
      const i64 u_hi = t0 + nq - 1;
      for (i64 kb = u_lo; kb <= u_hi; kb += kKeyBlock) {
        const i64 nk = std::min(kKeyBlock, u_hi + 1 - kb);
        const i64 ko = ((b * T + kb) * Hk + hk) * N;
        sgemm_rm(false, true, rows, nk, N, scale, Qs.data(), N, k + ko, ldk, 0.0f, P.data(), nk);     // S
        sgemm_rm(false, true, rows, nk, N, 1.0f, dOs.data(), N, v + ko, ldk, 0.0f, dP.data(), nk);    // dP = dO Vᵀ
        for (i64 r = 0; r < rows; ++r) {
          const i64 t = t0 + r / G;
          const i64 j0 = std::max<i64>(lo[b * T + t] - kb, 0), j1 = std::min<i64>(t - kb + 1, nk);
          float* Pr = P.data() + r * nk;
          float* dPr = dP.data() + r * nk;
          // P = e^{S − lse}, dS/√N = P (dP − D)/√N on the visible keys (dispatched SIMD row), 0 elsewhere
          const i64 v0 = std::min(j0, nk), v1 = std::clamp(j1, v0, nk);  // [v0, v1): visible, maybe empty
          std::fill(Pr, Pr + v0, 0.0f);
          std::fill(dPr, dPr + v0, 0.0f);
          if (drop.p > 0) {  // dropout: dS = P (z dP − D), and z·P for dV
            std::fill(Zr.begin() + v0, Zr.begin() + v1, 1.0f);
            drop_row(Zr.data(), drop, b, t, hk * G + r % G, kb, v0, v1);
            rows::mul_by(dPr + v0, Zr.data() + v0, v1 - v0);
            rows::softmax_grad(Pr + v0, dPr + v0, v1 - v0, L[r], Dr[r], scale);
            rows::mul_by(Pr + v0, Zr.data() + v0, v1 - v0);
          } else {
            rows::softmax_grad(Pr + v0, dPr + v0, v1 - v0, L[r], Dr[r], scale);
          }
          std::fill(Pr + v1, Pr + nk, 0.0f);
          std::fill(dPr + v1, dPr + nk, 0.0f);
        }
        sgemm_rm(false, false, rows, N, nk, 1.0f, dP.data(), nk, k + ko, ldk, 1.0f, dQs.data(), N);   // dQ += dS K
        sgemm_rm(true, false, nk, N, rows, 1.0f, dP.data(), nk, Qs.data(), N, 1.0f, dkp + ko, ldk);   // dK += dSᵀ Q
        sgemm_rm(true, false, nk, N, rows, 1.0f, P.data(), nk, dOs.data(), N, 1.0f, dvp + ko, ldk);   // dV += Pᵀ dO
      }
      for (i64 i = 0; i < nq; ++i) {
        float* dst = dq + ((b * T + t0 + i) * H + hk * G) * N;
        const float* src = dQs.data() + i * G * N;
        #pragma omp simd
        for (i64 j = 0; j < G * N; ++j) dst[j] += src[j];
      }
    }
    if (nth > 1) {
      #pragma omp for schedule(static)
      for (i64 i = 0; i < nkv; ++i) {
        float sk = 0, sv = 0;
        for (int th = 0; th < nth; ++th) {
          sk += priv[size_t(2) * nkv * th + i];
          sv += priv[size_t(2) * nkv * th + nkv + i];
        }
        dk[i] += sk;
        dv[i] += sv;
      }
    }
  }
}

// ---- materialized attention: whole score / probability matrices, one (batch, head) at a time --

void attention_scores_forward(float* P, const float* q, const float* k, const std::uint8_t* reset, i64 B, i64 T,
                              i64 q0, i64 H, i64 Hk, i64 N, i64 W) {
  const i64 Tq = T - q0, qw = H * N, kw = Hk * N;
  const float scale = float(1.0 / std::sqrt(double(N)));
  if (Tq <= 0) return;
  #pragma omp parallel for collapse(2) schedule(static)
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      float* Pb = P + (b * H + h) * Tq * T;
      // S = Q Kᵀ/√N over the whole square, then the mask and a row softmax in place
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Tq), int(T), int(N), scale,
                  q + (b * T + q0) * qw + h * N, int(qw), k + b * T * kw + hk * N, int(kw), 0.0f, Pb, int(T));
      for (i64 i = 0; i < Tq; ++i) {
        const i64 t = q0 + i;
        float* row = Pb + i * T;
        float mx = -std::numeric_limits<float>::infinity();
        for (i64 u = 0; u < T; ++u)
          if (visible(reset, b, T, t, u, W)) mx = std::max(mx, row[u]);
          else row[u] = -std::numeric_limits<float>::infinity();
        double sum = 0;
        for (i64 u = 0; u < T; ++u) {
          row[u] = row[u] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(row[u] - mx);
          sum += row[u];
        }
        const float inv = float(1.0 / sum);
        for (i64 u = 0; u < T; ++u) row[u] *= inv;
      }
    }
}

void attention_context_forward(float* out, const float* P, const float* v, i64 B, i64 T, i64 q0, i64 H, i64 Hk, i64 N) {
  const i64 Tq = T - q0, qw = H * N, kw = Hk * N;
  if (Tq <= 0) return;
  #pragma omp parallel for collapse(2) schedule(static)
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Tq), int(N), int(T), 1.0f, P + (b * H + h) * Tq * T,
                  int(T), v + b * T * kw + hk * N, int(kw), 0.0f, out + (b * T + q0) * qw + h * N, int(qw));
    }
}

void attention_context_backward(float* dP, float* dv, const float* dout, const float* P, const float* v, i64 B, i64 T,
                                i64 q0, i64 H, i64 Hk, i64 N) {
  const i64 Tq = T - q0, qw = H * N, kw = Hk * N;
  if (Tq <= 0) return;
  #pragma omp parallel for schedule(static)
  for (i64 b = 0; b < B; ++b)  // heads sharing a K/V head accumulate into the same dv: one thread per row b
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      const float* dO = dout + (b * T + q0) * qw + h * N;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Tq), int(T), int(N), 1.0f, dO, int(qw),
                  v + b * T * kw + hk * N, int(kw), 0.0f, dP + (b * H + h) * Tq * T, int(T));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(N), int(Tq), 1.0f, P + (b * H + h) * Tq * T,
                  int(T), dO, int(qw), 1.0f, dv + b * T * kw + hk * N, int(kw));
    }
}

void attention_scores_backward(float* dq, float* dk, float* dP, const float* P, const float* q, const float* k, i64 B,
                               i64 T, i64 q0, i64 H, i64 Hk, i64 N) {
  const i64 Tq = T - q0, qw = H * N, kw = Hk * N;
  const float scale = float(1.0 / std::sqrt(double(N)));
  if (Tq <= 0) return;
  #pragma omp parallel for schedule(static)
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      const float* Pb = P + (b * H + h) * Tq * T;
      float* dS = dP + (b * H + h) * Tq * T;
      for (i64 i = 0; i < Tq; ++i) {  // softmax backward, row by row
        double dot = 0;
        for (i64 u = 0; u < T; ++u) dot += double(Pb[i * T + u]) * dS[i * T + u];
        for (i64 u = 0; u < T; ++u) dS[i * T + u] = Pb[i * T + u] * (dS[i * T + u] - float(dot));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Tq), int(N), int(T), scale, dS, int(T),
                  k + b * T * kw + hk * N, int(kw), 1.0f, dq + (b * T + q0) * qw + h * N, int(qw));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(N), int(Tq), scale, dS, int(T),
                  q + (b * T + q0) * qw + h * N, int(qw), 1.0f, dk + b * T * kw + hk * N, int(kw));
    }
}

}  // namespace fast

}  // namespace scanshard::kernels
