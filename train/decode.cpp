// train/decode.cpp — see decode.hpp. Layout: the per-layer caches and states; the Impl (sizes,
// this rank's weights, scratch); one function per block piece in the order the executor runs the
// training forward (embedding, norms, recurrent / attention / RWKV time mix, MLP / channel mix,
// head); feed().
#include "train/decode.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <span>
#include <string>

#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/kv_cache.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "program/inference.hpp"
#include "program/steps.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint.hpp"

namespace scanshard::train {

namespace K = scanshard::kernels::fast;
using Vec = kernels::AlignedVec;
using i64 = std::int64_t;

namespace {
std::size_t sz(i64 n) { return static_cast<std::size_t>(n); }

// What one layer carries from token to token (only the fields of its kind are sized).
struct LayerState {
  Temporal kind = Temporal::recurrent;
  Vec conv, conv_next, h, h_next;     // recurrent: Conv1D window [B,K−1,Rl], RG-LRU h [B,Rl]
  Vec decay_exponents;                //   the scan's per-channel exponents [Rl], from the fixed Λ
  Vec kc, vc;                         // attention: K/V cache [B,C,KVl,N]
  i64 capacity = 0;                   //   C rows
  Vec kv_w[2], kv_b[2];               //   replicated K/V head: this rank's columns of wk/wv (bk/bv)
  Vec tm_prev, cm_prev;               // RWKV: last norm outputs of the time / channel mix [B,D]
  Vec wkv, wkv_next;                  // RWKV-4 (a,b,p) [3,B,Dl]; RWKV-6 S [B,Hl,N,N]
};
}  // namespace

void check_decodable(const ModelSpec& m, i64 t, const std::string& where) {
  auto need = [&](i64 n, const char* what) {
    if (n > 0 && n % t != 0)
      throw ConfigError(where + ": tensor = " + std::to_string(t) + " does not divide the model's " + what + " (" +
                        std::to_string(n) + ")");
  };
  need(m.width, "width");
  need(m.mlp_width, "mlp_width");
  need(m.recurrent_width, "recurrent_width");
  need(m.heads, "heads");
  need(m.gate_blocks, "gate_blocks");
  if (m.kv_heads >= t) need(m.kv_heads, "kv_heads");
  if (m.family == Family::rwkv6 && (m.width / t) % m.head_size != 0)
    throw ConfigError(where + ": tensor = " + std::to_string(t) + " splits RWKV-6 heads of size " + std::to_string(m.head_size));
}

DecodeWeights read_decode_weights(const mpi::Comm& world, const std::string& path, const Layout& lay,
                                  const ShardLayout& sl) {
  std::int64_t largest = 1;
  for (std::size_t i = 0; i < sl.dim.size(); ++i) largest = std::max(largest, sl.count(i));
  DecodeWeights params(static_cast<std::size_t>(sl.total));
  std::vector<float> scratch(static_cast<std::size_t>(largest));
  std::vector<float*> p, moments(sl.dim.size(), scratch.data());
  for (std::size_t i = 0; i < sl.dim.size(); ++i) p.push_back(params.data() + sl.offset[i]);
  read_checkpoint(world, path, lay, shard_slabs(sl), p, moments, moments);
  return params;
}

struct Decoder::Impl {
  const ModelSpec& m;
  const ShardLayout& lay;
  const float* P;
  const mpi::Comm* tp;
  const mpi::Comm* pp = nullptr;  // pipeline stages (nullptr: one)
  i64 t = 1, tc = 0, B, max_len, stage = 0, stages = 1;
  Range layers;                   // this stage's layers
  i64 D, Dl, V, v0, Vl, R, F, H, KV, N, rot, Kc, Hb, Hl6 = 0;
  float escale = 1, eps;
  std::vector<LayerState> L;
  // scratch, sized for the current M = B·T rows
  i64 M = 0, T = 0, pos0 = 0;
  i64 head_rows = 0;              // rows the head computes logits for: M, or B (each sequence's last)
  const char* phase = "decode";
  Trace* tr = nullptr;
  std::vector<std::int32_t> pos;
  std::vector<std::uint8_t> reset;
  Vec x, n1, n2, stat1, stat2, tout, part, branch, h1, h2, gm, a1, a2, a3, a4, a5, q, k, v, att, lse, big5, big5b, lz, ltz;
  // scratch a token would otherwise allocate (sized once per T): norm means, one query row per
  // sequence and its output, this rank's logits, the gathered logits and channel-mix gate
  Vec nmean, qt, ot, logits_local, gathered;
  std::vector<float> logits_gathered, logits_full;
  std::vector<int> gather_counts;

