// kernels/conv1d.cpp — see conv1d.hpp. Reference: per-(b,t,r,j) loops with an explicit boundary
// test. Fast: per batch row and channel block, the lookback of each token (how many previous
// tokens it may see) is computed once, the inner loop runs over contiguous channels, one vector
// of channels at a time with the K taps summed in a register. The channel loops are compiled once
// per SIMD target (Google Highway; hwy/foreach_target.h re-includes this file per target) and
// dispatched at run time (simd.hpp); the reference and the work split are compiled once (HWY_ONCE).
#include <vector>

#include "kernels/conv1d.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/conv1d.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_math-inl.h"

// ─── per-target channel loops ──────────────────────────────────────────────────────────────────
// One task = batch row b, channels [r0, r0 + n), all T tokens; lb[t] = how many previous positions
// token t may see (≤ K − 1).
HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

// Row of the input at chunk position p ∈ [−(K−1), T) of batch row b (state for p < 0), or
// nullptr when it is an absent incoming state (= zeros).
HWY_INLINE const float* InputRow(const float* x, const float* state_in, i64 b, i64 p, i64 T, i64 R, i64 K) {
  if (p >= 0) return x + (b * T + p) * R;
  return state_in ? state_in + (b * (K - 1) + (p + K - 1)) * R : nullptr;
}

// y[t] = bias + Σ_{j ≤ lb[t]} w[K−1−j] ⊙ x[t−j]
void ConvForwardTask(float* y, const float* x, const float* state_in, const i64* lb, const float* w,
                     const float* bias, i64 b, i64 T, i64 R, i64 K, i64 r0, i64 n) {
  const DF d;
  std::vector<const float*> xs(static_cast<size_t>(K));
  for (i64 t = 0; t < T; ++t) {
    const i64 L = lb[t];
    for (i64 j = 0; j <= L; ++j) xs[size_t(j)] = InputRow(x, state_in, b, t - j, T, R, K);
    float* yr = y + (b * T + t) * R + r0;
    ForVectors(size_t(n), [&](auto io, size_t i) {
      VF acc = bias ? io.ld(bias + r0 + i) : hn::Zero(d);
      for (i64 j = 0; j <= L; ++j)
        if (xs[size_t(j)]) acc = hn::MulAdd(io.ld(w + (K - 1 - j) * R + r0 + i), io.ld(xs[size_t(j)] + r0 + i), acc);
      io.st(yr + i, acc);
    });
  }
}

