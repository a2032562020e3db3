// kernels/rglru.cpp — see rglru.hpp.
#include "kernels/rglru.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <omp.h>

#include "kernels/linear.hpp"
#include "kernels/vec512.hpp"

namespace scanshard::kernels {

namespace ref {

template <class F>
void rglru_forward(F* y, F* h_out, F* decay, F* ga, F* gx, const F* x, const F* h_in,
                   const std::uint8_t* reset, const F* wa, const F* ba, const F* wx, const F* bx,
                   const F* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  // ga = BDa(x), gx = BDx(x)
  blockdiag_forward(ga, x, wa, ba, B * T, R, Hb);
  blockdiag_forward(gx, x, wx, bx, B * T, R, Hb);
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < R; ++c) {
      F h = h_in ? h_in[b * R + c] : F(0);
      F prod = F(1);
      for (i64 t = 0; t < T; ++t) {
        const i64 o = (b * T + t) * R + c;
        const bool rs = reset && reset[b * T + t];
        const F r = sigmoid_ref(ga[o]), i = sigmoid_ref(gx[o]);
        const F log_a = F(-kRgLruC) * r * softplus_ref(lambda[c]);   // log a = −8 r softplus(Λ)
        const F a = std::exp(log_a);
        const F abar = rs ? F(0) : a;                                  // reset: drop h_{t−1}
        const F m = rs ? F(1) : std::sqrt(F(1) - a * a);               // reset: multiplier 1
        h = abar * h + m * (i * x[o]);                                 // h_t = ā h_{t−1} + m (i x)
        prod *= abar;
        y[o] = h;
      }
      if (h_out) h_out[b * R + c] = h;
      if (decay) decay[b * R + c] = prod;
    }
}

template <class F>
void rglru_backward(F* dx, F* dh_in, F* dwa, F* dba, F* dwx, F* dbx, F* dlambda, F* work,
                    const F* dy, const F* dh_out, const F* y, const F* ga, const F* gx, const F* x,
                    const F* h_in, const std::uint8_t* reset, const F* wa, const F* wx,
                    const F* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  F* dga = work;
  F* dgx = work + B * T * R;
  const F zmin = F(1.0 / (4.0 * kSqrtGradCap * kSqrtGradCap));
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < R; ++c) {
      const F sp = softplus_ref(lambda[c]), sig_l = sigmoid_ref(lambda[c]);
      F carry = dh_out ? dh_out[b * R + c] : F(0);  // ā_{t+1} dh_{t+1} (dh_out at t = T−1)
      for (i64 t = T - 1; t >= 0; --t) {
        const i64 o = (b * T + t) * R + c;
        const bool rs = reset && reset[b * T + t];
        const F r = sigmoid_ref(ga[o]), i = sigmoid_ref(gx[o]);
        const F a = std::exp(F(-kRgLruC) * r * sp);
        const F z = F(1) - a * a;
        const F m = rs ? F(1) : std::sqrt(z);
        const F h_prev = t > 0 ? y[o - R] : (h_in ? h_in[b * R + c] : F(0));
        // dh_t = dy_t + ā_{t+1} dh_{t+1}
        const F dh = dy[o] + carry;
        // da_t = dh_t h_{t−1} + dh_t (i x) dm/da,  dm/da = −a / √max(z, zmin)   (0 at a reset)
        const F da = rs ? F(0) : dh * h_prev + dh * (i * x[o]) * (-a / std::sqrt(std::max(z, zmin)));
        const F dlog_a = da * a;
        // log a = −8 r sp:  dr = −8 sp dlog_a,  dΛ += −8 r σ(Λ) dlog_a
        const F dr = F(-kRgLruC) * sp * dlog_a;
        if (dlambda) dlambda[c] += F(-kRgLruC) * r * sig_l * dlog_a;
        dga[o] = dr * r * (F(1) - r);
        // gated input g = i x:  di = dh m x,  dx += dh m i
        dgx[o] = dh * m * x[o] * i * (F(1) - i);
        dx[o] += dh * m * i;
        carry = (rs ? F(0) : a) * dh;
      }
      if (dh_in) dh_in[b * R + c] += carry;  // dh_{−1} = ā_0 dh_0
    }
  blockdiag_backward(dx, dwa, dba, dga, x, wa, B * T, R, Hb);
  blockdiag_backward(dx, dwx, dbx, dgx, x, wx, B * T, R, Hb);
}

