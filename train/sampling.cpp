// train/sampling.cpp — see sampling.hpp.
#include "train/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace scanshard::train {

std::int32_t sample_token(const float* logits, std::int64_t V, const SamplingOptions& o, std::mt19937_64& rng) {
  if (o.temperature <= 0) return static_cast<std::int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  const std::int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  auto larger = [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), larger);
  // p_i ∝ exp((z_i − z_max)/T) over the k kept ids
  std::vector<double> w(static_cast<std::size_t>(k));
  const double zmax = logits[ids[0]];
  for (std::int64_t i = 0; i < k; ++i) w[static_cast<std::size_t>(i)] = std::exp((logits[ids[static_cast<std::size_t>(i)]] - zmax) / o.temperature);
  std::discrete_distribution<std::int64_t> pick(w.begin(), w.end());
  return ids[static_cast<std::size_t>(pick(rng))];
}

}  // namespace scanshard::train
