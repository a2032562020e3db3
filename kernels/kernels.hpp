// kernels/kernels.hpp — the calling convention of every kernel in kernels/, and the small inline
// math helpers they share (sigmoid, tanh-GeLU, a vectorisable exp).
//
// For: single-rank fp32 math of the Griffin / Hawk / MQA (and RWKV) models, forward and backward.
// Not for: MPI (train/ does communication), YAML or model specs (program/), timing, allocation
// policies. Nothing in kernels/ includes MPI or YAML.
//
// ─── Calling convention (one for the whole folder) ──────────────────────────────────────────────
//  * fp32, row-major, contiguous; a shape written [B,T,D] means index ((b·T)+t)·D + d.
//  * Dimension vocabulary: B batch, T tokens, D width, R recurrent width, H query heads,
//    Hk key/value heads (1 = multi-query), N head dim, K conv width, W window, V vocab,
//    F MLP hidden width, Hb gate blocks. M = B·T rows when an op does not care about time.
//  * Argument order: outputs first, then saved-for-backward buffers, then inputs, then weights,
//    then sizes (in the order of the vocabulary above), then scalar options.
//  * Linear weights are stored [in, out] (y = x W + b), as program/model.hpp lists them.
//  * `forward` writes (=) its outputs and the activations it saves for `backward`.
//  * `backward` ACCUMULATES (+=) into every gradient buffer it receives, weights and inputs alike,
//    so a tensor used twice (tied embedding, residual) simply receives two calls. Zero gradient
//    buffers yourself before the first backward of a step.
//  * Optional pointers (biases, incoming states, reset masks) may be nullptr, as documented per op.
//  * Each op exists twice: `ref::op` (plain loops, the equation in a comment above the loop, kept
//    forever as the specification; a template instantiated for float and for double, so tests
//    take finite differences in double) and `fast::op` (OpenMP over independent rows/channels,
//    vectorisable inner loops, OpenBLAS sgemm, fused passes). Tests hold them equal.
//  * Document boundaries: `reset` is a uint8 mask [B,T]; reset[b,t] = 1 marks token t as the first
//    token of a document (recurrent state and conv history are dropped there; attention does not
//    look across it). nullptr = no document start inside this chunk.
//  * Files: linear (dense + block-diagonal), embedding (embedding, tied head, softmax CE),
//    rmsnorm, mlp (gated MLP, gelu⊙), conv1d, rglru, attention (RoPE, local/global MQA), adamw —
//    Griffin / Hawk / MQA; rwkv4, rwkv6, layernorm — RWKV (they reuse linear, embedding, adamw).
//  * Threads: fast ops use OpenMP (omp_get_max_threads()); GEMMs use OpenBLAS's own threads, except
//    inside attention, which runs its tile GEMMs single-threaded within its OpenMP tasks.
//  * Sequence chunks (scan, conv): ops that carry state across time accept the incoming state of
//    the previous chunk and return the outgoing state, so a sequence split in pieces and chained
//    gives exactly the one-pass result (see rglru.hpp, conv1d.hpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

namespace scanshard::kernels {

using i64 = std::int64_t;

// Asks the OS to back [p, p + bytes) with transparent huge pages (Linux madvise(MADV_HUGEPAGE),
// which THP's `madvise` mode requires; the whole pages inside the range) when bytes ≥
// kHugePageMinBytes and SCANSHARD_HUGE_PAGES is not "0". A hint: any failure leaves 4 KiB pages.
// Why: a one-thread stream over the 786 MB tied table ran 15-25 % faster on huge pages here
// (fewer TLB misses; docs/inference-decode-2026-12-07.md, "Huge pages").
inline constexpr std::size_t kHugePageMinBytes = std::size_t(4) << 20;
void advise_huge_pages(void* p, std::size_t bytes);

// Cache-line (64-byte) aligned storage for std::vector. Kernels accept any float*; with aligned
// rows some of them store whole lines without reading them first (rglru_scan_backward's
// streaming stores), which plain std::vector data (16-byte aligned) never allows. Large
// buffers (weights, optimizer moments, activations, KV caches) get huge pages (above).
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U> Aligned64(const Aligned64<U>&) {}
  T* allocate(std::size_t n) {
    T* p = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
    advise_huge_pages(p, n * sizeof(T));
    return p;
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const Aligned64&) const { return true; }
};
using AlignedVec = std::vector<float, Aligned64<float>>;