#define SCANSHARD_INSTANTIATE(F)                                                                   \
  template void rglru_forward<F>(F*, F*, F*, F*, F*, const F*, const F*, const std::uint8_t*,      \
                                 const F*, const F*, const F*, const F*, const F*, i64, i64, i64,  \
                                 i64);                                                             \
  template void rglru_backward<F>(F*, F*, F*, F*, F*, F*, F*, F*, const F*, const F*, const F*,    \
                                  const F*, const F*, const F*, const F*, const std::uint8_t*,     \
                                  const F*, const F*, const F*, i64, i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {
// Work split: each task owns a contiguous channel range [c0, c1) of one batch row and walks t.
// Wide ranges keep every row access a long contiguous run (the hardware prefetcher then streams
// along t; 64-channel slivers were latency-bound on page-crossing strided loads). The range is
// as wide as possible while still giving every thread a task: ceil(threads / B) slices of R,
// rounded up to whole 64-byte lines.
struct Split { i64 nblk, width; };
inline Split split(i64 B, i64 R) {
  const i64 th = omp_get_max_threads();
  i64 nblk = (th + B - 1) / B;
  i64 width = (R + nblk - 1) / nblk;
  width = (width + 15) / 16 * 16;
  nblk = (R + width - 1) / width;
  return {nblk, width};
}
inline bool aligned64(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 63) == 0; }
struct Task { i64 b, c0, c1; };
inline Task task(i64 k, const Split& s, i64 R) {
  const i64 b = k / s.nblk, c0 = (k % s.nblk) * s.width;
  return {b, c0, std::min(c0 + s.width, R)};
}

#if SCANSHARD_VEC512
// 16 channels of one forward step without a reset (the row loop of rglru_scan_forward):
//   r, i = σ(ga), σ(gx);  a = e^{nsp·r};  h ← a h + √(1 − a²)(i x);  y = h;  prod ← prod·a
// Tail = masked loads/stores for the last n mod 16 channels.
template <bool Tail>
inline void fwd16(float* y, float* h, float* prod, const float* nsp2, const float* x, const float* ga,
                  const float* gx, v512::M m) {
  using namespace v512;
  auto ld = [m](const float* p) { if constexpr (Tail) return _mm512_maskz_loadu_ps(m, p); else return _mm512_loadu_ps(p); };
  auto st = [m](float* p, V v) { if constexpr (Tail) _mm512_mask_storeu_ps(p, m, v); else _mm512_storeu_ps(p, v); };
  const V r = sigmoid(ld(ga)), i = sigmoid(ld(gx));
  const V a = exp2(_mm512_mul_ps(ld(nsp2), r));                      // nsp2 = −8 softplus(Λ)·log2 e
  const V mz = sqrt(_mm512_fnmadd_ps(a, a, set1(1.0f)));  // √(1 − a²)
  const V hn = _mm512_fmadd_ps(a, ld(h), _mm512_mul_ps(mz, _mm512_mul_ps(i, ld(x))));
  st(h, hn);
  st(y, hn);
  st(prod, _mm512_mul_ps(ld(prod), a));
}

// 16 channels of one reverse step without a reset (the row loop of rglru_scan_backward);
// √max(z, zmin) = max(√z, 1/(2·cap)).
template <bool Tail, bool Stream = false>
inline void bwd16(float* dx, float* dga, float* dgx, float* carry, float* dlog_sum, const float* nsp2,
                  const float* hp, const float* dy, const float* x, const float* ga, const float* gx,
                  v512::M m, i64 pf) {
  using namespace v512;
  static_assert(!(Tail && Stream), "streaming stores need whole aligned vectors");
  auto ld = [m](const float* p) { if constexpr (Tail) return _mm512_maskz_loadu_ps(m, p); else return _mm512_loadu_ps(p); };
  auto st = [m](float* p, V v) { if constexpr (Tail) _mm512_mask_storeu_ps(p, m, v); else _mm512_storeu_ps(p, v); };
  // dga, dgx are write-only: above the cache size they go out with non-temporal stores (no read
  // for ownership), else as ordinary stores
  auto st_out = [&st](float* p, V v) { if constexpr (Stream) _mm512_stream_ps(p, v); else st(p, v); };
  // the reverse walk over t defeats the hardware prefetchers at page boundaries: fetch the
  // previous token's rows (R floats back) into L2 meanwhile
  _mm_prefetch(reinterpret_cast<const char*>(ga - pf), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(gx - pf), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(x - pf), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(dy - pf), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(hp - pf), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(dx - pf), _MM_HINT_ET1);
  if constexpr (!Stream) {
    _mm_prefetch(reinterpret_cast<const char*>(dga - pf), _MM_HINT_ET1);
    _mm_prefetch(reinterpret_cast<const char*>(dgx - pf), _MM_HINT_ET1);
  }
  const V r = sigmoid(ld(ga)), i = sigmoid(ld(gx));
  const V ns2 = ld(nsp2);
  const V a = exp2(_mm512_mul_ps(ns2, r));
  const V z = _mm512_fnmadd_ps(a, a, set1(1.0f));  // 1 − a²
  const V sz = sqrt(z);
  const V dh = _mm512_add_ps(ld(dy), ld(carry));
  const V xv = ld(x);
  const V gin = _mm512_mul_ps(i, xv);
  // da = dh (h_{t−1} − (i x) a/√max(z, zmin));  dlog_a = da·a
  const V q = _mm512_div_ps(_mm512_mul_ps(gin, a), max(sz, set1(float(0.5 / kSqrtGradCap))));
  const V dla = _mm512_mul_ps(_mm512_mul_ps(dh, _mm512_sub_ps(ld(hp), q)), a);
  st(dlog_sum, _mm512_fmadd_ps(r, dla, ld(dlog_sum)));
  // dga = −8 sp dlog_a r(1 − r)   (nsp2 = −8 sp·log2 e: the log2 e is divided out again)
  st_out(dga, _mm512_mul_ps(_mm512_mul_ps(ns2, dla), _mm512_mul_ps(set1(1.0f / kLog2e), _mm512_fnmadd_ps(r, r, r))));
  const V dhs = _mm512_mul_ps(dh, sz);
  st_out(dgx, _mm512_mul_ps(_mm512_mul_ps(dhs, xv), _mm512_fnmadd_ps(i, i, i)));  // dh m x i(1 − i)
  st(dx, _mm512_fmadd_ps(dhs, i, ld(dx)));
  st(carry, _mm512_mul_ps(a, dh));
}
#endif
}  // namespace

