// kernels/rwkv6.cpp — see rwkv6.hpp. Reference: rwkv6_ref.cpp. Fast: chunked form per (b, h)
// (OpenMP over B·H), chunk tensors copied to contiguous [L,N] tiles; every small matrix product is written as rows
// accumulated in vector registers (RowAcc, head size a compile-time 32 or 64; rows_acc_n, blocks
// of up to 4 vectors with a partial last one, for any other head size), with Kᵀ, Vᵀ, S_0ᵀ, dSᵀ
// tiles so no product needs a horizontal sum. The backward recomputes the chunk-boundary states
// (kept transposed, S_0ᵀ, so S_0 g_t needs no transpose), then walks the chunks in reverse.
// The chunk kernels (RowAcc rows, omp simd loops) are compiled once per SIMD target (Google
// Highway's foreach_target.h re-includes this file per target; the code inside is plain C++ that
// the compiler vectorises for that target) and dispatched per (b, h) work item at run time
// (simd.hpp); the work split is compiled once (HWY_ONCE).
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv6_count.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <vector>

#ifndef SCANSHARD_KERNELS_RWKV6_SHARED
#define SCANSHARD_KERNELS_RWKV6_SHARED
namespace scanshard::kernels::wkv6_detail {
constexpr float kMaxLogSpan = 60.0f;  // bound on −A where e^{−A} is used (e^{60} ≈ 1e26)
constexpr i64 kMaxN = 256;            // head sizes above this fall back to the reference
// The backward keeps the state at the start of every kCheckpointTokens / chunk chunks and
// recomputes the states in between (chunks ≥ kCheckpointTokens: every chunk's state is kept).
constexpr i64 kCheckpointTokens = 16;
// Floats every tile and state buffer carries past its end: the runtime-head-size rows read up to
// one vector (≤ 64 floats on any target) past a row's last lane (rows_acc_n).
constexpr i64 kRowSlack = 64;
}  // namespace scanshard::kernels::wkv6_detail
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/rwkv6.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace scanshard::kernels::HWY_NAMESPACE {

using namespace wkv6_detail;


// A row of NC floats kept in vector registers (GCC/Clang vector extension of the target's native
// width: 16 lanes on AVX-512, 8 on AVX2, 4 on SSE4/NEON/SVE). Used when the head size is a
// compile-time multiple of 16, so the accumulators of the small matrix products never round-trip
// memory. A vector wider than the target (the 64-byte type everywhere) is lowered piecewise
// through memory on AVX2: the chunked WKV-6 was then slower than the sequential reference.
#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128 && HWY_MAX_BYTES >= 64
constexpr int kRowVecBytes = 64;
#elif !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128 && HWY_MAX_BYTES >= 32
constexpr int kRowVecBytes = 32;
#else
constexpr int kRowVecBytes = 16;
#endif
constexpr int kRowLanes = kRowVecBytes / int(sizeof(float));
typedef float vrow __attribute__((vector_size(kRowVecBytes)));
HWY_INLINE vrow ldv(const float* p) { vrow x; std::memcpy(&x, p, sizeof x); return x; }
HWY_INLINE void stv(float* p, vrow x) { std::memcpy(p, &x, sizeof x); }
// ldv, the vector kept in a register: an empty asm claims to modify it. Without it GCC folds
// rows_block's M loads into every multiply-add (`vfmadd231ps mem`), loading each M vector once per
// output row (R times) — on AVX2 10 loads per 8 multiply-adds, load-bound (perf annotate,
// docs/kernels-wkv-2026-12-07.md §9). Not on AVX-512, where the folded form was as fast at N = 64
// and ~10 % faster at runtime head sizes (32 registers, 4 rows per block).
HWY_INLINE vrow ldv_reg(const float* p) {
  vrow x = ldv(p);
#if (defined(__x86_64__) || defined(__i386__)) && !(HWY_TARGET <= HWY_AVX3)
  asm("" : "+v"(x));
#elif defined(__aarch64__)
  asm("" : "+w"(x));
#endif
  return x;
}
template <int NC>
struct RowAcc {
  static constexpr int kV = NC >= kRowLanes ? NC / kRowLanes : 1;  // (NC < 16: never used, kept well-formed)
  vrow a[kV];
  void zero() {
#pragma GCC unroll 16
    for (int q = 0; q < kV; ++q) a[q] = vrow{};
  }
  void load(const float* p, float scale) {
#pragma GCC unroll 16
    for (int q = 0; q < kV; ++q) a[q] = scale * ldv(p + kRowLanes * q);
  }
  // acc += Σ_{m<M} coef[m·cs] · rows[m·rs .. m·rs + NC)
  void fma_rows(const float* coef, i64 cs, const float* rows, i64 rs, i64 M) {
    for (i64 m = 0; m < M; ++m) {
      const float c = coef[m * cs];
      const float* r = rows + m * rs;
#pragma GCC unroll 16
      for (int q = 0; q < kV; ++q) a[q] += c * ldv(r + kRowLanes * q);
    }
  }
  void store(float* p) const {
#pragma GCC unroll 16
    for (int q = 0; q < kV; ++q) stv(p + kRowLanes * q, a[q]);
  }
  void add_to(float* p) const {
#pragma GCC unroll 16
    for (int q = 0; q < kV; ++q) stv(p + kRowLanes * q, ldv(p + kRowLanes * q) + a[q]);
  }
};
template <int NC> inline constexpr bool kVec = NC > 0 && NC % 16 == 0;

// ─── rows of a runtime head size (N not 32 or 64) ─────────────────────────────────────────────────
// RowAcc's products with n known only at run time: the row is cut into blocks of up to 4 vectors
// accumulated in registers (one load per multiply-add, as RowAcc), the row's last vector possibly
// partial. Reads of `rows` and `init` may run up to one vector past lane n: every buffer they
// point into (the tiles, the state and state-gradient buffers) carries kRowSlack floats past its
// end, and such lanes never reach the output. The output's lanes ≥ n are not touched. Before,
// these products were `omp simd` loops accumulating through memory (two loads and a store per
// multiply-add) beside scalar dot products.
enum class RowMode { store, add };
// out[0..cols) = (or +=) the CW vectors a, the last one possibly partial (lanes ≥ cols untouched)
template <int CW>
HWY_INLINE void store_block(float* out, RowMode mode, const vrow* a, i64 cols) {
  const i64 w = cols - kRowLanes * (CW - 1);  // lanes of the last vector in the row, 1..kRowLanes
#pragma GCC unroll 4
  for (int q = 0; q < CW; ++q) {
    float* o = out + kRowLanes * q;
    if (q + 1 < CW || w == kRowLanes) {
      stv(o, mode == RowMode::add ? ldv(o) + a[q] : a[q]);
      continue;
    }
    alignas(64) float part[kRowLanes];
    stv(part, a[q]);
    for (int j = 0; j < kRowLanes && j < w; ++j) o[j] = mode == RowMode::add ? o[j] + part[j] : part[j];
  }
}
template <int CW>
HWY_INLINE void row_block(float* out, RowMode mode, const float* init, float scale, const float* coef, i64 cs,
                          const float* rows, i64 rs, i64 M, i64 cols) {
  vrow a[CW];
#pragma GCC unroll 4
  for (int q = 0; q < CW; ++q) a[q] = init ? scale * ldv(init + kRowLanes * q) : vrow{};
  for (i64 m = 0; m < M; ++m) {
    const float c = coef[m * cs];
    const float* r = rows + m * rs;
#pragma GCC unroll 4
    for (int q = 0; q < CW; ++q) a[q] += c * ldv(r + kRowLanes * q);
  }
  store_block<CW>(out, mode, a, cols);
}
// out[0..n) = scale·init[0..n) (0 without init) + Σ_{m<M} coef[m·cs] · rows[m·rs .. m·rs + n)
// (RowMode::add: out += that), for any n.
inline void rows_acc_n(float* out, RowMode mode, const float* init, float scale, const float* coef, i64 cs,
                       const float* rows, i64 rs, i64 M, i64 n) {
  constexpr i64 kBlock = 4 * kRowLanes;
  for (i64 c0 = 0; c0 < n; c0 += kBlock) {
    const i64 cols = std::min(kBlock, n - c0);
    const float* in = init ? init + c0 : nullptr;
    switch ((cols + kRowLanes - 1) / kRowLanes) {
      case 1: row_block<1>(out + c0, mode, in, scale, coef, cs, rows + c0, rs, M, cols); break;
      case 2: row_block<2>(out + c0, mode, in, scale, coef, cs, rows + c0, rs, M, cols); break;
      case 3: row_block<3>(out + c0, mode, in, scale, coef, cs, rows + c0, rs, M, cols); break;
      default: row_block<4>(out + c0, mode, in, scale, coef, cs, rows + c0, rs, M, cols); break;
    }
  }
}
// One output row of a chunk product, head size NC (compile time: RowAcc) or n (NC = 0).
template <int NC>
HWY_INLINE void acc_row(float* out, RowMode mode, const float* init, float scale, const float* coef, i64 cs,
                    const float* rows, i64 rs, i64 M, i64 n) {
  if constexpr (kVec<NC>) {
    RowAcc<NC> a;
    if (init) a.load(init, scale);
    else a.zero();
    a.fma_rows(coef, cs, rows, rs, M);
    if (mode == RowMode::add) a.add_to(out);
    else a.store(out);
  } else {
    rows_acc_n(out, mode, init, scale, coef, cs, rows, rs, M, n);
  }
}

// R output rows × CW vectors of columns of the product below, each row started from its initial row:
//   out[r·ldo + 0..cols) = sc[r]·S[r·lds + 0..cols) + Σ_{i<K} X[r·xr + i·xk] · M[i·ldm + 0..cols)
// (S null: from 0). Each loaded vector of M serves R multiply-adds. The last vector may be
// partial: S and M reads may run up to one vector past cols (buffers with kRowSlack; such lanes
// never reach out). out may alias S (a block reads its S rows before it stores them).
template <int R, int CW>
HWY_INLINE void rows_block_from(float* out, i64 ldo, const float* S, i64 lds, const float* sc, const float* X, i64 xr,
                                i64 xk, const float* M, i64 ldm, i64 K, i64 cols) {
  vrow acc[R][CW];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int q = 0; q < CW; ++q) acc[r][q] = S ? sc[r] * ldv(S + r * lds + q * kRowLanes) : vrow{};
  for (i64 i = 0; i < K; ++i) {
    vrow m[CW];
#pragma GCC unroll 16
    for (int q = 0; q < CW; ++q) m[q] = ldv_reg(M + i * ldm + q * kRowLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const float x = X[r * xr + i * xk];
#pragma GCC unroll 16
      for (int q = 0; q < CW; ++q) acc[r][q] += x * m[q];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) store_block<CW>(out + r * ldo, RowMode::store, acc[r], cols);
}
// R output rows × CW vectors of columns of the product below: out[r][0..cols) = Σ_{i<K} X[r·ldx + i]
// M[i·ldm ..] (the last vector possibly partial: M's reads may run up to one vector past cols).
template <int R, int CW>
HWY_INLINE void rows_block(float* out, i64 ldo, const float* X, i64 ldx, const float* M, i64 ldm, i64 K, i64 cols) {
  rows_block_from<R, CW>(out, ldo, nullptr, 0, nullptr, X, ldx, 1, M, ldm, K, cols);
}
// rows_block for R rows over a runtime cols ≤ 4 vectors (the vector count picked at run time)
template <int R>
HWY_INLINE void rows_block_n(float* out, i64 ldo, const float* X, i64 ldx, const float* M, i64 ldm, i64 K, i64 cols) {
  switch ((cols + kRowLanes - 1) / kRowLanes) {
    case 1: rows_block<R, 1>(out, ldo, X, ldx, M, ldm, K, cols); break;
    case 2: rows_block<R, 2>(out, ldo, X, ldx, M, ldm, K, cols); break;
    case 3: rows_block<R, 3>(out, ldo, X, ldx, M, ldm, K, cols); break;
    default: rows_block<R, 4>(out, ldo, X, ldx, M, ldm, K, cols); break;
  }
}

// out[t][:] = Σ_{i<K} X[t·ldx + i] · M[i][:] for t < L (M: K rows of NC floats, or n at NC = 0; out
// rows ldo apart): the chunk's [L,K]·[K,N] products. Register-blocked: R rows at once over a
// column block of up to 4 vectors, so each loaded vector of M serves R multiply-adds (RowAcc's
// one row per pass loads every M vector for a single multiply-add). R·4 accumulators: 16 with 32
// vector registers (AVX-512), 8 below. NC = 0 (runtime head size): the same blocks with the row's
// last vector possibly partial (before: one output row per pass through rows_acc_n). R rows ×
// CWM vectors at most: the default is the backward's shape; the forward's is kFwdRows × kFwdCW.
constexpr int kRows = kRowVecBytes == 64 ? 4 : 2;
// The forward's blocks: 4 rows × up to kFwdCW vectors of accumulators, 16 of AVX-512's 32
// registers, 8 of AVX2's 16. On AVX2 2 rows × 4 vectors (kRows' shape) was 3–13 % slower in the
// state update and 3–15 % slower over the forward in (r ⊙ e^A) S_0; on AVX-512 4 × 4 and 4 × 2
// were within 1 % (docs/kernels-wkv-2026-12-07.md §8).
constexpr int kFwdRows = 4, kFwdCW = kRowVecBytes == 64 ? 4 : 2;
template <int NC, int R = kRows, int CWM = 4>
void rows_times(float* out, i64 ldo, const float* X, i64 ldx, const float* M, i64 K, i64 L, i64 n = NC) {
  if constexpr (!kVec<NC>) {
    constexpr i64 kBlock = CWM * kRowLanes;
    for (i64 c0 = 0; c0 < n; c0 += kBlock) {
      const i64 cols = std::min(kBlock, n - c0);
      i64 t = 0;
      for (; t + R <= L; t += R) rows_block_n<R>(out + t * ldo + c0, ldo, X + t * ldx, ldx, M + c0, n, K, cols);
      for (; t < L; ++t) rows_block_n<1>(out + t * ldo + c0, ldo, X + t * ldx, ldx, M + c0, n, K, cols);
    }
  } else {
    constexpr int kV = NC / kRowLanes;
    constexpr int CW = kV < CWM ? kV : CWM;
    i64 t = 0;
    for (; t + R <= L; t += R)
      for (int c0 = 0; c0 < kV; c0 += CW)
        rows_block<R, CW>(out + t * ldo + c0 * kRowLanes, ldo, X + t * ldx, ldx, M + c0 * kRowLanes, NC, K,
                          CW * kRowLanes);
    for (; t < L; ++t) acc_row<NC>(out + t * ldo, RowMode::store, nullptr, 0.0f, X + t * ldx, 1, M, NC, K, NC);
  }
}

// Scratch of one (b, h) work item: chunk tiles [C,N] and [C,C].
struct Tiles {
  i64 C = 0, N = 0;
  std::vector<float> R, K, V, G, A, RT, KT, KH, EA, EK, EH, EL, P, dP, dR, dK, dV, dA, S0T, dST, KTT, VT;
  void resize(i64 c, i64 n) {
    C = c;
    N = n;
    const i64 slack = n == 32 || n == 64 ? 0 : kRowSlack;  // only rows_acc_n reads past a row
    auto size = [&](std::vector<float>& x, i64 count) { x.assign(static_cast<size_t>(count + slack), 0.f); };
    for (auto* x : {&R, &K, &V, &G, &RT, &KT, &KH, &EA, &EK, &EH, &dR, &dK, &dV}) size(*x, c * n);
    size(A, (c + 1) * n);
    size(dA, (c + 1) * n);
    size(EL, n);
    size(P, c * c);
    size(dP, c * c);
    size(S0T, n * n);
    size(dST, n * n);
    size(KTT, n * c);
    size(VT, n * c);
  }
};

// NC > 0: the head size as a compile-time constant (rows of N floats stay in registers); 0: runtime.
template <int NC>
inline i64 head(const Tiles& W) { return NC > 0 ? NC : W.N; }

// Horizontal sum / min of a row vector as a tree of half-width operations: the lane-by-lane loops
// were a chain of kRowLanes dependent scalar operations (~60 cycles on AVX-512), a tenth of the
// tiled forward's time per token in cache (tile_factors' d_t, chunk_decay's cut test).
template <int Bytes>
struct HalfVec {
  typedef float type __attribute__((vector_size(Bytes)));
};
template <int Bytes, bool Min>
HWY_INLINE float reduce_tree(typename HalfVec<Bytes>::type x) {
  if constexpr (Bytes == 8) {
    return Min ? (x[0] < x[1] ? x[0] : x[1]) : x[0] + x[1];
  } else {
    typename HalfVec<Bytes / 2>::type lo, hi;
    std::memcpy(&lo, &x, Bytes / 2);
    std::memcpy(&hi, reinterpret_cast<const char*>(&x) + Bytes / 2, Bytes / 2);
    return reduce_tree<Bytes / 2, Min>(Min ? (lo < hi ? lo : hi) : lo + hi);
  }
}
HWY_INLINE float hsum(vrow x) { return reduce_tree<kRowVecBytes, false>(x); }
HWY_INLINE float hmin(vrow x) { return reduce_tree<kRowVecBytes, true>(x); }

// The reductions over a head row in vector registers when the head size is a compile-time vector
// multiple (GCC left the `omp simd reduction` loops scalar: perf annotate of backward_bh showed
// vfmadd231ss over the 64 lanes of every dot product); a plain loop otherwise.
// Σ_i a[i]·b[i]·(c ? c[i] : 1)
template <int NC>
inline float dot(const float* a, const float* b, i64 n, const float* c = nullptr) {
  if constexpr (kVec<NC>) {
    vrow acc[2] = {};
#pragma GCC unroll 16
    for (int q = 0; q < NC / kRowLanes; ++q) {
      const vrow x = ldv(a + kRowLanes * q) * ldv(b + kRowLanes * q);
      acc[q % 2] += c ? x * ldv(c + kRowLanes * q) : x;
    }
    return hsum(acc[0] + acc[1]);
  } else {
    vrow acc = {};
    i64 i = 0;
    for (; i + kRowLanes <= n; i += kRowLanes) {
      const vrow x = ldv(a + i) * ldv(b + i);
      acc += c ? x * ldv(c + i) : x;
    }
    float total = hsum(acc);
    for (; i < n; ++i) total += a[i] * b[i] * (c ? c[i] : 1.0f);  // the last partial vector
    return total;
  }
}
// Whether any of x[0..n) is below lo.
template <int NC>
inline bool below(const float* x, float lo, i64 n) {
  if constexpr (kVec<NC>) {
    vrow mn = ldv(x);
#pragma GCC unroll 16
    for (int q = 1; q < NC / kRowLanes; ++q) {
      const vrow y = ldv(x + kRowLanes * q);
      mn = y < mn ? y : mn;
    }
    return hmin(mn) < lo;
  } else {
    bool any = false;
    i64 i = 0;
    if (n >= kRowLanes) {
      vrow mn = ldv(x);
      for (i = kRowLanes; i + kRowLanes <= n; i += kRowLanes) {
        const vrow y = ldv(x + i);
        mn = y < mn ? y : mn;
      }
      any = hmin(mn) < lo;
    }
    for (; i < n; ++i) any |= x[i] < lo;  // the last partial vector
    return any;
  }
}

// Length of the chunk starting at t0 and its cumulative log decay A[0..L] (tile rows): the chunk
// stops early once −A_t > kMaxLogSpan at a token t ≥ 1 (that token would need e^{−A_t}).
template <int NC>
i64 chunk_decay(Tiles& W, const float* logw, i64 b, i64 t0, i64 T, i64 D, i64 hN, i64 chunk) {
  const i64 N = head<NC>(W);
  float* A = W.A.data();
  std::fill(A, A + N, 0.0f);
  i64 L = 0;
  for (i64 t = 0; t < chunk && t0 + t < T; ++t) {
    if (t > 0 && below<NC>(A + t * N, -kMaxLogSpan, N)) break;
    const float* lw = logw + (b * T + t0 + t) * D + hN;
#pragma omp simd
    for (i64 i = 0; i < N; ++i) A[(t + 1) * N + i] = A[t * N + i] + lw[i];
    L = t + 1;
  }
  return L;
}

// Rows t0..t0+L of head hN into a contiguous [L,N] tile. With a compile-time head size the row is
// copied in vector registers: std::copy_n's memmove call per 256-byte row was 7–10 % of the
// chunked kernels' samples (perf, bench_rwkv wkv6).
template <int NC>
inline void load_tile(float* dst, const float* src, i64 b, i64 t0, i64 L, i64 T, i64 D, i64 hN, i64 N) {
  for (i64 t = 0; t < L; ++t) {
    const float* from = src + (b * T + t0 + t) * D + hN;
    float* to = dst + t * N;
    if constexpr (kVec<NC>) {
#pragma GCC unroll 16
      for (int q = 0; q < NC / kRowLanes; ++q) stv(to + kRowLanes * q, ldv(from + kRowLanes * q));
    } else {
      std::copy_n(from, N, to);
    }
  }
}

// Software prefetch of the rows of the chunk a loop processes next (into L2, prefetcht1 on x86),
// a share per token of the current chunk's per-token loop (decay_factors) so the prefetches do not
// queue in one burst. A head row is N floats at a stride of D floats: without them every tile
// load (load_tile, chunk_decay's log w) and every read-modify-write of an output row stalled on
// DRAM — perf (cpu-clock, N = 64, chunk 16, AVX3) put 30–35 % of the forward's and ~45 % of the
// backward's samples on those loads (docs/kernels-wkv-2026-12-07.md §7).
inline void prefetch_row(const float* p, i64 n) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  for (std::uintptr_t l = a & ~std::uintptr_t(63); l < a + sizeof(float) * std::uintptr_t(n); l += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(l), 0, 2);
    // GCC counts a prefetch as no side effect and, assuming loops finite (-ffinite-loops, the
    // C++ default), deleted the loops around it: the empty asm keeps them
    asm volatile("" : : "r"(l));
  }
}
struct Ahead {
  static constexpr int kMaxStreams = 9;
  const float* src[kMaxStreams] = {};
  int n = 0;
  i64 from = 0, to = 0;       // tokens of the next chunk (to ≤ from: nothing to prefetch)
  i64 b = 0, T = 0, D = 0, hN = 0, N = 0;
  Ahead(i64 b_, i64 T_, i64 D_, i64 hN_, i64 N_) : b(b_), T(T_), D(D_), hN(hN_), N(N_) {}
  Ahead& rows(std::initializer_list<const float*> streams) {
    n = 0;
    for (const float* s : streams) src[n++] = s;
    return *this;
  }
  Ahead& tokens(i64 f, i64 t) {
    from = f, to = std::min(t, T);
    return *this;
  }
  // the t-th of L equal shares of the next chunk's rows
  void part(i64 t, i64 L) const {
    const i64 len = to - from;
    if (len <= 0) return;
    for (i64 row = from + t * len / L; row < from + (t + 1) * len / L; ++row)
      for (int s = 0; s < n; ++s) prefetch_row(src[s] + (b * T + row) * D + hN, N);
  }
};