// ─── shared scalar helpers (inline so they vectorise inside callers' loops) ──────────────────────

// Reference helpers are templates: F = float for the kernels, F = double for finite differences.
template <class F> inline F sigmoid_ref(F x) { return F(1) / (F(1) + std::exp(-x)); }

// softplus(x) = log(1 + e^x), stable for large |x|.
template <class F> inline F softplus_ref(F x) { return x > F(20) ? x : std::log1p(std::exp(x)); }

// e^r for |r| ≤ ln2/2, exp_fast's degree-6 polynomial, for a float or a GCC vector of floats
template <class V> inline V exp_poly(V r) {
  V p = V{} + 1.3888889e-3f;
  p = p * r + 8.3333333e-3f;
  p = p * r + 4.1666667e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  return p * r + 1.0f;
}
// exp for vector loops: x = k·ln2 + r with k = round(x/ln2) (the 1.5·2²³ trick: the sum's low
// mantissa bits ARE k, so 2^k is built from them with one shift and one add), then a degree-6
// polynomial for e^r, |r| ≤ ln2/2. One-constant reduction: ln2 in fp32 is off by 1.9e-9, so
// |k| ≤ 127 adds ≤ 2.4e-7 relative error. Total relative error ≲ 4e-7 on [-87, 88]; clamps outside.
inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f + 12582912.0f;  // 1.5·2²³ + k, exactly
  const float k = t - 12582912.0f;
  const float r = x - k * 0.693147180559945309f;
  const float p = exp_poly(r);
  std::int32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  // bits(t) = 0x4B400000 + k  →  bits(2^k) = (k + 127) << 23 = (bits(t) << 23) + ((127 − 0x4B400000) << 23)
  const std::uint32_t bits = (std::uint32_t(tb) << 23) + (std::uint32_t(127 - 0x4B400000) << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid_fast(float x) { return 1.0f / (1.0f + exp_fast(-x)); }

// Two sigmoids for one division: with u = 1 + e^{−x1}, v = 1 + e^{−x2}, σ(x1) = v/(uv), σ(x2) =
// u/(uv). Arguments are clamped below at −40 so uv ≤ (1+e⁴⁰)² stays finite (σ(−40) ≈ 4e-18).
inline void sigmoid2_fast(float x1, float x2, float& s1, float& s2) {
  x1 = x1 < -40.0f ? -40.0f : x1;
  x2 = x2 < -40.0f ? -40.0f : x2;
  const float u = 1.0f + exp_fast(-x1), v = 1.0f + exp_fast(-x2);
  const float inv = 1.0f / (u * v);
  s1 = v * inv;
  s2 = u * inv;
}

// tanh via exp: tanh(x) = 1 − 2/(e^{2x}+1); exact enough in fp32 (|err| ≲ 3e-7).
inline float tanh_fast(float x) { return 1.0f - 2.0f / (exp_fast(2.0f * x) + 1.0f); }

// tanh-approximated GeLU: gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
constexpr float kGeluC = 0.7978845608028654f;  // √(2/π)
template <class F> inline F gelu_ref(F x) {
  const F c = F(0.7978845608028654), a = F(0.044715);
  return F(0.5) * x * (F(1) + std::tanh(c * (x + a * x * x * x)));
}
// d gelu / dx = ½(1 + th) + ½x(1 − th²)·√(2/π)(1 + 3·0.044715x²)
template <class F> inline F gelu_grad_ref(F x) {
  const F c = F(0.7978845608028654), a = F(0.044715);
  const F th = std::tanh(c * (x + a * x * x * x));
  return F(0.5) * (F(1) + th) + F(0.5) * x * (F(1) - th * th) * c * (F(1) + F(3) * a * x * x);
}
inline float gelu_fast(float x) {
  return 0.5f * x * (1.0f + tanh_fast(kGeluC * (x + 0.044715f * x * x * x)));
}
inline float gelu_grad_fast(float x) {
  const float th = tanh_fast(kGeluC * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * kGeluC * (1.0f + 3.0f * 0.044715f * x * x);
}

}  // namespace scanshard::kernels
