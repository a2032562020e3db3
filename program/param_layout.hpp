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
// One tensor rank's share of the model's dimensions under Megatron's splits (ShardLayout's):
// width D/t (RWKV's column-split mixes), its vocabulary columns [vocab_begin, +vocab), R/t
// recurrent channels, F/t MLP channels, H/t query heads, kv_heads/t K/V heads (or the one head
// its query heads share when kv_heads < t: the K/V weights are replicated), the rotary dimensions
// of a head, gate_blocks/t RG-LRU gate blocks. The executor's State and the decoder size their
// buffers with it.
struct TensorRankDims {
  std::int64_t width = 0, vocab_begin = 0, vocab = 0, recurrent = 0, mlp = 0, heads = 0, kv_heads = 0, rope_dims = 0,
               gate_blocks = 0;
};
TensorRankDims tensor_rank_dims(const ModelSpec& m, std::int64_t t, std::int64_t tensor_rank);
// How many items of `r` fall in each of `parts`: the per-rank counts of a collective over r when
// rank i owns parts[i] (ZeRO's gathers and gradient reduce-scatters of one block).
std::vector<int> overlap_counts(Range r, const std::vector<Range>& parts);

// Deterministic init from `seed`, in parameter_tensors() order: matrices N(0, 1/fan_in), vectors
// N(0, 0.1²) (nonzero so every gradient path is exercised), Λ (rec.lambda) so that
// a = σ(−Λ) ∈ [0.9, 0.999].
std::vector<float> init_params(const Layout& lay, unsigned seed);

}  // namespace scanshard