  Impl(const ModelSpec& m_, const ShardLayout& l_, const float* p_, const mpi::Comm* tp_) : m(m_), lay(l_), P(p_), tp(tp_) {}

  static std::string block(i64 layer) {
    return layer == -1 ? "embed" : layer == -2 ? "final" : layer == -3 ? "head" : "layer." + std::to_string(layer);
  }
  bool has(i64 layer, const char* name) const { return lay.full.index.count(block(layer) + "/" + name) > 0; }
  const float* par(i64 layer, const char* name) const { return P + lay.off(block(layer), name); }
  const float* opt(i64 layer, const char* name) const { return has(layer, name) ? par(layer, name) : nullptr; }
  // A row-split linear's bias: added once, on tensor rank 0, before the all-reduce (as the executor).
  const float* bias_after_reduce(i64 layer, const char* name) const { return tc == 0 ? opt(layer, name) : nullptr; }

  template <class Fn>
  void timed(const char* op, const char* name, Fn&& fn) {
    Trace::Scope sc(tr, phase, op, name);
    fn();
  }
  void allreduce(float* buf, i64 n, const char* name) {
    if (!tp) return;
    timed(ops::all_reduce, name, [&] { tp->allreduce_sum(std::span<float>(buf, sz(n))); });
  }
  // over `rows` rows of D (−1: all M)
  void norm(float* y, float* stat, const float* in, i64 layer, const char* scale, const char* bias, bool layernorm,
            const char* name, i64 rows = -1) {
    if (rows < 0) rows = M;
    timed(layernorm ? ops::layernorm : ops::rmsnorm, name, [&] {
      if (layernorm) {
        K::layer_norm_forward(y, nmean.data(), stat, in, par(layer, scale), par(layer, bias), rows, D, eps);
      } else {
        K::rmsnorm_forward(y, stat, in, par(layer, scale), rows, D, eps);
      }
    });
  }
  bool block_layernorm() const { return m.is_rwkv() || m.norm == NormKind::layernorm; }
  void linear(float* y, const float* in, i64 layer, const char* w, const float* b, i64 C, i64 OC, const char* name) {
    timed(ops::linear, name, [&] { K::linear_forward(y, in, par(layer, w), b, M, C, OC); });
  }

  void size_scratch(i64 T_) {
    T = T_;
    M = B * T;
    // (not the vocabulary: the logits have their own buffer, sized for the head's rows)
    const i64 wide = std::max({D, F, R, H * N, 5 * m.lora_rank_mix, m.lora_rank_decay, i64(1)});
    for (Vec* v_ : {&x, &n1, &n2, &tout, &part}) v_->assign(sz(M * D), 0.0f);
    for (Vec* v_ : {&stat1, &stat2}) v_->assign(sz(M * std::max<i64>(1, Hl6)), 0.0f);
    for (Vec* v_ : {&h1, &h2, &gm, &a1, &a2, &a3, &a4, &a5, &q, &att}) v_->assign(sz(M * wide), 0.0f);
    for (Vec* v_ : {&k, &v}) v_->assign(sz(M * std::max(wide, KV * N)), 0.0f);
    lse.assign(sz(M * std::max<i64>(1, H)), 0.0f);
    nmean.assign(sz(M * std::max<i64>(1, Hl6)), 0.0f);
    for (Vec* v_ : {&qt, &ot}) v_->assign(sz(B * std::max<i64>(1, H * N)), 0.0f);
    gathered.assign(sz(M * D), 0.0f);
    if (m.is_rwkv()) {
      for (Vec* v_ : {&big5, &big5b}) v_->assign(sz(5 * M * D), 0.0f);
      for (Vec* v_ : {&lz, &ltz}) v_->assign(sz(M * std::max<i64>(1, 5 * m.lora_rank_mix)), 0.0f);
    }
  }

