// kernels/attention.cpp — see attention.hpp.
#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
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

namespace {
bool visible(const std::uint8_t* reset, i64 b, i64 T, i64 t, i64 s, i64 W) {
  if (s > t || (W > 0 && t - s > W)) return false;
  if (reset)
    for (i64 u = s + 1; u <= t; ++u)
      if (reset[b * T + u]) return false;
  return true;
}
}  // namespace

template <class F>
void attention_forward(F* out, F* lse, const F* q, const F* k, const F* v, const std::uint8_t* reset,
                       i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W) {
  const double scale = 1.0 / std::sqrt(double(N));
  std::vector<double> s(T);
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
        // out_t = Σ_τ softmax(s)_τ v_τ
        F* ot = out + ((b * T + t) * H + h) * N;
        for (i64 j = 0; j < N; ++j) {
          double acc = 0;
          for (i64 u = 0; u <= t; ++u)
            if (visible(reset, b, T, t, u, W)) acc += std::exp(s[u] - l) * v[((b * T + u) * Hk + hk) * N + j];
          ot[j] = F(acc);
        }
      }
    }
}

template <class F>
void attention_backward(F* dq, F* dk, F* dv, const F* dout, const F* out, const F* lse, const F* q,
                        const F* k, const F* v, const std::uint8_t* reset, i64 B, i64 T, i64 H,
                        i64 Hk, i64 N, i64 W) {
  const double scale = 1.0 / std::sqrt(double(N));
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h) {
      const i64 hk = h / (H / Hk);
      for (i64 t = 0; t < T; ++t) {
        const i64 qo = ((b * T + t) * H + h) * N;
        double Dt = 0;  // D_t = dout_t · out_t
        for (i64 j = 0; j < N; ++j) Dt += double(dout[qo + j]) * out[qo + j];
        for (i64 u = 0; u <= t; ++u) {
          if (!visible(reset, b, T, t, u, W)) continue;
          const i64 ko = ((b * T + u) * Hk + hk) * N;
          double sc = 0, dp = 0;
          for (i64 j = 0; j < N; ++j) {
            sc += double(q[qo + j]) * k[ko + j];
            dp += double(dout[qo + j]) * v[ko + j];
          }
          const double p = std::exp(sc * scale - double(lse[(b * H + h) * T + t]));
          const double ds = p * (dp - Dt);  // ds = p (dp − D)
          for (i64 j = 0; j < N; ++j) {
            dq[qo + j] += F(ds * scale * k[ko + j]);
            dk[ko + j] += F(ds * scale * q[qo + j]);
            dv[ko + j] += F(p * dout[qo + j]);
          }
        }
      }
    }
}

