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

// How a tensor-parallel group of size t splits a logical tensor (Megatron, DESIGN §4): -1 when
// every rank holds it whole (norms, token-shift mixes, LoRA A, biases added after a row-split
// all-reduce, a replicated MQA K/V head), else the dimension cut into t contiguous ranges:
// column-split weights on their output dim, row-split weights on their input dim, the embedding
// table on the vocab dim, per-channel vectors on their only dim.
int tensor_split_dim(const ModelSpec& m, const ParamTensor& p, std::int64_t t);

// Under tensor_comm rs_ag (sequence parallelism), the tensors every tensor rank holds whole whose
// gradient each rank sums over its own n/t tokens only — the norms (they run on the token shards)
// and the learned position table — so the tensor group all-reduces them once per step
// ("tp.replicated_grads", lower.cpp). The biases of row-split linears are added (on one rank)
// before the reduce-scatter, so their gradient comes from the all-gathered output gradient of
// every token; replicated K/V heads and RWKV's token-shift mixes see every token too.
bool token_partial_grad(const ModelSpec& m, const ParamTensor& p, std::int64_t t);

// The contiguous range [begin, end) that part `i` of `parts` gets of `n` items (sizes differ by
// at most one).
struct Range { std::int64_t begin = 0, end = 0; std::int64_t size() const { return end - begin; } };
Range split_range(std::int64_t n, std::int64_t parts, std::int64_t i);
// How many items of `r` fall in each of `parts`: the per-rank counts of a collective over r when
// rank i owns parts[i] (ZeRO's gathers and gradient reduce-scatters of one block).
std::vector<int> overlap_counts(Range r, const std::vector<Range>& parts);

// Deterministic init from `seed`, in parameter_tensors() order: matrices N(0, 1/fan_in), vectors
// N(0, 0.1²) (nonzero so every gradient path is exercised), Λ (rec.lambda) so that
// a = σ(−Λ) ∈ [0.9, 0.999].
std::vector<float> init_params(const Layout& lay, unsigned seed);

}  // namespace scanshard