  // ---- embedding and head --------------------------------------------------------------------
  void embed(const std::int32_t* tokens) {
    float* out = m.is_rwkv() ? part.data() : x.data();
    timed(ops::embedding, tensors::embed_table,
          [&] { K::embedding_shard_forward(out, tokens, par(-1, "embed.table"), v0, Vl, M, D, escale); });
    allreduce(out, M * D, tensors::embed_out);
    if (m.max_positions > 0) {
      if (pos0 + T > m.max_positions)
        throw std::invalid_argument("decode: position " + std::to_string(pos0 + T - 1) + " is beyond the model's " +
                                    std::to_string(m.max_positions) + " learned positions");
      const float* table = par(-1, "embed.positions");
      for (i64 r = 0; r < M; ++r)
        for (i64 d = 0; d < D; ++d) x[sz(r * D + d)] += table[pos[sz(r)] * D + d];
    }
    if (m.is_rwkv()) norm(x.data(), stat1.data(), part.data(), -1, "embed_norm.scale", "embed_norm.bias", true, tensors::embed_norm);
  }
  // The head's input rows: all M rows of x, or with last_only each sequence's last (B rows, into n2:
  // a prefill then runs the head on B rows, not B·T, as the lowering prices it).
  const float* head_input() {
    if (head_rows == M) return x.data();
    for (i64 b = 0; b < B; ++b) std::copy_n(x.data() + (b * T + T - 1) * D, D, n2.data() + b * D);
    return n2.data();
  }
  // logits [head_rows, V] on every rank: local vocab columns, then all-gathered (uneven shards allowed)
  void head(std::vector<float>& logits) {
    const i64 rows = head_rows;
    const bool ln = m.family == Family::transformer ? m.norm == NormKind::layernorm : m.is_rwkv();
    norm(n1.data(), stat1.data(), head_input(), -2, "final_norm.scale", "final_norm.bias", ln, tensors::final_norm, rows);
    Vec& loc = logits_local;  // sized for the head's rows (not M: a prefill's B·T rows × V would be GBs)
    if (loc.size() != sz(rows * Vl)) loc.assign(sz(rows * Vl), 0.0f);
    timed(ops::logits, m.tied_embeddings ? tensors::embed_table : tensors::head_w, [&] {
      if (m.tied_embeddings) K::logits_tied_forward(loc.data(), n1.data(), par(-1, "embed.table"), rows, D, Vl);
      else K::linear_forward(loc.data(), n1.data(), par(-3, "head.w"), nullptr, rows, D, Vl);
    });
    if (!tp) {
      logits.assign(loc.begin(), loc.end());
      return;
    }
    logits.resize(sz(rows * V));
    std::vector<float>& all = logits_gathered;
    if (all.size() != sz(rows * V)) all.assign(sz(rows * V), 0.0f);
    std::vector<int>& counts = gather_counts;
    counts.clear();
    i64 off = 0;
    for (i64 r = 0; r < t; ++r) {
      const Range vr = split_range(V, t, r);
      counts.push_back(static_cast<int>(rows * vr.size()));
      if (r == tc) std::copy(loc.begin(), loc.end(), all.begin() + off);
      off += rows * vr.size();
    }
    timed(ops::all_gather, tensors::head_w, [&] { tp->allgather_v_inplace(std::span<float>(all), counts); });
    off = 0;
    for (i64 r = 0; r < t; ++r) {
      const Range vr = split_range(V, t, r);
      for (i64 row = 0; row < rows; ++row)
        std::copy_n(all.data() + off + row * vr.size(), vr.size(), logits.data() + row * V + vr.begin);
      off += rows * vr.size();
    }
  }

  // ---- MLP (Griffin's gated GeLU, or the transformer's GeLU / SwiGLU) --------------------------
  // in: norm2's output, or norm1's in a parallel block, whose attention branch `branch` (partial
  // sums) joins the MLP's before the one all-reduce.
  void mlp(i64 l, const float* in, const float* branch = nullptr) {
    linear(h1.data(), in, l, "mlp.w1", opt(l, "mlp.b1"), D, F, tensors::mlp_w1);
    if (m.mlp != MlpKind::gelu) linear(h2.data(), in, l, "mlp.w2", opt(l, "mlp.b2"), D, F, tensors::mlp_w2);
    timed(m.mlp == MlpKind::swiglu ? ops::silu_mul : ops::gelu_mul, tensors::mlp_act, [&] {
      if (m.mlp == MlpKind::gelu) K::gelu_mul_forward(gm.data(), h1.data(), nullptr, M * F);
      else if (m.mlp == MlpKind::swiglu) K::silu_mul_forward(gm.data(), h2.data(), h1.data(), M * F);
      else K::gelu_mul_forward(gm.data(), h1.data(), h2.data(), M * F);
    });
    linear(part.data(), gm.data(), l, "mlp.w3", bias_after_reduce(l, "mlp.b3"), F, D, tensors::mlp_w3);
    if (branch)  // W3 with β = 1 in the lowering: the add is part of that step's time
      timed(ops::linear, tensors::mlp_w3, [&] {
        for (i64 i = 0; i < M * D; ++i) part[sz(i)] += branch[i];
      });
    allreduce(part.data(), M * D, tensors::mlp_out);
  }