#define SCANSHARD_INSTANTIATE(F)                                                                   \
  template void rope_forward<F>(F*, const F*, const std::int32_t*, i64, i64, i64, i64, i64, double); \
  template void rope_backward<F>(F*, const F*, const std::int32_t*, i64, i64, i64, i64, i64, double); \
  template void attention_forward<F>(F*, F*, const F*, const F*, const F*, const std::uint8_t*, i64, \
                                     i64, i64, i64, i64, i64);                                     \
  template void attention_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, \
                                      const F*, const std::uint8_t*, i64, i64, i64, i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {

// cos/sin tables [T, rot/2] for one batch row (positions may differ per row).
void rope_table(std::vector<float>& cs, std::vector<float>& sn, const std::int32_t* pos, i64 b, i64 T, i64 rot, double base) {
  const i64 n = rot / 2;
  cs.resize(T * n);
  sn.resize(T * n);
  std::vector<double> f(n);
  for (i64 j = 0; j < n; ++j) f[j] = std::pow(base, -2.0 * double(j) / double(rot));
  for (i64 t = 0; t < T; ++t) {
    const double p = pos ? pos[b * T + t] : double(t);
    for (i64 j = 0; j < n; ++j) {
      cs[t * n + j] = float(std::cos(p * f[j]));
      sn[t * n + j] = float(std::sin(p * f[j]));
    }
  }
}

void rope_fast(float* y, const float* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot,
               double base, bool inverse) {
  const i64 n = rot / 2;
  for (i64 b = 0; b < B; ++b) {
    std::vector<float> cs, sn;
    rope_table(cs, sn, pos, b, T, rot, base);
    const float sg = inverse ? -1.0f : 1.0f;
    #pragma omp parallel for schedule(static)
    for (i64 t = 0; t < T; ++t)
      for (i64 h = 0; h < H; ++h) {
        const i64 o = ((b * T + t) * H + h) * N;
        const float* c = cs.data() + t * n;
        const float* s = sn.data() + t * n;
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

constexpr i64 kKeyBlock = 64;

inline float dotf(const float* a, const float* b, i64 N) {
  float s = 0;
  #pragma omp simd reduction(+ : s)
  for (i64 j = 0; j < N; ++j) s += a[j] * b[j];
  return s;
}

}  // namespace

void rope_forward(float* y, const float* x, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  rope_fast(y, x, pos, B, T, H, N, rot, base, false);
}
void rope_backward(float* dx, const float* dy, const std::int32_t* pos, i64 B, i64 T, i64 H, i64 N, i64 rot, double base) {
  rope_fast(dx, dy, pos, B, T, H, N, rot, base, true);
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W) {
  const float scale = 1.0f / std::sqrt(float(N));
  std::vector<i64> lo(B * T);
  for (i64 b = 0; b < B; ++b) first_keys(lo.data() + b * T, reset, b, T, W);
  // one task = one (b, t) row for all H heads: the K/V rows of the window are shared by the heads
  #pragma omp parallel
  {
    std::vector<float> acc(N), sc(kKeyBlock);
    #pragma omp for schedule(dynamic, 16)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      for (i64 h = 0; h < H; ++h) {
        const i64 hk = h / (H / Hk);
        const float* qt = q + (bt * H + h) * N;
        float mx = -std::numeric_limits<float>::infinity(), sum = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        // online softmax over key blocks: rescale (acc, sum) when the running max grows
        for (i64 u0 = lo[bt]; u0 <= t; u0 += kKeyBlock) {
          const i64 u1 = std::min(t + 1, u0 + kKeyBlock);
          float bmx = mx;
          for (i64 u = u0; u < u1; ++u) {
            sc[u - u0] = dotf(qt, k + ((b * T + u) * Hk + hk) * N, N) * scale;
            bmx = std::max(bmx, sc[u - u0]);
          }
          const float corr = exp_fast(mx - bmx);  // 0 on the first block (mx = −∞ clamps)
          sum *= corr;
          #pragma omp simd
          for (i64 j = 0; j < N; ++j) acc[j] *= corr;
          for (i64 u = u0; u < u1; ++u) {
            const float p = exp_fast(sc[u - u0] - bmx);
            sum += p;
            const float* vu = v + ((b * T + u) * Hk + hk) * N;
            #pragma omp simd
            for (i64 j = 0; j < N; ++j) acc[j] += p * vu[j];
          }
          mx = bmx;
        }
        float* ot = out + (bt * H + h) * N;
        const float inv = 1.0f / sum;
        #pragma omp simd
        for (i64 j = 0; j < N; ++j) ot[j] = acc[j] * inv;
        lse[(b * H + h) * T + t] = mx + std::log(sum);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const std::uint8_t* reset, i64 B, i64 T, i64 H, i64 Hk, i64 N, i64 W) {
  const float scale = 1.0f / std::sqrt(float(N));
  const i64 G = H / Hk;
  std::vector<i64> lo(B * T);
  for (i64 b = 0; b < B; ++b) first_keys(lo.data() + b * T, reset, b, T, W);
  // D[b,h,t] = dout_t · out_t
  std::vector<float> Dt(B * H * T);
  #pragma omp parallel for schedule(static)
  for (i64 bt = 0; bt < B * T; ++bt)
    for (i64 h = 0; h < H; ++h)
      Dt[((bt / T) * H + h) * T + bt % T] = dotf(dout + (bt * H + h) * N, out + (bt * H + h) * N, N);
  // One pass over (query row, visible key) pairs: p and dp are computed once per pair;
  // dq_t is owned by the task of row t, dk/dv go to thread-private buffers reduced at the end
  // (avoids recomputing p in a second key-major pass).
  const i64 nkv = B * T * Hk * N;
  const int nth = omp_get_max_threads();
  std::vector<float> priv(nth > 1 ? size_t(2) * nkv * nth : 0, 0.0f);
  #pragma omp parallel
  {
    const int me = omp_get_thread_num();
    float* dkp = nth > 1 ? priv.data() + size_t(2) * nkv * me : dk;
    float* dvp = nth > 1 ? dkp + nkv : dv;
    #pragma omp for schedule(dynamic, 16)
    for (i64 bt = 0; bt < B * T; ++bt) {
      const i64 b = bt / T, t = bt % T;
      for (i64 h = 0; h < H; ++h) {
        const i64 hk = h / G;
        const float* qt = q + (bt * H + h) * N;
        const float* dot_ = dout + (bt * H + h) * N;
        float* dqt = dq + (bt * H + h) * N;
        const float l = lse[(b * H + h) * T + t], D = Dt[(b * H + h) * T + t];
        for (i64 u = lo[bt]; u <= t; ++u) {
          const i64 ko = ((b * T + u) * Hk + hk) * N;
          const float* ku = k + ko;
          const float* vu = v + ko;
          const float p = exp_fast(dotf(qt, ku, N) * scale - l);
          const float ds = p * (dotf(dot_, vu, N) - D) * scale;
          float* dku = dkp + ko;
          float* dvu = dvp + ko;
          #pragma omp simd
          for (i64 j = 0; j < N; ++j) {
            dqt[j] += ds * ku[j];
            dku[j] += ds * qt[j];
            dvu[j] += p * dot_[j];
          }
        }
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

}  // namespace fast

}  // namespace scanshard::kernels
