// kernels/dropout.hpp — inverted dropout with a counter-based mask: whether an element is kept is
// a pure function of integers that name it, never the state of a random stream.
//
// For: the transformer family's dropout sites (embedding output, attention and MLP block outputs,
// the probabilities of a materialized attention core). A plan that splits the work in any way —
// data / fsdp replicas, tensor shards, sequence shards, pipeline stages, micro-batches, a remat
// policy that runs a forward step twice — draws the same mask for the same element as long as it
// names the element by its GLOBAL indices: the sequence's index in the global batch, the token's
// position in its sequence, the channel's index in the full (unsplit) width.
// Not for: MPI, YAML, deciding which sites exist (program/lower.cpp, Emit::dropout).
//
// The hash: SplitMix64's output function (Steele, Lea & Flood, "Fast splittable pseudorandom
// number generators", OOPSLA 2014; constants of Vigna's splitmix64.c), a bijection on 64 bits
// with full avalanche. Integers are absorbed one at a time, h ← mix(h ⊕ x):
//   site key  k = mix(mix(mix(mix(seed) ⊕ step) ⊕ layer) ⊕ site)
//   element   h = mix(mix(mix(k ⊕ seq) ⊕ pos) ⊕ channel)
// and the element is dropped iff the top 53 bits of h, as a fraction of 2^53, fall below p.
// Convention: kernels.hpp. y = x ⊙ mask / (1 − p) forward; dx = dy ⊙ mask / (1 − p) backward.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/kernels.hpp"

namespace scanshard::kernels {

// SplitMix64 output function (splitmix64.c, Vigna 2015): z += γ; two xor-shift-multiply rounds.
inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline std::uint64_t absorb(std::uint64_t h, std::uint64_t x) { return splitmix64(h ^ x); }

// Dropout sites of one layer (layer −1: the embedding).
enum class DropSite : std::uint64_t { embed = 1, attn_out = 2, mlp_out = 3, attn_probs = 4 };

// The key of one (seed, training step, layer, site): every element of that site hashes from it.
inline std::uint64_t dropout_key(std::uint64_t seed, std::int64_t step, std::int64_t layer, DropSite site) {
  std::uint64_t h = splitmix64(seed);
  h = absorb(h, static_cast<std::uint64_t>(step));
  h = absorb(h, static_cast<std::uint64_t>(layer));
  return absorb(h, static_cast<std::uint64_t>(site));
}
// The row part of the element hash (sequence index in the global batch, global position).
inline std::uint64_t dropout_row(std::uint64_t key, std::int64_t seq, std::int64_t pos) {
  return absorb(absorb(key, static_cast<std::uint64_t>(seq)), static_cast<std::uint64_t>(pos));
}
// Elements whose top-53-bit fraction is below this are dropped: round(p · 2^53).
inline std::uint64_t dropout_threshold(double p) {
  return static_cast<std::uint64_t>(std::llround(p * 9007199254740992.0));
}
inline bool dropout_keep(std::uint64_t row, std::int64_t channel, std::uint64_t threshold) {
  return (absorb(row, static_cast<std::uint64_t>(channel)) >> 11) >= threshold;
}

// mask[r, c] = keep(key, seq[r], pos[r], c0 + c) for r < rows, c < C: C channels of a row whose
// first is global channel c0 (a column-split activation's shard).
inline void dropout_mask(std::uint8_t* mask, std::uint64_t key, const std::int64_t* seq, const std::int64_t* pos, i64 rows,
                         i64 C, i64 c0, double p) {
  const std::uint64_t thr = dropout_threshold(p);
#ifdef _OPENMP  // the header is also included by code built without OpenMP (tests of the lowering)
#pragma omp parallel for schedule(static) if (rows * C > 65536)
#endif
  for (i64 r = 0; r < rows; ++r) {
    const std::uint64_t h = dropout_row(key, seq[r], pos[r]);
    for (i64 c = 0; c < C; ++c) mask[r * C + c] = dropout_keep(h, c0 + c, thr) ? 1 : 0;
  }
}

// y = x ⊙ mask / (1 − p) — forward (x the input) and backward (x = dy, y = dx: the same map,
// the function is linear in x) alike. y may alias x.
inline void dropout_apply(float* y, const float* x, const std::uint8_t* mask, i64 n, double p) {
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (i64 i = 0; i < n; ++i) y[i] = mask[i] ? x[i] * scale : 0.0f;
}

}  // namespace scanshard::kernels