  // ---- recurrent block (Rl channels per rank): gate, Conv1D window, RG-LRU state ----------------
  void recurrent(i64 l, LayerState& s) {
    linear(a1.data(), n1.data(), l, "rec.wy", par(l, "rec.by"), D, R, tensors::rec_wy);
    linear(a2.data(), n1.data(), l, "rec.wx", par(l, "rec.bx"), D, R, tensors::rec_wx);
    timed(ops::conv1d, tensors::rec_conv, [&] {
      K::conv1d_forward(a3.data(), s.conv_next.data(), a2.data(), s.conv.data(), reset.data(), par(l, "rec.conv_w"),
                        par(l, "rec.conv_b"), B, T, R, Kc);
    });
    s.conv.swap(s.conv_next);
    timed(ops::linear, tensors::rec_gate_a,
          [&] { K::blockdiag_forward(a4.data(), a3.data(), par(l, "rec.gate_a_w"), par(l, "rec.gate_a_b"), M, R, Hb); });
    timed(ops::linear, tensors::rec_gate_x,
          [&] { K::blockdiag_forward(a5.data(), a3.data(), par(l, "rec.gate_x_w"), par(l, "rec.gate_x_b"), M, R, Hb); });
    timed(ops::rglru_scan, tensors::rec_scan, [&] {
      K::rglru_scan_forward(q.data(), s.h_next.data(), nullptr, a3.data(), a4.data(), a5.data(), s.h.data(), reset.data(),
                            par(l, "rec.lambda"), B, T, R, s.decay_exponents.data());
    });
    s.h.swap(s.h_next);
    timed(ops::gelu_mul, tensors::rec_gated, [&] { K::gelu_mul_forward(gm.data(), a1.data(), q.data(), M * R); });
    linear(part.data(), gm.data(), l, "rec.wo", bias_after_reduce(l, "rec.bo"), R, D, tensors::rec_wo);
  }

  // ---- attention block (H/t query heads; KV cache of this rank's K/V heads) --------------------
  void attention(i64 l, LayerState& s) {
    const i64 qw = H * N, kw = KV * N;
    linear(a1.data(), n1.data(), l, "attn.wq", opt(l, "attn.bq"), D, qw, tensors::attn_wq);
    for (int j = 0; j < 2; ++j) {
      const char* w = j == 0 ? "attn.wk" : "attn.wv";
      const float* wp = s.kv_w[j].empty() ? par(l, w) : s.kv_w[j].data();
      const float* bp = s.kv_w[j].empty() ? opt(l, j == 0 ? "attn.bk" : "attn.bv") : (s.kv_b[j].empty() ? nullptr : s.kv_b[j].data());
      timed(ops::linear, j == 0 ? tensors::attn_wk : tensors::attn_wv,
            [&] { K::linear_forward((j == 0 ? a2 : v).data(), n1.data(), wp, bp, M, D, kw); });
    }
    if (rot > 0) {
      timed(ops::rope, tensors::attn_rope, [&] {
        K::rope_forward(q.data(), a1.data(), pos.data(), B, T, H, N, rot, m.rope_base);
        K::rope_forward(k.data(), a2.data(), pos.data(), B, T, KV, N, rot, m.rope_base);
      });
    } else {
      std::copy_n(a1.data(), M * qw, q.data());
      std::copy_n(a2.data(), M * kw, k.data());
    }
    const char* core = m.window > 0 ? ops::attention_local : ops::attention_global;
    if (pos0 == 0 && T > 1) {  // prefill: the sequence kernel, then the last C rows into the cache
      timed(core, tensors::attn_core, [&] {
        K::attention_forward(att.data(), lse.data(), q.data(), k.data(), v.data(), reset.data(), B, T, H, KV, N, m.window);
      });
      for (i64 b = 0; b < B; ++b)
        for (i64 tt = std::max<i64>(0, T - s.capacity); tt < T; ++tt) store_kv(s, b, tt, tt);
    } else {
      for (i64 tt = 0; tt < T; ++tt) {
        const i64 p = pos0 + tt;
        for (i64 b = 0; b < B; ++b) {
          store_kv(s, b, tt, p);
          std::copy_n(q.data() + (b * T + tt) * qw, qw, qt.data() + b * qw);
        }
        const i64 keys = kernels::kv_cache_valid(p, s.capacity);
        const DecodeAttentionGemms g = decode_attention_gemms(H, KV, N, B, keys);  // the shape the lowering prices
        timed(core, tensors::attn_core, [&] {
          K::attention_decode(ot.data(), qt.data(), s.kc.data(), s.vc.data(), B, s.capacity, keys, H, KV, N, g.key_block, g.gemv);
        });
        for (i64 b = 0; b < B; ++b) std::copy_n(ot.data() + b * qw, qw, att.data() + (b * T + tt) * qw);
      }
    }
    linear(part.data(), att.data(), l, "attn.wo", bias_after_reduce(l, "attn.bo"), qw, D, tensors::attn_wo);
  }
  // K/V of row (b, tt) of this call, at position p, into its cache row
  void store_kv(LayerState& s, i64 b, i64 tt, i64 p) {
    const i64 kw = KV * N, row = kernels::kv_cache_row(p, s.capacity);
    std::copy_n(k.data() + (b * T + tt) * kw, kw, s.kc.data() + (b * s.capacity + row) * kw);
    std::copy_n(v.data() + (b * T + tt) * kw, kw, s.vc.data() + (b * s.capacity + row) * kw);
  }