void rglru_scan_forward(float* y, float* h_out, float* decay, const float* x, const float* ga,
                        const float* gx, const float* h_in, const std::uint8_t* reset,
                        const float* lambda, i64 B, i64 T, i64 R) {
  const Split sp = split(B, R);
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0;
    std::vector<float> buf(3 * n);
    float* __restrict h = buf.data();
    float* __restrict prod = h + n;
    float* __restrict nsp = prod + n;
#if SCANSHARD_VEC512
    std::vector<float> nsp2v(n);
    float* __restrict nsp2 = nsp2v.data();
#endif
    for (i64 j = 0; j < n; ++j) {
      h[j] = h_in ? h_in[b * R + c0 + j] : 0.0f;
      prod[j] = 1.0f;
      nsp[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])));  // −8 softplus(Λ)
#if SCANSHARD_VEC512
      nsp2[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])) * 1.4426950408889634);  // ·log2 e
#endif
    }
    for (i64 t = 0; t < T; ++t) {
      const i64 o = (b * T + t) * R + c0;
      const float* xr = x + o;
      const float* gar = ga + o;
      const float* gxr = gx + o;
      float* yr = y + o;
      const bool rs = reset && reset[b * T + t];
      if (rs) {
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          h[j] = sigmoid_fast(gxr[j]) * xr[j];  // ā = 0, m = 1
          prod[j] = 0.0f;
          yr[j] = h[j];
        }
      } else {
#if SCANSHARD_VEC512
        i64 j = 0;
        for (; j + 16 <= n; j += 16) fwd16<false>(yr + j, h + j, prod + j, nsp2 + j, xr + j, gar + j, gxr + j, 0);
        if (j < n) fwd16<true>(yr + j, h + j, prod + j, nsp2 + j, xr + j, gar + j, gxr + j, v512::lanes(n - j));
#else
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          float r, i;
          sigmoid2_fast(gar[j], gxr[j], r, i);
          const float a = exp_fast(nsp[j] * r);
          const float m = std::sqrt(1.0f - a * a);
          h[j] = a * h[j] + m * (i * xr[j]);
          prod[j] *= a;
          yr[j] = h[j];
        }
#endif
      }
    }
    for (i64 j = 0; j < n; ++j) {
      if (h_out) h_out[b * R + c0 + j] = h[j];
      if (decay) decay[b * R + c0 + j] = prod[j];
    }
  }
}

