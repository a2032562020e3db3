// train/sampling.hpp — the next token from a row of logits: greedy (temperature 0) or seeded
// temperature sampling over the top-k logits.
//
// For: `scanshard generate` (one sampler on rank 0, its choices broadcast). Not for: the logits
// (decode.hpp), beam search, repetition penalties.
#pragma once
#include <cstdint>
#include <random>

namespace scanshard::train {

struct SamplingOptions {
  double temperature = 0;   // 0: greedy (argmax, lowest id on ties)
  std::int64_t top_k = 0;   // 0: the whole vocabulary
};

// Greedy: argmax_v z_v. Otherwise p_v ∝ exp((z_v − max z)/temperature) over the top_k largest
// logits (ties at the k-th value broken by lower id), drawn with `rng`.
std::int32_t sample_token(const float* logits, std::int64_t V, const SamplingOptions& o, std::mt19937_64& rng);

}  // namespace scanshard::train