  // ---- RWKV ------------------------------------------------------------------------------------
  // The last row of each sequence of in [B,T,D] → prev [B,D] (the next call's token-shift input).
  void keep_last(Vec& prev, const float* in) {
    for (i64 b = 0; b < B; ++b) std::copy_n(in + (b * T + T - 1) * D, D, prev.data() + b * D);
  }
  static constexpr const char* kTmMu[3] = {"tm.mu_r", "tm.mu_k", "tm.mu_v"};
  void rwkv4_time_mix(i64 l, LayerState& s) {
    float* xs[3] = {a1.data(), a2.data(), a3.data()};
    timed(ops::token_shift, tensors::tm_shift, [&] {
      for (int j = 0; j < 3; ++j) K::token_shift_forward(xs[j], n1.data(), s.tm_prev.data(), par(l, kTmMu[j]), B, T, D);
    });
    keep_last(s.tm_prev, n1.data());
    linear(h1.data(), xs[0], l, "tm.wr", nullptr, D, Dl, tensors::tm_wr);
    linear(k.data(), xs[1], l, "tm.wk", nullptr, D, Dl, tensors::tm_wk);
    linear(v.data(), xs[2], l, "tm.wv", nullptr, D, Dl, tensors::tm_wv);
    timed(ops::wkv4_scan, tensors::tm_wkv, [&] {
      K::wkv4_forward(h2.data(), s.wkv_next.data(), k.data(), v.data(), par(l, "tm.decay"), par(l, "tm.bonus"),
                      s.wkv.data(), B, T, Dl);
    });
    s.wkv.swap(s.wkv_next);
    timed(ops::sigmoid_mul, tensors::tm_gated, [&] { K::sigmoid_mul_forward(gm.data(), h1.data(), h2.data(), M * Dl); });
    linear(part.data(), gm.data(), l, "tm.wo", nullptr, Dl, D, tensors::tm_wo);
  }
  void rwkv6_time_mix(i64 l, LayerState& s) {
    const i64 r5 = 5 * m.lora_rank_mix, rd = m.lora_rank_decay, Nh = m.head_size;
    timed(ops::token_shift, tensors::tm_shift,
          [&] { K::ddlerp_shift_forward(a1.data(), a2.data(), n1.data(), s.tm_prev.data(), par(l, "tm.mu_x"), B, T, D); });
    keep_last(s.tm_prev, n1.data());
    linear(lz.data(), a2.data(), l, "tm.lora_a", nullptr, D, r5, tensors::tm_lora_a);
    timed(ops::tanh, tensors::tm_lora_act, [&] { K::tanh_forward(ltz.data(), lz.data(), M * r5); });
    timed(ops::linear, tensors::tm_lora_b,
          [&] { K::grouped_linear_forward(big5b.data(), ltz.data(), par(l, "tm.lora_b"), M, 5, m.lora_rank_mix, D); });
    timed(ops::ddlerp, tensors::tm_mix,
          [&] { K::ddlerp_mix_forward(big5.data(), n1.data(), a1.data(), par(l, "tm.mu"), big5b.data(), 5, M, D); });
    auto x5 = [&](int j) { return big5.data() + j * M * D; };  // 0 w, 1 k, 2 v, 3 r, 4 g
    linear(a3.data(), x5(0), l, "tm.decay_a", nullptr, D, rd, tensors::tm_decay_a);
    timed(ops::tanh, tensors::tm_decay_act, [&] { K::tanh_forward(a4.data(), a3.data(), M * rd); });
    linear(a5.data(), a4.data(), l, "tm.decay_b", nullptr, rd, Dl, tensors::tm_decay_b);
    timed(ops::exp_exp, tensors::tm_decay, [&] { K::decay_forward(a3.data(), par(l, "tm.decay"), a5.data(), M, Dl); });
    linear(k.data(), x5(1), l, "tm.wk", nullptr, D, Dl, tensors::tm_wk);
    linear(v.data(), x5(2), l, "tm.wv", nullptr, D, Dl, tensors::tm_wv);
    linear(h1.data(), x5(3), l, "tm.wr", nullptr, D, Dl, tensors::tm_wr);
    linear(gm.data(), x5(4), l, "tm.wg", nullptr, D, Dl, tensors::tm_wg);
    timed(ops::wkv6_scan, tensors::tm_wkv, [&] {
      K::wkv6_forward(h2.data(), s.wkv_next.data(), h1.data(), k.data(), v.data(), a3.data(), par(l, "tm.bonus"),
                      s.wkv.data(), B, T, Hl6, Nh);
    });
    s.wkv.swap(s.wkv_next);
    timed(ops::groupnorm, tensors::tm_gn, [&] {
      K::group_norm_forward(a4.data(), nmean.data(), stat2.data(), h2.data(), par(l, "tm.gn_scale"), par(l, "tm.gn_bias"), M,
                            Hl6, Nh, static_cast<float>(m.group_norm_eps));
    });
    timed(ops::silu_mul, tensors::tm_gated, [&] { K::silu_mul_forward(a5.data(), a4.data(), gm.data(), M * Dl); });
    linear(part.data(), a5.data(), l, "tm.wo", nullptr, Dl, D, tensors::tm_wo);
  }
  // Channel mix: Wk column split (F/t), Wv row split + all-reduce, Wr column split (D/t), the gate
  // on this rank's Dl channels, all-gathered into tout.
  void channel_mix(i64 l, LayerState& s) {
    timed(ops::token_shift, tensors::cm_shift, [&] {
      K::token_shift_forward(a1.data(), n2.data(), s.cm_prev.data(), par(l, "cm.mu_k"), B, T, D);
      K::token_shift_forward(a2.data(), n2.data(), s.cm_prev.data(), par(l, "cm.mu_r"), B, T, D);
    });
    keep_last(s.cm_prev, n2.data());
    linear(h1.data(), a1.data(), l, "cm.wk", nullptr, D, F, tensors::cm_wk);
    timed(ops::relu_sq, tensors::cm_act, [&] { K::relu_square_forward(h2.data(), h1.data(), M * F); });
    linear(part.data(), h2.data(), l, "cm.wv", nullptr, F, D, tensors::cm_wv);
    allreduce(part.data(), M * D, tensors::cm_value);
    linear(a3.data(), a2.data(), l, "cm.wr", nullptr, D, Dl, tensors::cm_wr);
    for (i64 r = 0; r < M; ++r) std::copy_n(part.data() + r * D + tc * Dl, Dl, a4.data() + r * Dl);
    timed(ops::sigmoid_mul, tensors::cm_gate, [&] { K::sigmoid_mul_forward(a5.data(), a3.data(), a4.data(), M * Dl); });
    if (!tp) {
      std::copy_n(a5.data(), M * D, part.data());
      return;
    }
    Vec& all = gathered;
    timed(ops::all_gather, tensors::cm_out,
          [&] { tp->allgather(std::span<const float>(a5.data(), sz(M * Dl)), std::span<float>(all)); });
    for (i64 r = 0; r < t; ++r)
      for (i64 row = 0; row < M; ++row) std::copy_n(all.data() + (r * M + row) * Dl, Dl, part.data() + row * D + r * Dl);
  }

