// program/param_layout.cpp — see param_layout.hpp.
#include "program/param_layout.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace scanshard {

Layout::Layout(const ModelSpec& m) : tensors(parameter_tensors(m)) {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    offset.push_back(total);
    total += tensors[i].count();
    index[tensors[i].block + "/" + tensors[i].name] = i;
  }
}

std::int64_t Layout::off(const std::string& block, const std::string& name) const {
  auto it = index.find(block + "/" + name);
  if (it == index.end()) throw std::runtime_error("no parameter " + block + "/" + name);
  return offset[it->second];
}

int tensor_split_dim(const ModelSpec& m, const ParamTensor& p, std::int64_t t) {
  if (t <= 1) return -1;
  const std::string& n = p.name;
  const int last = static_cast<int>(p.shape.size()) - 1;
  if (n == "embed.table") return 0;                      // vocab-parallel rows
  if (n == "embed.positions") return -1;                 // learned positions: replicated (Megatron)
  if (n == "head.w") return 1;                           // untied head [D, V]: vocab columns
  // replicated: norms, token-shift mixes, shared LoRA A, biases after a row-split all-reduce
  if (n.find("norm") != std::string::npos || n.starts_with("tm.mu") || n.starts_with("cm.mu") || n == "tm.lora_a" ||
      n == "tm.decay_a" || n == "tm.lora_b" || n == "rec.bo" || n == "attn.bo" || n == "mlp.b3")
    return -1;
  if ((n == "attn.wk" || n == "attn.wv" || n == "attn.bk" || n == "attn.bv") && m.kv_heads < t) return -1;  // K/V heads replicated
  // row-split (input dim): the projections back to D
  if (n == "rec.wo" || n == "attn.wo" || n == "mlp.w3" || n == "tm.wo" || n == "cm.wv") return 0;
  if (n == "rec.gate_a_w" || n == "rec.gate_x_w" || n == "tm.bonus") return 0;  // blocks / heads
  if (n == "tm.decay_b") return last;                                           // [rw, D] -> D/t columns
  return last;  // column-split weights and per-channel vectors
}

bool token_partial_grad(const ModelSpec& m, const ParamTensor& p, std::int64_t t) {
  if (tensor_split_dim(m, p, t) >= 0) return false;
  const std::string& n = p.name;
  return n.find("norm") != std::string::npos || n == "embed.positions";
}

TensorRankDims tensor_rank_dims(const ModelSpec& m, std::int64_t t, std::int64_t tensor_rank) {
  TensorRankDims d;
  d.width = m.width / t;
  const Range vr = split_range(m.vocab, t, tensor_rank);
  d.vocab_begin = vr.begin;
  d.vocab = vr.size();
  d.recurrent = m.recurrent_width / t;
  d.mlp = m.mlp_width / t;
  d.heads = m.heads ? m.heads / t : 0;
  d.kv_heads = m.kv_heads >= t ? m.kv_heads / t : 1;
  d.rope_dims = static_cast<std::int64_t>(std::lround(m.rope_fraction * static_cast<double>(m.head_dim)));
  d.gate_blocks = m.gate_blocks ? m.gate_blocks / t : 0;
  return d;
}

Range split_range(std::int64_t n, std::int64_t parts, std::int64_t i) {
  return {n * i / parts, n * (i + 1) / parts};
}

std::vector<int> overlap_counts(Range r, const std::vector<Range>& parts) {
  std::vector<int> counts;
  for (const Range& part : parts)
    counts.push_back(static_cast<int>(std::max<std::int64_t>(0, std::min(r.end, part.end) - std::max(r.begin, part.begin))));
  return counts;
}

std::vector<float> init_params(const Layout& lay, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> nd(0, 1);
  std::uniform_real_distribution<double> ua(0.9, 0.999);
  std::vector<float> p(static_cast<std::size_t>(lay.total));
  for (std::size_t i = 0; i < lay.tensors.size(); ++i) {
    const auto& t = lay.tensors[i];
    float* d = p.data() + lay.offset[i];
    const bool lambda = t.name == "rec.lambda";
    const double sd = t.shape.size() >= 2 ? 1.0 / std::sqrt(double(t.shape[t.shape.size() - 2])) : 0.1;
    for (std::int64_t j = 0; j < t.count(); ++j)
      d[j] = lambda ? float(std::log(std::expm1(-std::log(ua(g))))) : float(sd * nd(g));
  }
  return p;
}

}  // namespace scanshard