// exp_fast (kernels.hpp) on a vector of the target's width, the same operations lane by lane:
// GCC compiled decay_factors' `omp simd` loop of exp_fast calls to scalar code on AVX2 (perf,
// N = 64, chunk 16: 53–58 % of the AVX2 forward's samples; main's build has the scalar code too).
typedef std::uint32_t vbits __attribute__((vector_size(kRowVecBytes)));
HWY_INLINE vrow exp_fast_v(vrow x) {
  x = x < -87.3f ? vrow{} - 87.3f : x;
  x = x > 88.0f ? vrow{} + 88.0f : x;
  const vrow t = x * 1.44269504088896341f + 12582912.0f;  // 1.5·2²³ + k, exactly
  const vrow k = t - 12582912.0f;
  const vrow r = x - k * 0.693147180559945309f;
  const vrow p = exp_poly(r);
  vbits tb;
  std::memcpy(&tb, &t, sizeof tb);
  const vbits bits = (tb << 23) + (std::uint32_t(127 - 0x4B400000) << 23);
  vrow scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// KH = K ⊙ e^{A_L − A_{s+1}}; EL = e^{A_L}; with `all`, also RT = R ⊙ e^{A_t} and KT = K ⊙
// e^{−A_{s+1}} (s < L−1 only), and the three factors kept in EA, EK, EH for the backward's
// dr, dk rows (which recomputed them: 3 more exps per element and token). The state update (the
// backward's pass 1 and segment recompute) needs KH and EL only. Whole vectors only: at a runtime
// head size a row's last vector runs past lane N into the next row of the same tile (written
// after it) or the tile's kRowSlack, never into a row already written.
template <int NC>
void decay_factors(Tiles& W, i64 L, const Ahead& next, bool all = true) {
  const i64 N = head<NC>(W);
  const float* A = W.A.data();
  for (i64 t = 0; t < L; ++t) {
    next.part(t, L);
    const float *a0 = A + t * N, *a1 = A + (t + 1) * N, *aL = A + L * N;
    const float* kk = &W.K[t * N];
    float *rt = &W.RT[t * N], *kt = &W.KT[t * N], *kh = &W.KH[t * N];
    float *ea = &W.EA[t * N], *ek = &W.EK[t * N], *eh = &W.EH[t * N];
    const float* rr = &W.R[t * N];
    // e^{−A_{s+1}} is used for s < L−1 only: exp_fast clamps its argument, so the unused factor
    // is finite and its product with 0 is 0
    const float kt_on = t + 1 < L ? 1.0f : 0.0f;
    for (i64 i = 0; i < N; i += kRowLanes) {
      const vrow k = ldv(kk + i), a = ldv(a1 + i), h = exp_fast_v(ldv(aL + i) - a);
      stv(kh + i, k * h);
      if (!all) continue;
      const vrow e0 = exp_fast_v(ldv(a0 + i)), e1 = kt_on * exp_fast_v(-a);
      stv(ea + i, e0);
      stv(ek + i, e1);
      stv(eh + i, h);
      stv(rt + i, ldv(rr + i) * e0);
      stv(kt + i, k * e1);
    }
  }
  for (i64 i = 0; i < N; i += kRowLanes) stv(&W.EL[i], exp_fast_v(ldv(A + L * N + i)));
}

// dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols: 4×4 blocks through 128-bit vectors (two
// rounds of interleaves: 4 loads, 8 shuffles, 4 stores per 16 floats), the edges scalar. The
// backward's transposes (dS per chunk, the Vᵀ and (R ⊙ e^A)ᵀ tiles) were scalar loops: 2N² scalar
// moves per chunk for S_0ᵀ and dSᵀ alone, 9 % of backward_bh's samples (perf, N = 64, chunk 16, AVX3).
inline void transpose(float* dst, i64 ldd, const float* src, i64 lds, i64 rows, i64 cols) {
  i64 rows4 = 0, cols4 = 0;  // the part done in 4×4 blocks
#if HWY_TARGET != HWY_SCALAR
  namespace hn = hwy::HWY_NAMESPACE;
  const hn::Full128<float> d;
  const hn::Repartition<std::uint64_t, decltype(d)> d64;
  rows4 = rows / 4 * 4, cols4 = cols / 4 * 4;
  for (i64 i0 = 0; i0 < rows4; i0 += 4) {
    const float* s = src + i0 * lds;
    for (i64 j0 = 0; j0 < cols4; j0 += 4) {
      const auto r0 = hn::LoadU(d, s + j0), r1 = hn::LoadU(d, s + lds + j0);
      const auto r2 = hn::LoadU(d, s + 2 * lds + j0), r3 = hn::LoadU(d, s + 3 * lds + j0);
      const auto lo01 = hn::BitCast(d64, hn::InterleaveLower(d, r0, r1));  // r0[0] r1[0] r0[1] r1[1]
      const auto lo23 = hn::BitCast(d64, hn::InterleaveLower(d, r2, r3));
      const auto hi01 = hn::BitCast(d64, hn::InterleaveUpper(d, r0, r1));  // r0[2] r1[2] r0[3] r1[3]
      const auto hi23 = hn::BitCast(d64, hn::InterleaveUpper(d, r2, r3));
      float* o = dst + j0 * ldd + i0;
      hn::StoreU(hn::BitCast(d, hn::InterleaveLower(d64, lo01, lo23)), d, o);
      hn::StoreU(hn::BitCast(d, hn::InterleaveUpper(d64, lo01, lo23)), d, o + ldd);
      hn::StoreU(hn::BitCast(d, hn::InterleaveLower(d64, hi01, hi23)), d, o + 2 * ldd);
      hn::StoreU(hn::BitCast(d, hn::InterleaveUpper(d64, hi01, hi23)), d, o + 3 * ldd);
    }
  }
#endif
  for (i64 i = 0; i < rows; ++i)
    for (i64 j = i < rows4 ? cols4 : 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// Chunk × chunk score rows: out[t][0..C) = Σ_{i<N} X[t][i] MT[i][0..C) for t < L (X rows of N
// floats, MT = N rows of C) through rows_times when C is a compile-time 16, 32, 64 or 128; false
// for any other chunk, which takes the runtime-length loop. Before, only C = 16 had a register
// path (one row per pass): chunks 32 and 64 were slower than 16 (bench_rwkv wkv6).
inline bool score_rows(float* out, const float* X, const float* MT, i64 C, i64 N, i64 L) {
  auto rows = [&](auto width) {
    constexpr int CC = decltype(width)::value;
    rows_times<CC>(out, CC, X, N, MT, N, L);
    return true;
  };
  if (C == 16) return rows(std::integral_constant<int, 16>{});
  if (C == 32) return rows(std::integral_constant<int, 32>{});
  if (C == 64) return rows(std::integral_constant<int, 64>{});
  if (C == 128) return rows(std::integral_constant<int, 128>{});
  return false;
}

// P[t][s] = RT_t · KT_s for s < t; P[t][t] = Σ_i R_t[i] u[i] K_t[i]. Computed as rows
// P[t][:] = Σ_i RT_t[i] KTᵀ[i][:] (vectorised over s, no horizontal sums); only s ≤ t is read.
template <int NC>
void intra_scores(Tiles& W, const float* uh, i64 L) {
  const i64 N = head<NC>(W), C = W.C;
  float* KTT = W.KTT.data();
  for (i64 s = 0; s < L; ++s)
    for (i64 i = 0; i < N; ++i) KTT[i * C + s] = W.KT[s * N + i];
  const bool fixed = score_rows(W.P.data(), W.RT.data(), KTT, C, N, L);
  for (i64 t = 0; t < L; ++t) {
    float* pt = &W.P[t * C];
    if (!fixed) {
#pragma omp simd
      for (i64 s = 0; s < L; ++s) pt[s] = 0.0f;
      for (i64 i = 0; i < N; ++i) {
        const float rt = W.RT[t * N + i];
        const float* ki = KTT + i * C;
#pragma omp simd
        for (i64 s = 0; s < L; ++s) pt[s] += rt * ki[s];  // full rows: fixed trip count; s ≥ t unused
      }
    }
    pt[t] = dot<NC>(&W.R[t * N], &W.K[t * N], N, uh);  // Σ_i R_t[i] u[i] K_t[i]
  }
}

// dP[t][s] = g_t · v_s for s ≤ t, as rows over s through Vᵀ
template <int NC>
void intra_grad_scores(Tiles& W, i64 L) {
  const i64 N = head<NC>(W), C = W.C;
  float* VT = W.VT.data();
  transpose(VT, C, W.V.data(), N, L, N);
  if (score_rows(W.dP.data(), W.G.data(), VT, C, N, L)) return;
  for (i64 t = 0; t < L; ++t) {
    float* pt = &W.dP[t * C];
#pragma omp simd
    for (i64 s = 0; s < L; ++s) pt[s] = 0.0f;
    for (i64 j = 0; j < N; ++j) {
      const float gj = W.G[t * N + j];
      const float* vj = VT + j * C;
#pragma omp simd
      for (i64 s = 0; s < L; ++s) pt[s] += gj * vj[s];  // full rows; s > t unused
    }
  }
}

// out[j][:] = in[j][:] ⊙ (per_row ? sc[j] : sc[0..n)) + prod[j][:] for j < n (out may alias in): the
// diagonal scaling of a state or state gradient [n,n] added to a product computed beside it.
template <int NC>
void scale_add(float* out, const float* in, const float* sc, bool per_row, const float* prod, i64 n) {
  const i64 N = NC > 0 ? NC : n;
  for (i64 j = 0; j < N; ++j) {
    float *o = out + j * N;
    const float *x = in + j * N, *p = prod + j * N;
    if (per_row) {
      const float f = sc[j];
#pragma omp simd
      for (i64 i = 0; i < N; ++i) o[i] = x[i] * f + p[i];
    } else {
#pragma omp simd
      for (i64 i = 0; i < N; ++i) o[i] = x[i] * sc[i] + p[i];
    }
  }
}

// Sᵀ ← Sᵀ diag(EL) + Vᵀ KH: the backward's state step on the transposed state it keeps (so its
// S_0 g_t needs no transpose of S_0). The product runs register-blocked (rows_times: kRows rows of
// Sᵀ per pass over Vᵀ, the VT tile) into the S0T tile, then is added to the scaled state. S_out
// may alias S.
template <int NC>
void state_update_t(float* S_out, const float* S, Tiles& W, i64 L) {
  const i64 N = head<NC>(W), C = W.C;
  transpose(W.VT.data(), C, W.V.data(), N, L, N);
  rows_times<NC>(W.S0T.data(), N, W.VT.data(), C, W.KH.data(), L, N, N);
  scale_add<NC>(S_out, S, W.EL.data(), false, W.S0T.data(), N);
}

// ─── the forward's state update, register-blocked ─────────────────────────────────────────────────
// R state rows from i0 over all n columns, in column blocks of kFwdCW vectors (the last block of a
// runtime head size with fewer, the last vector possibly partial): rows_block_from with the
// initial rows e^{A_L}[i]·S[i] and the coefficients KH[s][i] (adjacent for the R rows).
template <int NC, int R>
HWY_INLINE void state_rows(float* S_out, const float* S, const Tiles& W, i64 i0, i64 L, i64 n) {
  constexpr i64 kBlock = kFwdCW * kRowLanes;
  for (i64 c0 = 0; c0 < n; c0 += kBlock) {
    const i64 o = i0 * n + c0, cols = std::min(kBlock, n - c0);
    const float *el = &W.EL[i0], *kh = &W.KH[i0], *V = W.V.data() + c0;
    if (cols == kBlock) {
      rows_block_from<R, kFwdCW>(S_out + o, n, S + o, n, el, kh, 1, n, V, n, L, cols);
      continue;
    }
    switch ((cols + kRowLanes - 1) / kRowLanes) {  // (< kFwdCW vectors)
      case 1: rows_block_from<R, 1>(S_out + o, n, S + o, n, el, kh, 1, n, V, n, L, cols); break;
      case 2: rows_block_from<R, 2>(S_out + o, n, S + o, n, el, kh, 1, n, V, n, L, cols); break;
      default: rows_block_from<R, 3>(S_out + o, n, S + o, n, el, kh, 1, n, V, n, L, cols); break;
    }
  }
}
// S ← diag(EL) S + KHᵀ V, kFwdRows state rows per pass (the score-form forward's state step; one
// row per pass reloaded every V row for each state row: ~20 % of the forward's time, §7.5). S_out
// may alias S. The backward keeps the state transposed (state_update_t).
template <int NC>
void state_update_blocked(float* S_out, const float* S, const Tiles& W, i64 L) {
  const i64 N = head<NC>(W);
  i64 i = 0;
  for (; i + kFwdRows <= N; i += kFwdRows) state_rows<NC, kFwdRows>(S_out, S, W, i, L, N);
  if constexpr (!kVec<NC>)  // (a compile-time head size is a multiple of 16)
    for (; i < N; ++i) state_rows<NC, 1>(S_out, S, W, i, L, N);
}

template <int NC>
void forward_bh(Tiles& W, float* S, float* y, const float* r, const float* k, const float* v,
                const float* logw, const float* uh, i64 b, i64 T, i64 D, i64 hN, i64 chunk) {
  const i64 N = head<NC>(W);
  Ahead next(b, T, D, hN, N);
  next.rows({r, k, v, logw, y});
  for (i64 t0 = 0; t0 < T;) {
    const i64 L = chunk_decay<NC>(W, logw, b, t0, T, D, hN, chunk);
    load_tile<NC>(W.R.data(), r, b, t0, L, T, D, hN, N);
    load_tile<NC>(W.K.data(), k, b, t0, L, T, D, hN, N);
    load_tile<NC>(W.V.data(), v, b, t0, L, T, D, hN, N);
    decay_factors<NC>(W, L, next.tokens(t0 + L, t0 + L + chunk));
    intra_scores<NC>(W, uh, L);
    rows_times<NC, kFwdRows, kFwdCW>(W.dR.data(), N, W.RT.data(), N, S, N, L, N);  // (r_t ⊙ e^{A_t}) S_0
    for (i64 t = 0; t < L; ++t)  // y_t = (r_t ⊙ e^{A_t}) S_0 + Σ_{s≤t} P[t][s] v_s
      acc_row<NC>(y + (b * T + t0 + t) * D + hN, RowMode::store, &W.dR[t * N], 1.0f, &W.P[t * W.C], 1, W.V.data(), N,
                  t + 1, N);
    state_update_blocked<NC>(S, S, W, L);
    t0 += L;
  }
}

// ─── the forward as a recurrence over register tiles of the state (compile-time head sizes) ───
// With S̃_t = S_0 + Σ_{s<t} KT_sᵀ v_s (KT_s = k_s ⊙ e^{−A_{s+1}}, as in intra_scores) the state
// before token t is diag(e^{A_t}) S̃_t, so inside a chunk
//   y_t = RT_t S̃_t + d_t v_t   (RT_t = r_t ⊙ e^{A_t}, d_t = Σ_i r_t[i] u[i] k_t[i]),
//   S̃_{t+1} = S̃_t + KT_tᵀ v_t,   S_L = diag(e^{A_L}) S̃_{L−1} + k_{L−1}ᵀ v_{L−1}.
// That is 2N² multiply-adds per token (the sequential count) plus 2N² per chunk, against the
// score form's ~3N² per token (docs/kernels-wkv-2026-12-07.md §7.4), and two exps per element
// instead of three. Every product RT_t[i] · KT_s[i] (s < t) is e^{A_t − A_{s+1}} ≤ 1 times r k, so
// S̃'s large entries (up to e^{60}, the chunk cut) meet only factors that bring them back to the
// size of their contribution; a rounding error in S̃ is at most eps times that contribution.
// An R × CW tile of S̃ (R key rows, CW vectors of value columns) stays in registers for the whole
// chunk: per token it loads v_t's CW vectors, R RT and R KT scalars and the y row's CW vectors.

// RT, KT (t < L − 1; the last row 0), EL = e^{A_L} and d_t (in P[t]) of the chunk at t0, read from
// the input rows.
template <int NC>
void tile_factors(Tiles& W, const float* r, const float* k, const float* uh, i64 b, i64 t0, i64 L, i64 T, i64 D,
                  i64 hN) {
  constexpr i64 N = NC;
  const float* A = W.A.data();
  for (i64 t = 0; t < L; ++t) {
    const float *rr = r + (b * T + t0 + t) * D + hN, *kk = k + (b * T + t0 + t) * D + hN;
    const float kt_on = t + 1 < L ? 1.0f : 0.0f;  // (e^{−A_L} may be clamped: times 0 before k)
#pragma GCC unroll 16
    for (i64 i = 0; i < N; i += kRowLanes) {
      stv(&W.RT[t * N + i], ldv(rr + i) * exp_fast_v(ldv(A + t * N + i)));
      stv(&W.KT[t * N + i], ldv(kk + i) * (kt_on * exp_fast_v(-ldv(A + (t + 1) * N + i))));
    }
    W.P[t] = dot<NC>(rr, kk, N, uh);
  }
#pragma GCC unroll 16
  for (i64 i = 0; i < N; i += kRowLanes) stv(&W.EL[i], exp_fast_v(ldv(A + L * N + i)));
}

// Rows i0 .. i0+R, vectors c .. c+CW of the state S [N,N] through the chunk's L tokens; y rows
// ldy apart: stored (first = the tile of rows 0, which also adds d_t v_t) or added to.
template <int NC, int R, int CW>
HWY_INLINE void state_tile(float* S, float* y, i64 ldy, const float* v, i64 ldv_, const Tiles& W, const float* klast,
                           i64 i0, i64 c, i64 L, bool first) {
  constexpr i64 N = NC;
  vrow s[R][CW];
#pragma GCC unroll 8
  for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
    for (int q = 0; q < CW; ++q) s[a][q] = ldv(S + (i0 + a) * N + c + q * kRowLanes);
  for (i64 t = 0; t < L; ++t) {
    const float *rt = &W.RT[t * N + i0], *kt = &W.KT[t * N + i0], *vt = v + t * ldv_ + c;
    float* yt = y + t * ldy + c;
    vrow vv[CW], acc[CW];
#pragma GCC unroll 8
    for (int q = 0; q < CW; ++q) {
      vv[q] = ldv(vt + q * kRowLanes);
      acc[q] = first ? W.P[t] * vv[q] : ldv(yt + q * kRowLanes);
    }
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
      for (int q = 0; q < CW; ++q) acc[q] += rt[a] * s[a][q];
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
      for (int q = 0; q < CW; ++q) s[a][q] += kt[a] * vv[q];  // KT's last row is 0
#pragma GCC unroll 8
    for (int q = 0; q < CW; ++q) stv(yt + q * kRowLanes, acc[q]);
  }
  const float* vl = v + (L - 1) * ldv_ + c;  // S_L = diag(EL) S̃_{L−1} + k_{L−1}ᵀ v_{L−1}
#pragma GCC unroll 8
  for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
    for (int q = 0; q < CW; ++q)
      stv(S + (i0 + a) * N + c + q * kRowLanes, W.EL[i0 + a] * s[a][q] + klast[i0 + a] * ldv(vl + q * kRowLanes));
}

template <int NC>
void forward_bh_tiled(Tiles& W, float* S, float* y, const float* r, const float* k, const float* v,
                      const float* logw, const float* uh, i64 b, i64 T, i64 D, i64 hN, i64 chunk) {
  constexpr i64 N = NC;
  constexpr int kV = NC / kRowLanes;
  constexpr int CW = kRowLanes >= 16 ? (kV < 4 ? kV : 4) : (kV < 2 ? kV : 2);  // 26 of 32 / 14 of 16 registers
  constexpr int R = 4;
  static_assert(kV % CW == 0 && NC % R == 0);
  Ahead next(b, T, D, hN, N);
  next.rows({r, k, v, logw, y});
  for (i64 t0 = 0; t0 < T;) {
    const i64 L = chunk_decay<NC>(W, logw, b, t0, T, D, hN, chunk);
    tile_factors<NC>(W, r, k, uh, b, t0, L, T, D, hN);
    const float* vc = v + (b * T + t0) * D + hN;
    float* yc = y + (b * T + t0) * D + hN;
    const float* klast = k + (b * T + t0 + L - 1) * D + hN;
    // the next chunk's rows are prefetched a share per tile, spread over the chunk's longest phase
    // (issued in tile_factors, 55 % of its samples sat on the prefetches: perf, AVX3, N = 64)
    next.tokens(t0 + L, t0 + L + chunk);
    constexpr i64 kTiles = (NC / R) * (kV / CW);
    i64 tile = 0;
    for (i64 c = 0; c < N; c += CW * kRowLanes)
      for (i64 i0 = 0; i0 < N; i0 += R, ++tile) {
        next.part(tile, kTiles);
        state_tile<NC, R, CW>(S, yc, D, vc, D, W, klast, i0, c, L, i0 == 0);
      }
    t0 += L;
  }
}

template <int NC>
void backward_bh(Tiles& W, std::vector<float>& ck, std::vector<float>& seg, std::vector<i64>& starts, float* dS,
                 float* dr, float* dk, float* dv, float* dlogw, float* duh, const float* dy, const float* r,
                 const float* k, const float* v, const float* logw, const float* uh, const float* s_in,
                 i64 b, i64 T, i64 D, i64 hN, i64 chunk) {
  const i64 N = head<NC>(W), NN = N * N, C = W.C;
  // ck, seg only grow (a vector resized down and up again zero-fills the new part)
  auto grow = [](std::vector<float>& buf, size_t n) {
    if (buf.size() < n) buf.resize(std::max(n, 2 * buf.size()));
  };
  // S_out = the state after the chunk of at most Lmax tokens at t0, from S_in (may alias); its length
  Ahead next(b, T, D, hN, N);
  auto advance = [&](float* S_out, const float* S_in, i64 t0, i64 Lmax) {
    const i64 L = chunk_decay<NC>(W, logw, b, t0, T, D, hN, Lmax);
    load_tile<NC>(W.K.data(), k, b, t0, L, T, D, hN, N);
    load_tile<NC>(W.V.data(), v, b, t0, L, T, D, hN, N);
    decay_factors<NC>(W, L, next.rows({k, v, logw}).tokens(t0 + L, t0 + L + C), false);
    state_update_t<NC>(S_out, S_in, W, L);
    return L;
  };
  // pass 1: chunk boundaries, and the incoming state of the first chunk of every segment of
  // G = kCheckpointTokens / chunk chunks (short chunks: storing every chunk's N² state streamed
  // 2·4N² bytes per token through DRAM, the backward's largest cost at chunk 1)
  // The state steps read and write the checkpoint slots in place (a segment's first chunk reads
  // its slot, the chunk before a segment start writes it; seg[0] holds the running state in
  // between): copying each state into and out of ck was 6–8 % of the backward's samples at chunk
  // 16 (memmove of 16 KB per chunk at N = 64, ck mostly out of L2).
  const i64 G = std::max<i64>(1, kCheckpointTokens / chunk);
  grow(seg, static_cast<size_t>((G + 1) * NN + kRowSlack));
  auto slot = [&](i64 g) { return &ck[static_cast<size_t>(g * NN)]; };  // (+ kRowSlack past the last)
  grow(ck, static_cast<size_t>(NN + kRowSlack));
  if (s_in) transpose(slot(0), N, s_in, N, N, N);  // the checkpoints hold states transposed
  else std::fill_n(slot(0), NN, 0.0f);
  starts.clear();
  for (i64 t0 = 0; t0 < T;) {
    const i64 c = i64(starts.size());
    if ((c + 1) % G == 0) grow(ck, static_cast<size_t>(((c + 1) / G + 1) * NN + kRowSlack));
    const float* in = c % G == 0 ? slot(c / G) : seg.data();
    float* out = (c + 1) % G == 0 ? slot((c + 1) / G) : seg.data();  // (may alias in)
    starts.push_back(t0);
    t0 += advance(out, in, t0, chunk);
  }
  starts.push_back(T);
  const i64 nch = i64(starts.size()) - 1;
  // pass 2: segments in reverse; a segment's incoming states recomputed from its checkpoint (they
  // stay in L2), then its chunks in reverse with dS = dL/d(state after the chunk)
  for (i64 g0 = (nch - 1) / G * G; g0 >= 0; g0 -= G) {
    const i64 g1 = std::min(nch, g0 + G);
    // incoming state of chunk c: the segment's checkpoint slot for g0, recomputed into seg after
    auto state = [&](i64 c) { return c == g0 ? slot(g0 / G) : &seg[static_cast<size_t>((c - g0) * NN)]; };
    for (i64 c = g0; c + 1 < g1; ++c) advance(state(c + 1), state(c), starts[c], starts[c + 1] - starts[c]);
    for (i64 c = g1 - 1; c >= g0; --c) {
      const i64 t0 = starts[c], L = starts[c + 1] - t0;
      const float* S0T = state(c);  // S_0ᵀ
      chunk_decay<NC>(W, logw, b, t0, T, D, hN, L);
      load_tile<NC>(W.R.data(), r, b, t0, L, T, D, hN, N);
      load_tile<NC>(W.K.data(), k, b, t0, L, T, D, hN, N);
      load_tile<NC>(W.V.data(), v, b, t0, L, T, D, hN, N);
      load_tile<NC>(W.G.data(), dy, b, t0, L, T, D, hN, N);
      // the walk's next chunk is the one before (c = g0: the next segment's recompute comes
      // first; it reads that chunk's k, v, log w rows too)
      next.rows({r, k, v, logw, dy, dr, dk, dv, dlogw});
      decay_factors<NC>(W, L, c > 0 ? next.tokens(starts[c - 1], starts[c]) : next.tokens(0, 0));
      intra_scores<NC>(W, uh, L);
      float* dST = W.dST.data();
      transpose(dST, N, dS, N, N, N);  // dSᵀ: dS v_s as rows; S_0ᵀ is the state as kept
      intra_grad_scores<NC>(W, L);  // dP[t][s] = g_t · v_s (s ≤ t)
      rows_times<NC>(W.dV.data(), N, W.KH.data(), N, dS, N, L, N);   // Σ_i KH_s[i] dS[i][:]
      rows_times<NC>(W.dK.data(), N, W.V.data(), N, dST, N, L, N);   // dKH_s = dS v_s (kept in dK until scaled)
      for (i64 s = 0; s < L; ++s)  // dV_s = Σ_i KH_s[i] dS[i][:] + Σ_{t≥s} P[t][s] g_t
        acc_row<NC>(dv + (b * T + t0 + s) * D + hN, RowMode::add, &W.dV[s * N], 1.0f, &W.P[s * C + s], C, &W.G[s * N],
                    N, L - s, N);
      // dRT_t = S_0 g_t (inter) + Σ_{s<t} dP[t][s] KT_s (intra)
      rows_times<NC>(W.dR.data(), N, W.G.data(), N, S0T, N, L, N);  // S_0 g_t
      for (i64 t = 0; t < L; ++t)
        acc_row<NC>(&W.dR[t * N], RowMode::store, &W.dR[t * N], 1.0f, &W.dP[t * C], 1, W.KT.data(), N, t, N);
      // dA (rows 1..L), then dr, dk and du
      float* dA = W.dA.data();
      std::fill(dA, dA + (L + 1) * N, 0.0f);
      float* dAL = dA + L * N;  // e^{A_L}[i] Σ_j dS[i][j] S_0[i][j], down the columns of dSᵀ, S_0ᵀ
      for (i64 j = 0; j < N; ++j) {
        const float *x = dST + j * N, *y = S0T + j * N;
#pragma omp simd
        for (i64 i = 0; i < N; ++i) dAL[i] += x[i] * y[i];
      }
#pragma omp simd
      for (i64 i = 0; i < N; ++i) dAL[i] *= W.EL[i];
      for (i64 s = 0; s < L; ++s) {
        const float* dks = &W.dK[s * N];  // holds dKH_s
        const float *ks = &W.K[s * N], *rs = &W.R[s * N], *kh = &W.KH[s * N];
        const float *ek = &W.EK[s * N], *eh = &W.EH[s * N];  // e^{−A_{s+1}}, e^{A_L − A_{s+1}}
        alignas(64) float dki[kMaxN];
        // dK_intra_s = Σ_{t>s} dP[t][s] RT_t   (then · e^{−A_{s+1}}, only when s < L−1)
        if (s + 1 < L)
          acc_row<NC>(dki, RowMode::store, nullptr, 0.0f, &W.dP[(s + 1) * C + s], C, &W.RT[(s + 1) * N], N, L - s - 1, N);
        else
          std::fill(dki, dki + N, 0.0f);
        const bool has_intra = s + 1 < L;
        const float pd = W.dP[s * C + s];
        float* dkout = dk + (b * T + t0 + s) * D + hN;
#pragma omp simd
        for (i64 i = 0; i < N; ++i) {
          const float kin = has_intra ? dki[i] * ek[i] : 0.0f;
          dA[L * N + i] += dks[i] * kh[i];  // KH depends on A_L
          const float kst = dks[i] * eh[i];
          dA[(s + 1) * N + i] -= ks[i] * (kin + kst);  // −A_{s+1} enters through KT_s and KH_s
          dkout[i] += kin + kst + pd * uh[i] * rs[i];
        }
      }
      for (i64 t = 0; t < L; ++t) {
        const float* ea = &W.EA[t * N];  // e^{A_t}
        const float *rr = &W.R[t * N], *kk = &W.K[t * N], *drt = &W.dR[t * N];
        const float pd = W.dP[t * C + t];
        float* drout = dr + (b * T + t0 + t) * D + hN;
#pragma omp simd
        for (i64 i = 0; i < N; ++i) {
          const float g = drt[i] * ea[i];  // (inter + intra) · e^{A_t}
          if (t > 0) dA[t * N + i] += rr[i] * g;
          drout[i] += g + pd * uh[i] * kk[i];
          duh[i] += pd * rr[i] * kk[i];
        }
      }
      // dlogw_q = Σ_{t=q+1..L} dA_t (reverse cumulative sum)
      {
        alignas(64) float acc[kMaxN];
        std::fill(acc, acc + N, 0.0f);
        for (i64 q = L - 1; q >= 0; --q) {
          float* dl = dlogw + (b * T + t0 + q) * D + hN;
#pragma omp simd
          for (i64 i = 0; i < N; ++i) {
            acc[i] += dA[(q + 1) * N + i];
            dl[i] += acc[i];
          }
        }
      }
      // dS_0 = diag(e^{A_L}) dS + RTᵀ G: RTᵀ into the KTT tile (free after intra_scores), the
      // product register-blocked into dSᵀ's tile (free after dK and dA_L; one dS row per pass
      // through acc_row was 27 % of backward_bh's samples)
      transpose(W.KTT.data(), C, W.RT.data(), N, L, N);
      rows_times<NC>(dST, N, W.KTT.data(), C, W.G.data(), L, N, N);
      scale_add<NC>(dS, dS, W.EL.data(), true, dST, N);
    }
  }
}


// One (b, h) work item of the forward: S holds the incoming state, then the outgoing one.
void ForwardTask(float* S, float* y, const float* r, const float* k, const float* v, const float* logw,
                 const float* uh, i64 b, i64 T, i64 D, i64 hN, i64 N, i64 chunk) {
  thread_local Tiles W;  // per-thread chunk tiles, kept across work items and calls
  if (W.C != chunk || W.N != N) W.resize(chunk, N);
  // the tiled recurrence at the head sizes wkv6_forward_tiled names (kernels/rwkv6_count.hpp, which
  // bench_rwkv counts by), the score form at the others
  static_assert(wkv6_forward_tiled(64) && wkv6_forward_tiled(32) && !wkv6_forward_tiled(48));
  if (N == 64) forward_bh_tiled<64>(W, S, y, r, k, v, logw, uh, b, T, D, hN, chunk);
  else if (N == 32) forward_bh_tiled<32>(W, S, y, r, k, v, logw, uh, b, T, D, hN, chunk);
  else forward_bh<0>(W, S, y, r, k, v, logw, uh, b, T, D, hN, chunk);
}

// One (b, h) work item of the backward: dS holds dL/d(state out), then dL/d(state in).
void BackwardTask(float* dS, float* dr, float* dk, float* dv, float* dlogw, float* duh, const float* dy,
                  const float* r, const float* k, const float* v, const float* logw, const float* uh,
                  const float* s_in, i64 b, i64 T, i64 D, i64 hN, i64 N, i64 chunk) {
  thread_local Tiles W;
  thread_local std::vector<float> ck, seg;  // checkpoint states, one segment's states
  thread_local std::vector<i64> starts;
  if (W.C != chunk || W.N != N) W.resize(chunk, N);
  if (N == 64)
    backward_bh<64>(W, ck, seg, starts, dS, dr, dk, dv, dlogw, duh, dy, r, k, v, logw, uh, s_in, b, T, D, hN, chunk);
  else if (N == 32)
    backward_bh<32>(W, ck, seg, starts, dS, dr, dk, dv, dlogw, duh, dy, r, k, v, logw, uh, s_in, b, T, D, hN, chunk);
  else
    backward_bh<0>(W, ck, seg, starts, dS, dr, dk, dv, dlogw, duh, dy, r, k, v, logw, uh, s_in, b, T, D, hN, chunk);
}

}  // namespace scanshard::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace scanshard::kernels {

namespace fast {

namespace {
using namespace wkv6_detail;
HWY_EXPORT(ForwardTask);
HWY_EXPORT(BackwardTask);
}  // namespace

void wkv6_forward(float* y, float* state_out, const float* r, const float* k, const float* v,
                  const float* logw, const float* u, const float* state_in, i64 B, i64 T, i64 H,
                  i64 N, i64 chunk) {
  if (N > kMaxN) {
    ref::wkv6_forward<float>(y, state_out, r, k, v, logw, u, state_in, B, T, H, N);
    return;
  }
  const i64 D = H * N, NN = N * N;
  chunk = std::max(kWkv6MinChunk, chunk);
#pragma omp parallel
  {
    std::vector<float> S(static_cast<size_t>(NN + kRowSlack));  // (+ slack: rows_acc_n)
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 h = 0; h < H; ++h) {
        const i64 so = (b * H + h) * NN, hN = h * N;
        if (state_in) std::copy_n(state_in + so, NN, S.data());
        else std::fill_n(S.begin(), NN, 0.0f);
        HWY_DYNAMIC_DISPATCH(ForwardTask)(S.data(), y, r, k, v, logw, u + hN, b, T, D, hN, N, chunk);
        if (state_out) std::copy_n(S.data(), NN, state_out + so);
      }
  }
}

void wkv6_backward(float* dr, float* dk, float* dv, float* dlogw, float* du, float* dstate_in,
                   const float* dy, const float* dstate_out, const float* r, const float* k,
                   const float* v, const float* logw, const float* u, const float* state_in, i64 B,
                   i64 T, i64 H, i64 N, i64 chunk) {
  if (N > kMaxN) {
    ref::wkv6_backward<float>(dr, dk, dv, dlogw, du, dstate_in, dy, dstate_out, r, k, v, logw, u,
                              state_in, B, T, H, N);
    return;
  }
  const i64 D = H * N, NN = N * N;
  chunk = std::max(kWkv6MinChunk, chunk);
  std::vector<float> pdu(static_cast<size_t>(B * H * N), 0.0f);  // per-(b,h) du, reduced in order below
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(NN + kRowSlack));
#pragma omp for collapse(2) schedule(static)
    for (i64 b = 0; b < B; ++b)
      for (i64 h = 0; h < H; ++h) {
        const i64 so = (b * H + h) * NN, hN = h * N;
        float* duh = &pdu[(b * H + h) * N];
        if (dstate_out) std::copy_n(dstate_out + so, NN, dS.data());
        else std::fill_n(dS.begin(), NN, 0.0f);
        const float* s_in = state_in ? state_in + so : nullptr;
        HWY_DYNAMIC_DISPATCH(BackwardTask)(dS.data(), dr, dk, dv, dlogw, duh, dy, r, k, v, logw, u + hN, s_in, b,
                                           T, D, hN, N, chunk);
        if (dstate_in) std::copy_n(dS.data(), NN, dstate_in + so);
      }
  }
  for (i64 bh = 0; bh < B * H; ++bh)
    for (i64 i = 0; i < N; ++i) du[(bh % H) * N + i] += pdu[bh * N + i];
}

}  // namespace fast

