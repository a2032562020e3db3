// program/model.hpp — model specifications and the one place where model shapes live.
//
// Notation (DESIGN §3, STYLE habit 3): B batch, T tokens, D width, R recurrent width, H heads,
// N head size, K conv width, W window, L layers, V vocab, F MLP / channel-mix hidden width.
//
// For: the typed ModelSpec read from YAML (with validation), the per-layer block kinds, and the
// list of parameter tensors with their logical shapes — counts, initialisation and checkpoints
// all derive from parameter_tensors(). Not for: FLOPs/bytes of a step (the lowering does that),
// loading presets by name (presets.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "program/names.hpp"

namespace scanshard {

enum class Family { griffin, hawk, mqa, rwkv4, rwkv6, transformer };
inline constexpr Names<Family, 6> kFamilyNames{{{"griffin", Family::griffin},
                                                {"hawk", Family::hawk},
                                                {"mqa", Family::mqa},
                                                {"rwkv4", Family::rwkv4},
                                                {"rwkv6", Family::rwkv6},
                                                {"transformer", Family::transformer}}};
const char* to_string(Family f);

// Transformer family (GPT-style pre-LN blocks) choices; the other families fix these.
enum class NormKind : std::uint8_t { rmsnorm, layernorm };
inline constexpr Names<NormKind, 2> kNormNames{{{"layernorm", NormKind::layernorm}, {"rmsnorm", NormKind::rmsnorm}}};
enum class MlpKind : std::uint8_t { gated_gelu, gelu, swiglu };  // gated_gelu: Griffin's MLP
const char* to_string(NormKind n);
const char* to_string(MlpKind k);

// What the temporal-mixing half of layer i is.
enum class Temporal { recurrent, local_attention, global_attention, rwkv4_time_mix, rwkv6_time_mix };
const char* to_string(Temporal t);

struct ModelSpec {
  std::string name;
  std::string source;       // citation for the published numbers ("" for user models)
  std::string origin;       // file it was read from
  Family family = Family::griffin;
  std::int64_t width = 0;   // D
  std::int64_t depth = 0;   // L
  std::int64_t vocab = 0;   // V
  bool tied_embeddings = true;
  double norm_eps = 1e-6;
  std::int64_t mlp_width = 0;  // F (gated MLP hidden, or RWKV channel-mix hidden)
  // Griffin / Hawk recurrent block
  std::int64_t recurrent_width = 0;  // R
  std::int64_t gate_blocks = 0;      // H_b, blocks of the block-diagonal RG-LRU gates
  std::int64_t conv_width = 0;       // K
  // attention (Griffin local, MQA baseline global)
  std::int64_t heads = 0;      // H (query heads)
  std::int64_t kv_heads = 0;   // 1 = multi-query
  std::int64_t head_dim = 0;   // N
  std::int64_t window = 0;     // W; 0 = global causal attention
  double rope_fraction = 0.5;  // RoPE on the first half of each head's dims
  double rope_base = 10000.0;
  bool scale_embedding = false;  // multiply embeddings by sqrt(D) (RecurrentGemma)
  double logit_softcap = 0.0;    // 0 = none
  // RWKV-6
  std::int64_t head_size = 0;        // N = 64
  std::int64_t lora_rank_mix = 0;    // shared token-shift LoRA (32)
  std::int64_t lora_rank_decay = 0;  // decay LoRA (64)
  double group_norm_eps = 0.0;
  // Transformer (family transformer): norm, MLP kind, learned position table, linear biases,
  // dropout probability (masks are activation memory, Korthikanti et al. 2022 §4).
  NormKind norm = NormKind::rmsnorm;
  MlpKind mlp = MlpKind::gated_gelu;
  std::int64_t max_positions = 0;  // learned position table rows (0 = none: rotary or no positions)
  bool linear_bias = true;
  double dropout = 0.0;
  // block: parallel — y = x + Attention(norm1(x)) + MLP(norm1(x)) (GPT-J; PaLM, Chowdhery et al.
  // 2022 §2): one norm and one tensor-parallel entry and exit for both branches.
  bool parallel_block = false;

  bool is_rwkv() const { return family == Family::rwkv4 || family == Family::rwkv6; }
  // Whether any layer runs a linear-recurrence scan (so the plan's scan and carry choices matter).
  bool has_scan() const { return family != Family::mqa && family != Family::transformer; }
};

Temporal temporal_kind(const ModelSpec& m, std::int64_t layer);

struct ParamTensor {
  std::string block;                // "embed", "layer.3", "final", "head"
  std::string name;                 // "mlp.w1", "rec.gate_a_w", ...
  std::vector<std::int64_t> shape;  // logical (unsharded), row-major
  bool embedding = false;           // input embedding or output head table
  std::int64_t count() const;
};

// Every parameter tensor of the model in a fixed order. The single source of model shapes.
std::vector<ParamTensor> parameter_tensors(const ModelSpec& m);
// The tensors of one layer (block "layer.<i>"), in the same order.
std::vector<ParamTensor> layer_parameter_tensors(const ModelSpec& m, std::int64_t layer);

struct ParamCounts {
  std::int64_t total = 0;
  std::int64_t embedding = 0;      // embedding table (+ untied head)
  std::int64_t non_embedding = 0;  // total − embedding
};
ParamCounts count_parameters(const ModelSpec& m);

// Reads and validates a model mapping; errors are ConfigError naming file, key and reason.
ModelSpec parse_model(const YAML::Node& node, const std::string& file);

}  // namespace scanshard