  // ---- pipeline stages: the residual stream in from the previous stage, out to the next ---------
  void stage_input(const std::int32_t* tokens) {
    if (stage == 0) return embed(tokens);
    timed(ops::send_recv, tensors::pipeline_recv_activations, [&] {
      pp->sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(x.data(), sz(M * D)), static_cast<int>(stage - 1));
    });
  }
  void stage_output(std::vector<float>& logits) {
    if (stage + 1 < stages)
      timed(ops::send_recv, tensors::pipeline_send_activations, [&] {
        pp->sendrecv(std::span<const float>(x.data(), sz(M * D)), static_cast<int>(stage + 1), std::span<float>(), MPI_PROC_NULL);
      });
    if (stage + 1 == stages) head(logits);
    if (!pp) return;
    logits.resize(sz(head_rows * V));
    timed(ops::all_gather, tensors::head_w, [&] { pp->broadcast(std::span<float>(logits), static_cast<int>(stages - 1)); });
  }

  // ---- one layer, residuals ------------------------------------------------------------------
  // the residual add, timed under the lowering's name for it
  void add_into(float* acc, const float* y, const char* name) {
    timed(ops::add, name, [&] {
      for (i64 i = 0; i < M * D; ++i) acc[i] += y[i];
    });
  }
  void layer(i64 l) {
    LayerState& s = L[sz(l)];
    const bool ln = block_layernorm();
    norm(n1.data(), stat1.data(), x.data(), l, "norm1.scale", "norm1.bias", ln, tensors::norm1);
    switch (s.kind) {
      case Temporal::recurrent: recurrent(l, s); break;
      case Temporal::local_attention:
      case Temporal::global_attention: attention(l, s); break;
      case Temporal::rwkv4_time_mix: rwkv4_time_mix(l, s); break;
      case Temporal::rwkv6_time_mix: rwkv6_time_mix(l, s); break;
    }
    if (m.parallel_block) {  // x += Attn(norm1(x)) + MLP(norm1(x)): one all-reduce of both partial sums
      branch.assign(part.begin(), part.end());
      mlp(l, n1.data(), branch.data());
      add_into(x.data(), part.data(), tensors::mlp_residual);
      return;
    }
    allreduce(part.data(), M * D, m.is_rwkv() ? tensors::tm_out : s.kind == Temporal::recurrent ? tensors::rec_out : tensors::attn_out);
    add_into(x.data(), part.data(),
             m.is_rwkv() ? tensors::tm_residual : s.kind == Temporal::recurrent ? tensors::rec_residual : tensors::attn_residual);
    norm(n2.data(), stat2.data(), x.data(), l, "norm2.scale", "norm2.bias", ln, tensors::norm2);
    if (m.is_rwkv()) channel_mix(l, s);
    else mlp(l, n2.data());
    add_into(x.data(), part.data(), m.is_rwkv() ? tensors::cm_residual : tensors::mlp_residual);
  }
};