void wkv6_chunk_forward(float* y, float* state_out, float* log_decay, const float* r,
                        const float* k, const float* v, const float* logw, const float* u,
                        const float* state_in, i64 B, i64 T, i64 H, i64 N, i64 chunk) {
  if (log_decay) {
    const i64 D = H * N;
    for (i64 b = 0; b < B; ++b)
      for (i64 d = 0; d < D; ++d) {
        float acc = 0;  // log Π_t w_t = Σ_t logw_t
        for (i64 t = 0; t < T; ++t) acc += logw[(b * T + t) * D + d];
        log_decay[b * D + d] = acc;
      }
  }
  fast::wkv6_forward(y, state_out, r, k, v, logw, u, state_in, B, T, H, N, chunk);
}

void wkv6_chunk_backward(float* dr, float* dk, float* dv, float* dlogw, float* du,
                         float* dstate_in, const float* dy, const float* dstate_out,
                         const float* r, const float* k, const float* v, const float* logw,
                         const float* u, const float* state_in, i64 B, i64 T, i64 H, i64 N,
                         i64 chunk) {
  fast::wkv6_backward(dr, dk, dv, dlogw, du, dstate_in, dy, dstate_out, r, k, v, logw, u,
                      state_in, B, T, H, N, chunk);
}

void wkv6_state_combine(float* out, const float* in, const float* local, const float* log_decay,
                        i64 B, i64 H, i64 N) {
  for (i64 bh = 0; bh < B * H; ++bh)
    for (i64 i = 0; i < N; ++i) {
      // S_out[i][:] = e^{log_decay[i]} S_in[i][:] + S_local[i][:]
      const float f = in ? std::exp(log_decay[bh * N + i]) : 0.0f;
      for (i64 j = 0; j < N; ++j) {
        const i64 e = (bh * N + i) * N + j;
        out[e] = (in ? f * in[e] : 0.0f) + local[e];
      }
    }
}

void wkv6_grad_state_combine(float* dstate_in, const float* dstate_out,
                             const float* local_dstate_in, const float* log_decay, i64 B, i64 H,
                             i64 N) {
  for (i64 bh = 0; bh < B * H; ++bh)
    for (i64 i = 0; i < N; ++i) {
      // dS_in[i][:] = e^{log_decay[i]} dS_out[i][:] + local[i][:]
      const float f = std::exp(log_decay[bh * N + i]);
      for (i64 j = 0; j < N; ++j) {
        const i64 e = (bh * N + i) * N + j;
        dstate_in[e] = f * dstate_out[e] + local_dstate_in[e];
      }
    }
}

}  // namespace scanshard::kernels
#endif  // HWY_ONCE