// dx[t−j] += dy[t] ⊙ w[K−1−j];  acc[K−1−j] += dy[t] ⊙ x[t−j];  acc[K] += dy[t]   (j ≤ lb[t]);
// acc [K+1, R] is the task's private dw / dbias accumulator (nullptr = neither wanted), dx rows
// before the chunk go to dstate_in (either nullable).
void ConvBackwardTask(float* dx, float* dstate_in, float* acc, const float* dy, const float* x,
                      const float* state_in, const i64* lb, const float* w, bool want_dw, bool want_dbias,
                      i64 b, i64 T, i64 R, i64 K, i64 r0, i64 n) {
  // row by row (one pass over the channels per tap): interleaving the taps inside one vector loop
  // was 1.4x slower (bench, AVX3)
  for (i64 t = 0; t < T; ++t) {
    const float* g = dy + (b * T + t) * R + r0;
    if (want_dbias) {
      float* ab = acc + K * R + r0;
      ForVectors(size_t(n), [&](auto io, size_t i) { io.st(ab + i, hn::Add(io.ld(ab + i), io.ld(g + i))); });
    }
    for (i64 j = 0; j <= lb[t]; ++j) {
      const i64 tap = (K - 1 - j) * R + r0;
      if (float* dxr = const_cast<float*>(InputRow(dx, dstate_in, b, t - j, T, R, K))) {
        dxr += r0;
        ForVectors(size_t(n), [&](auto io, size_t i) {
          io.st(dxr + i, hn::MulAdd(io.ld(g + i), io.ld(w + tap + i), io.ld(dxr + i)));
        });
      }
      const float* xr = InputRow(x, state_in, b, t - j, T, R, K);
      if (want_dw && xr) {
        xr += r0;
        float* aw = acc + tap;
        ForVectors(size_t(n), [&](auto io, size_t i) {
          io.st(aw + i, hn::MulAdd(io.ld(g + i), io.ld(xr + i), io.ld(aw + i)));
        });
      }
    }
  }
}

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace scanshard::kernels {

namespace {

// Input at chunk position p ∈ [−(K−1), T): state for p < 0, x otherwise.
template <class F>
F ext(const F* x, const F* state_in, i64 b, i64 p, i64 r, i64 T, i64 R, i64 K) {
  if (p >= 0) return x[(b * T + p) * R + r];
  return state_in ? state_in[(b * (K - 1) + (p + K - 1)) * R + r] : F(0);
}

// true iff no document starts at chunk positions lo+1 … hi (only positions inside the chunk).
bool no_reset_between(const std::uint8_t* reset, i64 b, i64 lo, i64 hi, i64 T) {
  if (!reset) return true;
  for (i64 s = (lo + 1 > 0 ? lo + 1 : 0); s <= hi && s < T; ++s)
    if (reset[b * T + s]) return false;
  return true;
}

// lookback[t] = how many previous positions token t may see (≤ K−1), per batch row.
void lookbacks(i64* lb, const std::uint8_t* reset, i64 b, i64 T, i64 K) {
  i64 last = -(K - 1) - 1;  // no reset yet: everything in the state is visible
  for (i64 t = 0; t < T; ++t) {
    if (reset && reset[b * T + t]) last = t;
    const i64 v = t - (last < -(K - 1) ? -(K - 1) : last);
    lb[t] = v < K - 1 ? v : K - 1;
  }
}

}  // namespace

namespace ref {

template <class F>
void conv1d_forward(F* y, F* state_out, const F* x, const F* state_in, const std::uint8_t* reset,
                    const F* w, const F* bias, i64 B, i64 T, i64 R, i64 K) {
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 r = 0; r < R; ++r) {
        // y[t] = bias + Σ_j w[K−1−j] x[t−j]   over j with no document start in (t−j, t]
        double acc = bias ? bias[r] : 0.0;
        for (i64 j = 0; j < K; ++j)
          if (no_reset_between(reset, b, t - j, t, T))
            acc += double(w[(K - 1 - j) * R + r]) * ext(x, state_in, b, t - j, r, T, R, K);
        y[(b * T + t) * R + r] = F(acc);
      }
  if (state_out)
    for (i64 b = 0; b < B; ++b)
      for (i64 k = 0; k < K - 1; ++k)
        for (i64 r = 0; r < R; ++r) {
          // state_out[k] = x[p] if no document starts in (p, T−1], else 0;  p = T − (K−1) + k
          const i64 p = T - (K - 1) + k;
          state_out[(b * (K - 1) + k) * R + r] =
              no_reset_between(reset, b, p, T - 1, T) ? ext(x, state_in, b, p, r, T, R, K) : F(0);
        }
}

template <class F>
void conv1d_backward(F* dx, F* dstate_in, F* dw, F* dbias, const F* dy, const F* dstate_out,
                     const F* x, const F* state_in, const std::uint8_t* reset, const F* w, i64 B,
                     i64 T, i64 R, i64 K) {
  // d(input at p) accumulates into dx (p ≥ 0) or dstate_in (p < 0)
  auto dext = [&](i64 b, i64 p, i64 r, F g) {
    if (p >= 0) { if (dx) dx[(b * T + p) * R + r] += g; }
    else if (dstate_in) dstate_in[(b * (K - 1) + (p + K - 1)) * R + r] += g;
  };
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t)
      for (i64 r = 0; r < R; ++r) {
        const F g = dy[(b * T + t) * R + r];
        if (dbias) dbias[r] += g;                                        // dbias += dy
        for (i64 j = 0; j < K; ++j)
          if (no_reset_between(reset, b, t - j, t, T)) {
            if (dw) dw[(K - 1 - j) * R + r] += g * ext(x, state_in, b, t - j, r, T, R, K);  // dw += dy x
            dext(b, t - j, r, g * w[(K - 1 - j) * R + r]);                                   // dx += dy w
          }
      }
  if (dstate_out)
    for (i64 b = 0; b < B; ++b)
      for (i64 k = 0; k < K - 1; ++k)
        for (i64 r = 0; r < R; ++r) {
          const i64 p = T - (K - 1) + k;
          if (no_reset_between(reset, b, p, T - 1, T)) dext(b, p, r, dstate_out[(b * (K - 1) + k) * R + r]);
        }
}