Decoder::Decoder(const ModelSpec& m, const ShardLayout& lay, const float* params, const mpi::Comm* tensor, i64 batch,
                 i64 max_len, const mpi::Comm* pipeline)
    : impl_(std::make_unique<Impl>(m, lay, params, tensor && tensor->size() > 1 ? tensor : nullptr)), B_(batch) {
  if (batch < 1 || max_len < 1) throw std::invalid_argument("decode: batch and max_len must be positive");
  Impl& d = *impl_;
  d.pp = pipeline && pipeline->size() > 1 ? pipeline : nullptr;
  d.stage = d.pp ? d.pp->rank() : 0;
  d.stages = d.pp ? d.pp->size() : 1;
  d.layers = split_range(m.depth, d.stages, d.stage);
  d.t = tensor ? tensor->size() : 1;
  d.tc = tensor ? tensor->rank() : 0;
  d.B = batch;
  d.max_len = max_len;
  const TensorRankDims dims = tensor_rank_dims(m, d.t, d.tc);  // the executor's State sizes (train/executor.cpp)
  d.D = m.width;
  d.Dl = dims.width;
  d.V = m.vocab;
  d.v0 = dims.vocab_begin;
  d.Vl = dims.vocab;
  d.R = dims.recurrent;
  d.F = dims.mlp;
  d.H = dims.heads;
  d.KV = dims.kv_heads;
  d.N = m.head_dim;
  d.rot = dims.rope_dims;
  d.Kc = m.conv_width;
  d.Hb = dims.gate_blocks;
  d.Hl6 = m.family == Family::rwkv6 ? d.Dl / m.head_size : 0;
  d.escale = m.scale_embedding ? static_cast<float>(std::sqrt(static_cast<double>(m.width))) : 1.0f;
  d.eps = static_cast<float>(m.norm_eps);
  d.L.resize(sz(m.depth));
  for (i64 l = 0; l < m.depth; ++l) {
    LayerState& s = d.L[sz(l)];
    s.kind = temporal_kind(m, l);
    if (l < d.layers.begin || l >= d.layers.end) continue;  // another stage's layer: no state here
    switch (s.kind) {
      case Temporal::recurrent:
        for (Vec* v : {&s.conv, &s.conv_next}) v->assign(sz(batch * (d.Kc - 1) * d.R), 0.0f);
        for (Vec* v : {&s.h, &s.h_next}) v->assign(sz(batch * d.R), 0.0f);
        // the weights do not change while decoding: computed once, not in every token's scan
        s.decay_exponents.assign(sz(d.R), 0.0f);
        K::rglru_decay_exponents(s.decay_exponents.data(), d.par(l, "rec.lambda"), d.R);
        break;
      case Temporal::local_attention:
      case Temporal::global_attention: {
        s.capacity = kernels::kv_cache_capacity(m.window, max_len);
        for (Vec* v : {&s.kc, &s.vc}) v->assign(sz(batch * s.capacity * d.KV * d.N), 0.0f);
        if (m.kv_heads < d.t) {  // replicated K/V weights: the columns of the head this rank's queries share
          const i64 full = m.kv_heads * d.N, c0 = d.tc * m.kv_heads / d.t * d.N, w = d.KV * d.N;
          for (int j = 0; j < 2; ++j) {
            const float* src = d.par(l, j == 0 ? "attn.wk" : "attn.wv");
            s.kv_w[j].assign(sz(d.D * w), 0.0f);
            for (i64 r = 0; r < d.D; ++r) std::copy_n(src + r * full + c0, w, s.kv_w[j].data() + r * w);
            if (const float* b = d.opt(l, j == 0 ? "attn.bk" : "attn.bv")) s.kv_b[j].assign(b + c0, b + c0 + w);
          }
        }
        break;
      }
      case Temporal::rwkv4_time_mix:
      case Temporal::rwkv6_time_mix: {
        for (Vec* v : {&s.tm_prev, &s.cm_prev}) v->assign(sz(batch * d.D), 0.0f);
        const bool six = s.kind == Temporal::rwkv6_time_mix;
        const i64 n = six ? batch * d.Dl * m.head_size : 3 * batch * d.Dl;
        for (Vec* v : {&s.wkv, &s.wkv_next}) v->assign(sz(n), 0.0f);
        if (!six) std::fill(s.wkv.begin() + 2 * batch * d.Dl, s.wkv.end(), kernels::kWkv4NoState);  // p plane
        break;
      }
    }
  }
}