void rglru_scan_backward(float* dx, float* dga, float* dgx, float* dh_in, float* dlambda,
                         const float* dy, const float* dh_out, const float* y, const float* x,
                         const float* ga, const float* gx, const float* h_in,
                         const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R,
                         i64 stream_min_bytes) {
  const Split sp = split(B, R);
  [[maybe_unused]] const bool stream = 2 * B * T * R * i64(sizeof(float)) >= stream_min_bytes;
  [[maybe_unused]] const float zmin = float(1.0 / (4.0 * kSqrtGradCap * kSqrtGradCap));
  std::vector<float> dl_part(dlambda ? B * R : 0, 0.0f);  // per batch row, reduced below
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0;
    std::vector<float> buf(4 * n);
    float* __restrict carry = buf.data();
    float* __restrict nsp = carry + n;
    float* __restrict dlog_sum = nsp + n;
    float* __restrict h0 = dlog_sum + n;  // h_{−1} of this chunk (h_in or 0)
    for (i64 j = 0; j < n; ++j) {
      h0[j] = h_in ? h_in[b * R + c0 + j] : 0.0f;
      carry[j] = dh_out ? dh_out[b * R + c0 + j] : 0.0f;
      nsp[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])));
      dlog_sum[j] = 0.0f;  // Σ_t r_t dlog_a_t  (dΛ = −8 σ(Λ) Σ r dlog_a)
    }
#if SCANSHARD_VEC512
    // carry, dlog_sum, nsp2 = nsp·log2 e interleaved by 16-channel group (3 consecutive vectors):
    // as rows n floats apart they fell in the same L1 set as the 8 streamed rows of each step
    std::vector<float> ilv(3 * ((n + 15) / 16) * 16);
    float* __restrict il = ilv.data();
    auto at = [il](int r, i64 j) -> float& { return il[(j / 16) * 48 + r * 16 + j % 16]; };
    for (i64 j = 0; j < n; ++j) {
      at(0, j) = carry[j];
      at(1, j) = 0.0f;
      at(2, j) = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])) * 1.4426950408889634);
    }
#endif
    for (i64 t = T - 1; t >= 0; --t) {
      const i64 o = (b * T + t) * R + c0;
      const float* xr = x + o;
      const float* gar = ga + o;
      const float* gxr = gx + o;
      const float* dyr = dy + o;
      const float* hp = t > 0 ? y + o - R : h0;
      float* dxr = dx + o;
      float* dgar = dga + o;
      float* dgxr = dgx + o;
      const bool rs = reset && reset[b * T + t];
      if (rs) {
#if SCANSHARD_VEC512
        for (i64 j = 0; j < n; ++j) {
          const float i = sigmoid_fast(gxr[j]);
          const float dh = dyr[j] + at(0, j);
          dgar[j] = 0.0f;
          dgxr[j] = dh * xr[j] * i * (1.0f - i);
          dxr[j] += dh * i;
          at(0, j) = 0.0f;
        }
#else
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const float i = sigmoid_fast(gxr[j]);
          const float dh = dyr[j] + carry[j];
          dgar[j] = 0.0f;
          dgxr[j] = dh * xr[j] * i * (1.0f - i);
          dxr[j] += dh * i;
          carry[j] = 0.0f;
        }
#endif
      } else {
#if SCANSHARD_VEC512
        i64 j = 0;
        if (stream && aligned64(dgar) && aligned64(dgxr))
          for (; j + 16 <= n; j += 16)
            bwd16<false, true>(dxr + j, dgar + j, dgxr + j, il + j * 3, il + j * 3 + 16, il + j * 3 + 32, hp + j,
                               dyr + j, xr + j, gar + j, gxr + j, 0, R);
        for (; j + 16 <= n; j += 16)
          bwd16<false>(dxr + j, dgar + j, dgxr + j, il + j * 3, il + j * 3 + 16, il + j * 3 + 32, hp + j, dyr + j,
                       xr + j, gar + j, gxr + j, 0, R);
        if (j < n)
          bwd16<true>(dxr + j, dgar + j, dgxr + j, il + j * 3, il + j * 3 + 16, il + j * 3 + 32, hp + j, dyr + j,
                      xr + j, gar + j, gxr + j, v512::lanes(n - j), R);
#else
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          float r, i;
          sigmoid2_fast(gar[j], gxr[j], r, i);
          const float a = exp_fast(nsp[j] * r);
          const float z = 1.0f - a * a;
          const float sz = std::sqrt(z);
          const float h_prev = hp[j];
          const float dh = dyr[j] + carry[j];
          const float gin = i * xr[j];
          const float da = dh * h_prev - dh * gin * a / std::sqrt(z > zmin ? z : zmin);
          const float dlog_a = da * a;
          dlog_sum[j] += r * dlog_a;
          dgar[j] = nsp[j] * dlog_a * r * (1.0f - r);
          dgxr[j] = dh * sz * xr[j] * i * (1.0f - i);
          dxr[j] += dh * sz * i;
          carry[j] = a * dh;
        }