#define SCANSHARD_INSTANTIATE(F)                                                                    \
  template void conv1d_forward<F>(F*, F*, const F*, const F*, const std::uint8_t*, const F*,        \
                                  const F*, i64, i64, i64, i64);                                    \
  template void conv1d_backward<F>(F*, F*, F*, F*, const F*, const F*, const F*, const F*,          \
                                   const std::uint8_t*, const F*, i64, i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {
constexpr i64 kBlock = 256;  // channels per task
HWY_EXPORT(ConvForwardTask);
HWY_EXPORT(ConvBackwardTask);
}

void conv1d_forward(float* y, float* state_out, const float* x, const float* state_in,
                    const std::uint8_t* reset, const float* w, const float* bias, i64 B, i64 T,
                    i64 R, i64 K) {
  const i64 nblk = (R + kBlock - 1) / kBlock;
  std::vector<i64> lb(B * T);
  for (i64 b = 0; b < B; ++b) lookbacks(lb.data() + b * T, reset, b, T, K);
  #pragma omp parallel for collapse(2) schedule(static)
  for (i64 b = 0; b < B; ++b)
    for (i64 blk = 0; blk < nblk; ++blk) {
      const i64 r0 = blk * kBlock, r1 = r0 + kBlock < R ? r0 + kBlock : R;
      HWY_DYNAMIC_DISPATCH(ConvForwardTask)(y, x, state_in, lb.data() + b * T, w, bias, b, T, R, K, r0, r1 - r0);
    }
  if (state_out)
    for (i64 b = 0; b < B; ++b) {
      // the last reset position inside the chunk decides which tail entries stay visible
      i64 last = -K;
      if (reset)
        for (i64 t = 0; t < T; ++t) if (reset[b * T + t]) last = t;
      for (i64 k = 0; k < K - 1; ++k) {
        const i64 p = T - (K - 1) + k;
        float* so = state_out + (b * (K - 1) + k) * R;
        const float* src = p >= 0 ? x + (b * T + p) * R
                                  : (state_in ? state_in + (b * (K - 1) + (p + K - 1)) * R : nullptr);
        const bool vis = p >= last && src;
        for (i64 r = 0; r < R; ++r) so[r] = vis ? src[r] : 0.0f;
      }
    }
}

void conv1d_backward(float* dx, float* dstate_in, float* dw, float* dbias, const float* dy,
                     const float* dstate_out, const float* x, const float* state_in,
                     const std::uint8_t* reset, const float* w, i64 B, i64 T, i64 R, i64 K) {
  const i64 nblk = (R + kBlock - 1) / kBlock;
  std::vector<i64> lb(B * T);
  for (i64 b = 0; b < B; ++b) lookbacks(lb.data() + b * T, reset, b, T, K);
  // dstate_out first (it adds into dx / dstate_in like any other consumer)
  if (dstate_out)
    for (i64 b = 0; b < B; ++b) {
      i64 last = -K;
      if (reset)
        for (i64 t = 0; t < T; ++t) if (reset[b * T + t]) last = t;
      for (i64 k = 0; k < K - 1; ++k) {
        const i64 p = T - (K - 1) + k;
        if (p < last) continue;
        const float* g = dstate_out + (b * (K - 1) + k) * R;
        float* dst = p >= 0 ? (dx ? dx + (b * T + p) * R : nullptr)
                            : (dstate_in ? dstate_in + (b * (K - 1) + (p + K - 1)) * R : nullptr);
        if (dst) for (i64 r = 0; r < R; ++r) dst[r] += g[r];
      }
    }
  // Each task owns channels [r0, r1) of one batch row: dx is written per channel, dw/dbias are
  // reduced per batch row afterwards through a private [K+1, R] accumulator per thread.
  #pragma omp parallel
  {
    std::vector<float> acc((dw || dbias) ? (K + 1) * R : 0, 0.0f);
    #pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 blk = 0; blk < nblk; ++blk) {
        const i64 r0 = blk * kBlock, r1 = r0 + kBlock < R ? r0 + kBlock : R;
        HWY_DYNAMIC_DISPATCH(ConvBackwardTask)(dx, dstate_in, acc.data(), dy, x, state_in, lb.data() + b * T, w,
                                               dw != nullptr, dbias != nullptr, b, T, R, K, r0, r1 - r0);
      }
    if (dw || dbias) {
      #pragma omp critical
      {
        if (dw) for (i64 i = 0; i < K * R; ++i) dw[i] += acc[i];
        if (dbias) for (i64 r = 0; r < R; ++r) dbias[r] += acc[K * R + r];
      }
    }
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
#endif  // HWY_ONCE