Decoder::~Decoder() = default;

i64 Decoder::cache_rows(i64 layer) const {
  const LayerState& s = impl_->L.at(sz(layer));
  return s.capacity == 0 ? 0 : std::min(pos_, s.capacity);
}

i64 Decoder::state_bytes() const {
  i64 n = 0;
  for (const LayerState& s : impl_->L)
    n += static_cast<i64>(s.conv.size() + s.h.size() + s.kc.size() + s.vc.size() + s.tm_prev.size() + s.cm_prev.size() +
                          s.wkv.size());
  return n * static_cast<i64>(sizeof(float));
}

void Decoder::feed(const std::int32_t* tokens, i64 T, std::vector<float>& logits, bool last_only, Trace* tr) {
  Impl& d = *impl_;
  if (T < 1) throw std::invalid_argument("decode: feed needs at least one token");
  if (pos_ + T > d.max_len)
    throw std::invalid_argument("decode: " + std::to_string(pos_ + T) + " tokens exceed the decoder's max_len " +
                                std::to_string(d.max_len));
  d.tr = tr;
  d.phase = pos_ == 0 && T > 1 ? "prefill" : "decode";
  d.pos0 = pos_;
  if (d.T != T) d.size_scratch(T);
  d.head_rows = last_only ? d.B : d.M;
  d.pos.resize(sz(d.M));
  d.reset.assign(sz(d.M), 0);
  for (i64 b = 0; b < d.B; ++b)
    for (i64 t = 0; t < T; ++t) {
      d.pos[sz(b * T + t)] = static_cast<std::int32_t>(pos_ + t);
      d.reset[sz(b * T + t)] = pos_ + t == 0;  // a document starts at position 0 (the executor's reset)
    }
  d.stage_input(tokens);
  for (i64 l = d.layers.begin; l < d.layers.end; ++l) d.layer(l);
  std::vector<float>& all = d.logits_full;  // kept between calls: no allocation per token
  d.stage_output(all);
  pos_ += T;
  logits.assign(all.begin(), all.end());  // [head_rows, V]
}

}  // namespace scanshard::train
