// program/param_layout.hpp — all parameters of a model in one flat fp32 buffer: the offset of
// every tensor of parameter_tensors(), and the deterministic initialisation of the full logical
// tensors from a seed (identical for every plan and rank, DESIGN §6).
// For: the runner (train/) and the kernel tests' tiny models. Not for: shapes (model.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "program/model.hpp"

namespace scanshard {

// Offsets of every parameter tensor in one flat buffer, in parameter_tensors() order.
struct Layout {
  std::vector<ParamTensor> tensors;
  std::vector<std::int64_t> offset;
  std::int64_t total = 0;
  std::map<std::string, std::size_t> index;  // "block/name" -> position in tensors
  explicit Layout(const ModelSpec& m);
  std::int64_t off(const std::string& block, const std::string& name) const;
};

// Deterministic init from `seed`, in parameter_tensors() order: matrices N(0, 1/fan_in), vectors
// N(0, 0.1²) (nonzero so every gradient path is exercised), Λ (rec.lambda) so that
// a = σ(−Λ) ∈ [0.9, 0.999].
std::vector<float> init_params(const Layout& lay, unsigned seed);

}  // namespace scanshard
