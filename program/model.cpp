// program/model.cpp — see model.hpp.
#include "program/model.hpp"

#include <algorithm>
#include <cmath>

#include "program/yaml_reader.hpp"

namespace scanshard {

const char* to_string(Family f) { return name_of(kFamilyNames, f); }

const char* to_string(NormKind n) { return name_of(kNormNames, n); }
const char* to_string(MlpKind k) {
  static const char* names[] = {"gated_gelu", "gelu", "swiglu"};
  return names[static_cast<int>(k)];
}

const char* to_string(Temporal t) {
  switch (t) {
    case Temporal::recurrent: return "recurrent";
    case Temporal::local_attention: return "local_attention";
    case Temporal::global_attention: return "global_attention";
    case Temporal::rwkv4_time_mix: return "rwkv4_time_mix";
    case Temporal::rwkv6_time_mix: return "rwkv6_time_mix";
  }
  return "?";
}

Temporal temporal_kind(const ModelSpec& m, std::int64_t layer) {
  switch (m.family) {
    // Griffin: (recurrent, recurrent, local attention) repeated — layer i is attention iff i%3==2.
    case Family::griffin: return layer % 3 == 2 ? Temporal::local_attention : Temporal::recurrent;
    case Family::hawk: return Temporal::recurrent;
    case Family::mqa: return m.window > 0 ? Temporal::local_attention : Temporal::global_attention;
    case Family::rwkv4: return Temporal::rwkv4_time_mix;
    case Family::rwkv6: return Temporal::rwkv6_time_mix;
    case Family::transformer: return m.window > 0 ? Temporal::local_attention : Temporal::global_attention;
  }
  return Temporal::recurrent;
}

std::int64_t ParamTensor::count() const {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

namespace {

using Shape = std::vector<std::int64_t>;

struct TensorList {
  std::vector<ParamTensor> out;
  std::string block;
  void add(const std::string& name, Shape shape, bool embedding = false) {
    out.push_back({block, name, std::move(shape), embedding});
  }
};

// Gated MLP (Griffin): y = (gelu(x W1 + b1) ⊙ (x W2 + b2)) W3 + b3, shapes [D,F],[D,F],[F,D].
void add_gated_mlp(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, F = m.mlp_width;
  t.add("mlp.w1", {D, F}); t.add("mlp.b1", {F});
  t.add("mlp.w2", {D, F}); t.add("mlp.b2", {F});
  t.add("mlp.w3", {F, D}); t.add("mlp.b3", {D});
}

// Recurrent block: gate branch Wy, input branch Wx -> Conv1D(K) -> RG-LRU (block-diagonal gates
// with H_b blocks of (R/H_b)², Λ) -> Wo.
void add_recurrent(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, R = m.recurrent_width, K = m.conv_width, Hb = m.gate_blocks;
  t.add("rec.wy", {D, R}); t.add("rec.by", {R});
  t.add("rec.wx", {D, R}); t.add("rec.bx", {R});
  t.add("rec.conv_w", {K, R}); t.add("rec.conv_b", {R});
  t.add("rec.gate_a_w", {Hb, R / Hb, R / Hb}); t.add("rec.gate_a_b", {R});
  t.add("rec.gate_x_w", {Hb, R / Hb, R / Hb}); t.add("rec.gate_x_b", {R});
  t.add("rec.lambda", {R});
  t.add("rec.wo", {R, D}); t.add("rec.bo", {D});
}

// (Multi-query) attention: Q has H heads, K/V have kv_heads; no q/k/v bias, output bias
// (recurrentgemma LocalAttentionBlock: proj_q/k/v use_bias=False, proj_final use_bias=True).
void add_attention(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, N = m.head_dim;
  t.add("attn.wq", {D, m.heads * N});
  t.add("attn.wk", {D, m.kv_heads * N});
  t.add("attn.wv", {D, m.kv_heads * N});
  t.add("attn.wo", {m.heads * N, D}); t.add("attn.bo", {D});
}

void add_layer_norm(TensorList& t, const std::string& name, std::int64_t D) {
  t.add(name + ".scale", {D}); t.add(name + ".bias", {D});
}

// Transformer norm: RMSNorm (scale) or LayerNorm (scale, bias).
void add_norm(TensorList& t, const ModelSpec& m, const std::string& name) {
  if (m.norm == NormKind::layernorm) add_layer_norm(t, name, m.width); else t.add(name + ".scale", {m.width});
}

// Transformer layer (pre-LN GPT block): x += Wo·Attn(Q, K, V)(norm1(x)); x += MLP(norm2(x)), or
// with parallel_block x += Wo·Attn(...)(norm1(x)) + MLP(norm1(x)) (no norm2).
// Q has H heads, K/V kv_heads (H: multi-head, 1: multi-query, else grouped-query); MLP
// gelu: gelu(x W1 + b1) W3 + b3, swiglu: (silu(x W1) ⊙ x W2) W3; biases on every linear if
// linear_bias (GPT-3/Megatron: 13·D per layer with the two LayerNorms, Narayanan et al. 2021 §5.1).
void add_transformer_layer(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, N = m.head_dim, F = m.mlp_width;
  auto linear = [&](const char* w, const char* b, std::int64_t din, std::int64_t dout) {
    t.add(w, {din, dout});
    if (m.linear_bias) t.add(b, {dout});
  };
  add_norm(t, m, "norm1");
  linear("attn.wq", "attn.bq", D, m.heads * N);
  linear("attn.wk", "attn.bk", D, m.kv_heads * N);
  linear("attn.wv", "attn.bv", D, m.kv_heads * N);
  linear("attn.wo", "attn.bo", m.heads * N, D);
  if (!m.parallel_block) add_norm(t, m, "norm2");
  linear("mlp.w1", "mlp.b1", D, F);
  if (m.mlp != MlpKind::gelu) linear("mlp.w2", "mlp.b2", D, F);
  linear("mlp.w3", "mlp.b3", F, D);
}

// RWKV channel mix: o = σ(x_r Wr) ⊙ (relu(x_k Wk)²) Wv, token-shift mixes μ_k, μ_r.
void add_channel_mix(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, F = m.mlp_width;
  t.add("cm.mu_k", {D}); t.add("cm.mu_r", {D});
  t.add("cm.wk", {D, F}); t.add("cm.wv", {F, D}); t.add("cm.wr", {D, D});
}

// RWKV-4 time mix: μ_r,k,v, decay w (time_decay), bonus u, Wr, Wk, Wv, Wo.
void add_rwkv4_time_mix(TensorList& t, const ModelSpec& m) {
  const auto D = m.width;
  t.add("tm.mu_r", {D}); t.add("tm.mu_k", {D}); t.add("tm.mu_v", {D});
  t.add("tm.decay", {D}); t.add("tm.bonus", {D});
  t.add("tm.wr", {D, D}); t.add("tm.wk", {D, D}); t.add("tm.wv", {D, D}); t.add("tm.wo", {D, D});
}

// RWKV-6 time mix: data-dependent token shift (μ_x, μ_{w,k,v,r,g}, shared LoRA A [D,5·r], B
// [5,r,D]), decay λ_w + LoRA (A_w [D,r_w], B_w [r_w,D]), bonus u [H,N], Wr Wk Wv Wg Wo, GroupNorm.
void add_rwkv6_time_mix(TensorList& t, const ModelSpec& m) {
  const auto D = m.width, r = m.lora_rank_mix, rw = m.lora_rank_decay;
  t.add("tm.mu_x", {D}); t.add("tm.mu", {5, D});
  t.add("tm.lora_a", {D, 5 * r}); t.add("tm.lora_b", {5, r, D});
  t.add("tm.decay", {D}); t.add("tm.decay_a", {D, rw}); t.add("tm.decay_b", {rw, D});
  t.add("tm.bonus", {D / m.head_size, m.head_size});
  t.add("tm.wr", {D, D}); t.add("tm.wk", {D, D}); t.add("tm.wv", {D, D});
  t.add("tm.wg", {D, D}); t.add("tm.wo", {D, D});
  t.add("tm.gn_scale", {D}); t.add("tm.gn_bias", {D});
}

}  // namespace

namespace {

void add_layer(TensorList& t, const ModelSpec& m, std::int64_t i) {
  const auto D = m.width;
  t.block = "layer." + std::to_string(i);
  if (m.family == Family::transformer) {
    add_transformer_layer(t, m);
    return;
  }
  if (m.is_rwkv()) {
    add_layer_norm(t, "norm1", D);
    if (m.family == Family::rwkv4) add_rwkv4_time_mix(t, m); else add_rwkv6_time_mix(t, m);
    add_layer_norm(t, "norm2", D);
    add_channel_mix(t, m);
    return;
  }
  t.add("norm1.scale", {D});
  if (temporal_kind(m, i) == Temporal::recurrent) add_recurrent(t, m); else add_attention(t, m);
  t.add("norm2.scale", {D});
  add_gated_mlp(t, m);
}

}  // namespace

std::vector<ParamTensor> layer_parameter_tensors(const ModelSpec& m, std::int64_t layer) {
  TensorList t;
  add_layer(t, m, layer);
  return t.out;
}

std::vector<ParamTensor> parameter_tensors(const ModelSpec& m) {
  const auto D = m.width, V = m.vocab;
  TensorList t;
  t.block = "embed";
  t.add("embed.table", {V, D}, true);
  if (m.is_rwkv()) add_layer_norm(t, "embed_norm", D);  // RWKV's extra LayerNorm on the embedding
  if (m.max_positions > 0) t.add("embed.positions", {m.max_positions, D}, true);  // learned positions
  for (std::int64_t i = 0; i < m.depth; ++i) add_layer(t, m, i);
  t.block = "final";
  if (m.family == Family::transformer) add_norm(t, m, "final_norm");
  else if (m.is_rwkv()) add_layer_norm(t, "final_norm", D); else t.add("final_norm.scale", {D});
  if (!m.tied_embeddings) {
    t.block = "head";
    t.add("head.w", {D, V}, true);
  }
  return t.out;
}

ParamCounts count_parameters(const ModelSpec& m) {
  ParamCounts c;
  for (const auto& p : parameter_tensors(m)) {
    c.total += p.count();
    if (p.embedding) c.embedding += p.count();
  }
  c.non_embedding = c.total - c.embedding;
  return c;
}

namespace {

constexpr std::int64_t kMaxWidth = 1 << 20;
constexpr std::int64_t kMaxDepth = 100000;
constexpr std::int64_t kMaxVocab = 1 << 26;
constexpr double kMaxParameters = 1125899906842624.0;  // 2^50: counts and byte sizes stay far from int64 overflow

// The parameter count in floating point (no overflow whatever the sizes): layers repeat with
// period 3 (Griffin) or 1, so three layers stand for all of them.
double parameters_estimate(const ModelSpec& m) {
  auto sum = [](const std::vector<ParamTensor>& ts) {
    double n = 0;
    for (const auto& t : ts) {
      double c = 1;
      for (auto s : t.shape) c *= static_cast<double>(s);
      n += c;
    }
    return n;
  };
  double total = 2.0 * static_cast<double>(m.vocab) * static_cast<double>(m.width) + 4.0 * static_cast<double>(m.width);
  for (std::int64_t l = 0; l < std::min<std::int64_t>(3, m.depth); ++l)
    total += sum(layer_parameter_tensors(m, l)) * static_cast<double>((m.depth - l + 2) / 3);
  return total;
}

std::int64_t positive(YamlMap& y, const std::string& key, std::int64_t v, std::int64_t max) {
  if (v <= 0) throw y.error(key, "must be positive, got " + format_number(v));
  if (v > max) throw y.error(key, std::to_string(v) + " is larger than the supported maximum " + std::to_string(max));
  return v;
}

void must_divide(YamlMap& y, const std::string& key, std::int64_t divisor, const std::string& what,
                 std::int64_t n) {
  if (n % divisor != 0)
    throw y.error(key, std::to_string(divisor) + " does not divide " + what + " " + std::to_string(n));
}

Family parse_family(YamlMap& y) { return y.required_choice("family", kFamilyNames); }

// F = expansion · D, or given directly as mlp_width; must be a whole number.
std::int64_t parse_mlp_width(YamlMap& y, std::int64_t D, double default_expansion) {
  if (y.has("mlp_width") && y.has("mlp_expansion"))
    throw y.error("mlp_width", "give mlp_width or mlp_expansion, not both");
  if (y.has("mlp_width")) {
    y.raw("mlp_expansion");
    return positive(y, "mlp_width", y.required_int("mlp_width"), 64 * kMaxWidth);
  }
  const double e = y.optional_double("mlp_expansion", default_expansion);
  y.raw("mlp_width");
  if (e <= 0 || e > 64) throw y.error("mlp_expansion", "must be in (0, 64], got " + format_number(e));
  const double f = e * static_cast<double>(D);
  if (std::fabs(f - std::round(f)) > 1e-9)
    throw y.error("mlp_expansion", "expansion × width = " + format_number(f) + " is not a whole number");
  if (std::round(f) < 1) throw y.error("mlp_expansion", "expansion × width = " + format_number(f) + " leaves the MLP no hidden unit");
  return static_cast<std::int64_t>(std::round(f));
}

void parse_recurrent(YamlMap& y, ModelSpec& m) {
  m.recurrent_width = positive(y, "recurrent_width", y.required_int("recurrent_width"), kMaxWidth);
  m.gate_blocks = positive(y, "gate_blocks", y.optional_int("gate_blocks", 16), kMaxWidth);
  must_divide(y, "gate_blocks", m.gate_blocks, "recurrent_width", m.recurrent_width);
  m.conv_width = positive(y, "conv_width", y.optional_int("conv_width", 4), 64);
}

// kv_heads defaults to 1 (multi-query) or, for the transformer, to heads (multi-head).
void parse_attention(YamlMap& y, ModelSpec& m, bool window_required, double default_rope_fraction = 0.5) {
  m.heads = positive(y, "heads", y.required_int("heads"), kMaxWidth);
  if (!y.has("head_dim")) must_divide(y, "heads", m.heads, "width", m.width);
  m.head_dim = positive(y, "head_dim", y.optional_int("head_dim", m.width / m.heads), kMaxWidth);
  m.kv_heads = positive(y, "kv_heads", y.optional_int("kv_heads", m.family == Family::transformer ? m.heads : 1), kMaxWidth);
  must_divide(y, "kv_heads", m.kv_heads, "heads", m.heads);
  if (window_required) {
    m.window = positive(y, "window", y.required_int("window"), 1 << 30);
  } else {
    m.window = y.optional_int("window", 0);
    if (m.window < 0) throw y.error("window", "must be 0 (global attention) or positive");
  }
  m.rope_fraction = y.optional_double("rope_fraction", default_rope_fraction);
  if (m.rope_fraction <= 0 || m.rope_fraction > 1)
    throw y.error("rope_fraction", "must be in (0, 1]");
  const double rot = m.rope_fraction * static_cast<double>(m.head_dim);
  if (rot != std::floor(rot) || static_cast<std::int64_t>(rot) % 2 != 0)
    throw y.error("rope_fraction", "rope_fraction × head_dim = " + format_number(rot) + " must be an even whole number");
  m.rope_base = y.optional_double("rope_base", 10000.0);
  if (m.rope_base <= 1) throw y.error("rope_base", "must be > 1");
}


// Transformer: positions (learned table of max_positions rows, or rotary), norm, MLP kind,
// linear biases, dropout. Attention keys are read by parse_attention (rope only if rotary).
void parse_transformer(YamlMap& y, ModelSpec& m) {
  const bool rotary = y.optional_choice<bool, 2>("positions", false, {{{"learned", false}, {"rotary", true}}});
  if (rotary) {
    parse_attention(y, m, false, 1.0);
    if (y.has("max_positions")) throw y.error("max_positions", "only learned positions have a table (positions: learned)");
  } else {
    parse_attention(y, m, false, 1.0);
    m.rope_fraction = 0;  // no rotary embedding
    m.max_positions = positive(y, "max_positions", y.required_int("max_positions"), 1 << 24);
  }
  m.norm = y.optional_choice("norm", NormKind::layernorm, kNormNames);
  m.mlp = y.optional_choice<MlpKind, 2>("mlp", MlpKind::gelu, {{{"gelu", MlpKind::gelu}, {"swiglu", MlpKind::swiglu}}});
  m.linear_bias = y.optional_bool("bias", true);
  m.parallel_block = y.optional_choice<bool, 2>("block", false, {{{"sequential", false}, {"parallel", true}}});
  m.dropout = y.optional_double("dropout", 0.0);
  if (!(m.dropout >= 0 && m.dropout < 1)) throw y.error("dropout", "must be in [0, 1), got " + format_number(m.dropout));
}

void parse_rwkv6(YamlMap& y, ModelSpec& m) {
  m.head_size = positive(y, "head_size", y.optional_int("head_size", 64), 4096);
  must_divide(y, "head_size", m.head_size, "width", m.width);
  m.lora_rank_mix = positive(y, "lora_rank_mix", y.optional_int("lora_rank_mix", 32), kMaxWidth);
  m.lora_rank_decay = positive(y, "lora_rank_decay", y.optional_int("lora_rank_decay", 64), kMaxWidth);
  m.group_norm_eps = y.optional_double("group_norm_eps", 64e-5);
  if (m.group_norm_eps <= 0) throw y.error("group_norm_eps", "must be positive");
}

}  // namespace

ModelSpec parse_model(const YAML::Node& node, const std::string& file) {
  YamlMap y(node, file, "");
  ModelSpec m;
  m.origin = file;
  m.name = y.required_string("name");
  m.source = y.optional_string("source", "");
  m.family = parse_family(y);
  m.width = positive(y, "width", y.required_int("width"), kMaxWidth);
  m.depth = positive(y, "depth", y.required_int("depth"), kMaxDepth);
  m.vocab = positive(y, "vocab", y.required_int("vocab"), kMaxVocab);
  if (m.vocab < 2) throw y.error("vocab", "must be at least 2 (one token leaves nothing to predict: the loss is 0 at any weights)");
  m.tied_embeddings = y.optional_bool("tied_embeddings", !m.is_rwkv());
  m.norm_eps = y.optional_double("norm_eps", m.is_rwkv() ? 1e-5 : 1e-6);
  if (m.norm_eps <= 0 || m.norm_eps > 1) throw y.error("norm_eps", "must be in (0, 1]");
  switch (m.family) {
    case Family::griffin:
      parse_recurrent(y, m);
      parse_attention(y, m, true);
      break;
    case Family::hawk: parse_recurrent(y, m); break;
    case Family::mqa: parse_attention(y, m, false); break;
    case Family::rwkv4: break;
    case Family::rwkv6: parse_rwkv6(y, m); break;
    case Family::transformer: parse_transformer(y, m); break;
  }
  if (m.is_rwkv()) m.norm = NormKind::layernorm;
  if (m.family == Family::transformer && m.mlp == MlpKind::swiglu && !y.has("mlp_width") && !y.has("mlp_expansion"))
    throw y.error("mlp", "a swiglu MLP needs mlp_width (its hidden size is a model choice, e.g. 28672 for Llama-2-70B)");
  m.mlp_width = parse_mlp_width(y, m.width, m.family == Family::rwkv4 || m.family == Family::transformer ? 4.0
                                            : m.family == Family::rwkv6 ? 3.5 : 3.0);
  if (!m.is_rwkv()) {
    m.scale_embedding = y.optional_bool("scale_embedding", false);
    m.logit_softcap = y.optional_double("logit_softcap", 0.0);
    if (m.logit_softcap < 0) throw y.error("logit_softcap", "must be 0 (off) or positive");
  }
  y.finish();
  if (const double n = parameters_estimate(m); n > kMaxParameters)
    throw ConfigError(file, 0, 0, "", "the model has about " + format_number(n) +
                                          " parameters, more than the supported maximum 2^50 (reduce width, depth, vocab or mlp_width)");
  return m;
}

}  // namespace scanshard