#endif
      }
    }
#if SCANSHARD_VEC512
    if (stream) _mm_sfence();  // order this task's streaming stores before the join
    for (i64 j = 0; j < n; ++j) {
      carry[j] = at(0, j);
      dlog_sum[j] = at(1, j);
    }
#endif
    for (i64 j = 0; j < n; ++j) {
      if (dh_in) dh_in[b * R + c0 + j] += carry[j];
      if (dlambda)
        dl_part[b * R + c0 + j] = float(-kRgLruC * sigmoid_ref(double(lambda[c0 + j]))) * dlog_sum[j];
    }
  }
  if (dlambda)
    for (i64 b = 0; b < B; ++b)
      for (i64 c = 0; c < R; ++c) dlambda[c] += dl_part[b * R + c];
}

void rglru_forward(float* y, float* h_out, float* decay, float* ga, float* gx, const float* x,
                   const float* h_in, const std::uint8_t* reset, const float* wa, const float* ba,
                   const float* wx, const float* bx, const float* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  blockdiag_forward(ga, x, wa, ba, B * T, R, Hb);
  blockdiag_forward(gx, x, wx, bx, B * T, R, Hb);
  rglru_scan_forward(y, h_out, decay, x, ga, gx, h_in, reset, lambda, B, T, R);
}

void rglru_backward(float* dx, float* dh_in, float* dwa, float* dba, float* dwx, float* dbx,
                    float* dlambda, float* work, const float* dy, const float* dh_out,
                    const float* y, const float* ga, const float* gx, const float* x,
                    const float* h_in, const std::uint8_t* reset, const float* wa, const float* wx,
                    const float* lambda, i64 B, i64 T, i64 R, i64 Hb) {
  float* dga = work;
  float* dgx = work + B * T * R;
  rglru_scan_backward(dx, dga, dgx, dh_in, dlambda, dy, dh_out, y, x, ga, gx, h_in, reset, lambda, B, T, R);
  blockdiag_backward(dx, dwa, dba, dga, x, wa, B * T, R, Hb);
  blockdiag_backward(dx, dwx, dbx, dgx, x, wx, B * T, R, Hb);
}

void rglru_carry(float* y, float* h_out, const float* h_in, const float* decay, const float* ga,
                 const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R) {
  const Split sp = split(B, R);
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0;
    std::vector<float> buf(2 * n);
    float* __restrict carry = buf.data();
    float* __restrict nsp = carry + n;
    for (i64 j = 0; j < n; ++j) {
      carry[j] = h_in[b * R + c0 + j];  // (Π_{s≤t} ā_s) h_in, built up over t
      nsp[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])));
    }
    for (i64 t = 0; t < T; ++t) {
      if (reset && reset[b * T + t]) break;  // ā = 0 from here on: nothing more to add
      const i64 o = (b * T + t) * R + c0;
      #pragma omp simd
      for (i64 j = 0; j < n; ++j) {
        carry[j] *= exp_fast(nsp[j] * sigmoid_fast(ga[o + j]));
        y[o + j] += carry[j];
      }
    }
    if (h_out)
      for (i64 j = 0; j < n; ++j) h_out[b * R + c0 + j] += decay[b * R + c0 + j] * h_in[b * R + c0 + j];
  }
}

void rglru_carry_backward(float* dh_in, const float* dy, const float* ga, const std::uint8_t* reset,
                          const float* lambda, i64 B, i64 T, i64 R) {
  const Split sp = split(B, R);
  #pragma omp parallel for schedule(static)
  for (i64 k = 0; k < B * sp.nblk; ++k) {
    const auto [b, c0, c1] = task(k, sp, R);
    const i64 n = c1 - c0;
    std::vector<float> buf(2 * n);
    float* __restrict carry = buf.data();  // ā_{t+1} g_{t+1}
    float* __restrict nsp = carry + n;
    for (i64 j = 0; j < n; ++j) {
      carry[j] = 0.0f;
      nsp[j] = float(-kRgLruC * softplus_ref(double(lambda[c0 + j])));
    }
    for (i64 t = T - 1; t >= 0; --t) {
      const i64 o = (b * T + t) * R + c0;
      const bool rs = reset && reset[b * T + t];
      #pragma omp simd
      for (i64 j = 0; j < n; ++j) {
        const float g = dy[o + j] + carry[j];
        carry[j] = rs ? 0.0f : g * exp_fast(nsp[j] * sigmoid_fast(ga[o + j]));
      }
    }
    for (i64 j = 0; j < n; ++j) dh_in[b * R + c0 + j] = carry[j];
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
