// train/exec_attention.cpp — the Executor's handlers of the attention block (local or global, MHA, MQA,
// grouped-query; K/V halo and ring attention under sequence sharding; blocked or materialized
// core) and of the transformer family's extras: learned positions, SwiGLU / GeLU MLP, dropout.
// See executor.hpp for what the Executor does and executor_state.hpp for the State.

#include <algorithm>

#include "kernels/attention.hpp"
#include "kernels/dropout.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rwkv_ops.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train::exec {

namespace {
// Learned positions (transformer): a replicated [max_positions, D] table; row pos (the token's
// position in its sequence) is added to the reduced token embedding. Every tensor rank holds the
// whole residual gradient, so each computes the table's whole gradient (no reduction: split dim −1).
void positions_fwd(State& s, const Step&) {  // in place: the embedding steps are never recomputed
  const float* P = s.par(-1, Param::embed_positions);
  float* x = s.xs[0].data();
  for (i64 m = 0; m < s.res_rows; ++m) {  // this rank's tokens under rs_ag
    const float* row = P + static_cast<i64>(s.pos[static_cast<std::size_t>(s.res_row0 + m)]) * s.D;
    for (i64 d = 0; d < s.D; ++d) x[m * s.D + d] += row[d];
  }
}
void positions_bwd(State& s, const Step&) {
  float* G = s.grad(-1, Param::embed_positions);
  const float* dx = s.dxs[0].data();
  for (i64 m = 0; m < s.res_rows; ++m) {
    float* row = G + static_cast<i64>(s.pos[static_cast<std::size_t>(s.res_row0 + m)]) * s.D;
    for (i64 d = 0; d < s.D; ++d) row[d] += dx[m * s.D + d];
  }
}
// ---- dropout (transformer; kernels/dropout.hpp) ------------------------------------------------
// The residual-region sites (embedding, attention and MLP outputs) cover this rank's res_rows rows at
// full width D: the row's sequence and position (State::row_seq/row_pos) are global, channels are
// 0..D−1. Forward draws the mask and keeps it (1 byte per element, as Emit::dropout prices);
// backward applies the kept mask and scale to the incoming gradient in place.
void drop_rows_fwd(const State& s, std::vector<std::uint8_t>& mask, float* y, const float* x, i64 layer, KD::DropSite site) {
  mask.resize(static_cast<std::size_t>(s.res_rows * s.D));
  KD::dropout_mask(mask.data(), KD::dropout_key(s.ix.seed, s.ix.step, layer, site), s.row_seq.data(), s.row_pos.data(),
                   s.res_rows, s.D, 0, s.pdrop);
  KD::dropout_apply(y, x, mask.data(), s.res_rows * s.D, s.pdrop);
}
void embed_dropout_fwd(State& s, const Step&) {  // in place: the embedding steps are never recomputed
  drop_rows_fwd(s, s.emask, s.xs[0].data(), s.xs[0].data(), -1, KD::DropSite::embed);
}
void embed_dropout_bwd(State& s, const Step&) {
  KD::dropout_apply(s.dxs[0].data(), s.dxs[0].data(), s.emask.data(), s.res_rows * s.D, s.pdrop);
}
void attn_dropout_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  drop_rows_fwd(s, b.temporal_mask, b.temporal_dropped.data(), b.temporal_out, st.layer, KD::DropSite::attn_out);
}
void attn_dropout_bwd(State& s, const Step& st) {  // after the residual's backward wrote dtemporal_out
  auto& b = lb(s, st);
  float* d = s.rs_ag ? b.dtemporal_out_loc.data() : b.dtemporal_out.data();
  KD::dropout_apply(d, d, b.temporal_mask.data(), s.res_rows * s.D, s.pdrop);
}
void mlp_dropout_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  drop_rows_fwd(s, b.mlp_mask, b.mlp_dropped.data(), b.mlp_out, st.layer, KD::DropSite::mlp_out);
}
void mlp_dropout_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  float* d = s.rs_ag ? b.dmlp_out_loc.data() : b.dmlp_out.data();
  KD::dropout_apply(d, d, b.mlp_mask.data(), s.res_rows * s.D, s.pdrop);
}

// GeLU MLP (transformer): g = gelu_tanh(h1) — the gated product without its second operand.
void gelu_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.mlp_act.data(), b.h1.data(), nullptr, s.rows * s.mlp_local);
}
void gelu_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dh1.data(), nullptr, b.dmlp_act.data(), b.h1.data(), nullptr, s.rows * s.mlp_local);
}
// SwiGLU (transformer): g = silu(h1) ⊙ h2 — rwkv_ops' a ⊙ silu(g) with a = h2, g = h1.
void swiglu_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_forward(b.mlp_act.data(), b.h2.data(), b.h1.data(), s.rows * s.mlp_local);
}
void swiglu_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_backward(b.dh2.data(), b.dh1.data(), b.dmlp_act.data(), b.h2.data(), b.h1.data(), s.rows * s.mlp_local);
}
// ---- attention block (H/t query heads per rank; K/V split when kv_heads ≥ t, else replicated) --

i64 ext_rows(const State& s) { return s.halo + s.T; }  // rows of the extended (halo + local) K/V
// The K/V projection columns this rank computes, of the `full` columns of its local wk / wv (and
// bk / bv): all of them when the K/V heads are split over tensor ranks (kv_heads ≥ t); when they
// are replicated (kv_heads < t, MQA or grouped-query) the one head its H query heads share —
// head ⌊tp_rank·kv_heads/tp⌋. The replicated weights' gradients then hold only that head's columns
// on this rank; the "attn.kv_grads" all-reduce over the tensor group sums them (lower.cpp).
struct KvCols { i64 begin = 0, width = 0, full = 0; };
KvCols kv_cols(const State& s) {
  if (s.m.kv_heads >= s.tp) return {0, s.kv_heads_local * s.N, s.kv_heads_local * s.N};
  return {s.tp_rank * s.m.kv_heads / s.tp * s.N, s.kv_heads_local * s.N, s.m.kv_heads * s.N};
}
// Columns [c.begin, c.begin + c.width) of w [D, c.full] as a contiguous [D, c.width] matrix.
Vec kv_slice(const State& s, const float* w, const KvCols& c) {
  Vec out(static_cast<std::size_t>(s.D * c.width));
  for (i64 d = 0; d < s.D; ++d) std::copy_n(w + d * c.full + c.begin, c.width, out.data() + d * c.width);
  return out;
}
// Without rotary positions (learned position table) the program has no rope step: the
// projections write their rows of the extended buffers themselves and read their gradients there.
bool no_rope(const State& s) { return s.m.rope_fraction <= 0; }
void to_ext(const State& s, const float* local, Vec& ext, i64 w) {
  const i64 Te = ext_rows(s);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(local + r * s.T * w, s.T * w, ext.data() + (r * Te + s.halo) * w);
}
void from_ext(const State& s, const Vec& ext, float* local, i64 w) {
  const i64 Te = ext_rows(s);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(ext.data() + (r * Te + s.halo) * w, s.T * w, local + r * s.T * w);
}
void attn_q_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.q_proj.data(), b.n1.data(), s.par(st.layer, Param::attn_wq), s.opt_par(st.layer, Param::attn_bq), s.rows,
                    s.D, s.heads_local * s.N);
  if (no_rope(s)) to_ext(s, b.q_proj.data(), b.q_ext, s.heads_local * s.N);
}
template <int Which>  // 1 k, 2 v
void attn_kv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const KvCols c = kv_cols(s);
  const float* w = s.par(st.layer, Which == 1 ? Param::attn_wk : Param::attn_wv);
  const float* bias = s.opt_par(st.layer, Which == 1 ? Param::attn_bk : Param::attn_bv);
  Vec& out = Which == 1 ? b.k_proj : b.v;
  if (c.width == c.full) {
    K::linear_forward(out.data(), b.n1.data(), w, bias, s.rows, s.D, c.width);
  } else {
    const Vec ws = kv_slice(s, w, c);
    K::linear_forward(out.data(), b.n1.data(), ws.data(), bias ? bias + c.begin : nullptr, s.rows, s.D, c.width);
  }
  if (no_rope(s)) to_ext(s, out.data(), Which == 1 ? b.k_ext : b.v_ext, c.width);
}
// Writes the local rows into the extended buffers: q after rope at rows halo.., zeros above.
void rope_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), qw = s.heads_local * s.N, kw = s.kv_heads_local * s.N;
  Vec q(static_cast<std::size_t>(s.rows * qw)), k(static_cast<std::size_t>(s.rows * kw));
  K::rope_forward(q.data(), b.q_proj.data(), s.pos.data(), s.B, s.T, s.heads_local, s.N, s.rope_dims, s.m.rope_base);
  K::rope_forward(k.data(), b.k_proj.data(), s.pos.data(), s.B, s.T, s.kv_heads_local, s.N, s.rope_dims, s.m.rope_base);
  for (i64 r = 0; r < s.B; ++r) {
    std::copy_n(q.data() + r * s.T * qw, s.T * qw, b.q_ext.data() + (r * Te + s.halo) * qw);
    std::copy_n(k.data() + r * s.T * kw, s.T * kw, b.k_ext.data() + (r * Te + s.halo) * kw);
    std::copy_n(b.v.data() + r * s.T * kw, s.T * kw, b.v_ext.data() + (r * Te + s.halo) * kw);
  }
}
// Local attention across shards: shard s needs the K/V rows of global positions [s·T − W, s·T),
// held by up to ⌈W/T⌉ shards to its left (program/lower.hpp kv_halo_rows). Every shard sends
// its last kv_halo_rows(W, T, h) rows of K and V to the shard h to its right and receives as
// many from the shard h to its left, with all its peers at once; the rows from shard s − h land
// at ext rows halo − (h−1)·T − rows .. halo − (h−1)·T.
constexpr int kKvHaloTag = 3;
struct HaloPeer { i64 hop, rows, ext0; };  // rows of the peer h hops away and where they sit in the ext buffers
std::vector<HaloPeer> halo_peers(const State& s) {
  std::vector<HaloPeer> out;
  for (i64 h = 1; h <= kv_halo_hops(s.window, s.T); ++h) {
    const i64 rows = kv_halo_rows(s.window, s.T, h);
    out.push_back({h, rows, s.halo - (h - 1) * s.T - rows});
  }
  return out;
}
// Packs rows [e0, e0 + rows) of the K and V ext buffers of every sequence as [B][k|v][rows][kw].
Vec pack_kv(const State& s, const Vec& k, const Vec& v, i64 e0, i64 rows) {
  const i64 Te = ext_rows(s), kw = s.kv_heads_local * s.N;
  Vec out(static_cast<std::size_t>(2 * s.B * rows * kw));
  for (i64 r = 0; r < s.B; ++r)
    for (int which = 0; which < 2; ++which)
      std::copy_n((which ? v : k).data() + (r * Te + e0) * kw, rows * kw, out.data() + ((2 * r + which) * rows) * kw);
  return out;
}
// Unpacks pack_kv's layout into rows [e0, e0 + rows), overwriting or (accumulate) adding.
void unpack_kv(const State& s, Vec& k, Vec& v, i64 e0, i64 rows, const Vec& in, bool accumulate) {
  const i64 Te = ext_rows(s), kw = s.kv_heads_local * s.N;
  for (i64 r = 0; r < s.B; ++r)
    for (int which = 0; which < 2; ++which) {
      float* d = (which ? v : k).data() + (r * Te + e0) * kw;
      const float* g = in.data() + ((2 * r + which) * rows) * kw;
      if (accumulate) for (i64 i = 0; i < rows * kw; ++i) d[i] += g[i];
      else std::copy_n(g, rows * kw, d);
    }
}
// One round with every peer: `send(h)` goes to shard s + dir·h, `recv(h)` from shard s − dir·h.
template <class Send, class Recv>
void halo_exchange(const State& s, const Step& st, int dir, Send&& send, Recv&& recv) {
  const auto& c = need(s, Axis::sequence, st);
  SendCopies out;
  std::vector<MPI_Request> reqs;
  const auto peers = halo_peers(s);
  for (const HaloPeer& p : peers) {
    const i64 to = s.sp_rank + dir * p.hop;
    if (to < 0 || to >= s.sp) continue;
    reqs.push_back(c.isend(std::span<const float>(send(p)), static_cast<int>(to), kKvHaloTag, out));
  }
  for (const HaloPeer& p : peers) {
    const i64 from = s.sp_rank - dir * p.hop;
    if (from < 0 || from >= s.sp) continue;
    Vec in(static_cast<std::size_t>(2 * s.B * p.rows * s.kv_heads_local * s.N));
    c.recv(std::span<float>(in), static_cast<int>(from), kKvHaloTag);
    recv(p, in);
  }
  mpi::Comm::wait_all(reqs);
}
void kv_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s);
  halo_exchange(
      s, st, +1, [&](const HaloPeer& p) { return pack_kv(s, b.k_ext, b.v_ext, Te - p.rows, p.rows); },
      [&](const HaloPeer& p, const Vec& in) { unpack_kv(s, b.k_ext, b.v_ext, p.ext0, p.rows, in, false); });
}
// Ring attention (global attention, sequence-sharded): K/V blocks travel one hop right per step
// of a P−1-hop chain; shard s keeps the blocks of shards 0..s−1 in its extended K/V rows.
void ring_kv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), kw = s.kv_heads_local * s.N, blk = s.B * s.T * kw;
  const auto& c = need(s, Axis::sequence, st);
  Vec cur(static_cast<std::size_t>(2 * blk)), got(cur.size());
  for (i64 r = 0; r < s.B; ++r)  // my own block, packed [k|v][B][T][kw]
    for (int which = 0; which < 2; ++which)
      std::copy_n((which ? b.v_ext : b.k_ext).data() + (r * Te + s.halo) * kw, s.T * kw, cur.data() + which * blk + r * s.T * kw);
  for (i64 h = 0; h + 1 < s.sp; ++h) {
    c.sendrecv(std::span<const float>(cur), right(s), std::span<float>(got), left(s));
    const i64 owner = s.sp_rank - h - 1;  // whose block just arrived
    if (owner >= 0)
      for (i64 r = 0; r < s.B; ++r)
        for (int which = 0; which < 2; ++which)
          std::copy_n(got.data() + which * blk + r * s.T * kw, s.T * kw,
                      (which ? b.v_ext : b.k_ext).data() + (r * Te + owner * s.T) * kw);
    cur.swap(got);
  }
}
// Backward: gradients of the borrowed blocks flow back along the chain, summed on the way: shard
// s receives the sums for blocks 0..s from s+1, keeps its own block's, adds its contributions to
// blocks 0..s−1 and passes them on.
void ring_kv_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), kw = s.kv_heads_local * s.N, blk = s.B * s.T * kw;
  const auto& c = need(s, Axis::sequence, st);
  auto at = [&](Vec& v, i64 block, int which) { return v.data() + (block * 2 + which) * blk; };  // [block][k|v][B][T][kw]
  Vec in(static_cast<std::size_t>((s.sp_rank + 1) * 2 * blk), 0.0f);
  if (s.sp_rank + 1 < s.sp) c.recv(std::span<float>(in), static_cast<int>(s.sp_rank + 1), 2);
  for (i64 r = 0; r < s.B; ++r)
    for (int which = 0; which < 2; ++which) {
      Vec& g = which ? b.dv_ext : b.dk_ext;
      float* own = g.data() + (r * Te + s.halo) * kw;  // received sums for my own block
      const float* add_in = at(in, s.sp_rank, which) + r * s.T * kw;
      for (i64 i = 0; i < s.T * kw; ++i) own[i] += add_in[i];
      for (i64 j = 0; j < s.sp_rank; ++j) {  // my contributions to the borrowed blocks
        float* acc = at(in, j, which) + r * s.T * kw;
        const float* mine = g.data() + (r * Te + j * s.T) * kw;
        for (i64 i = 0; i < s.T * kw; ++i) acc[i] += mine[i];
      }
    }
  if (s.sp_rank > 0)
    c.sendrecv(std::span<const float>(in.data(), static_cast<std::size_t>(s.sp_rank * 2 * blk)), static_cast<int>(s.sp_rank - 1),
               std::span<float>(), MPI_PROC_NULL, 2);
}

// The blocked core's probability dropout: the mask attn_scores_fwd draws for the materialized
// core (row 0 of the ext buffers is global position s·T − halo; this rank's heads start at
// tp_rank·heads_local), regenerated inside the kernel in backward.
KD::AttnDropout attn_dropout(const State& s, const Step& st) {
  KD::AttnDropout d;
  if (s.pdrop <= 0) return d;
  d.p = s.pdrop;
  d.key = KD::dropout_key(s.ix.seed, s.ix.step, st.layer, KD::DropSite::attn_probs);
  d.first_seq = s.ix.first_sequence;
  d.pos0 = s.sp_rank * s.T - s.halo;
  d.head0 = s.tp_rank * s.heads_local;
  d.seq_len = s.p.seq_len;
  return d;
}
void attn_core_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), qw = s.heads_local * s.N;
  K::attention_forward(b.ctx_ext.data(), b.lse_ext.data(), b.q_ext.data(), b.k_ext.data(), b.v_ext.data(), b.reset_ext.data(),
                       s.B, Te, s.heads_local, s.kv_heads_local, s.N, s.window, attn_dropout(s, st));
  for (i64 r = 0; r < s.B; ++r) std::copy_n(b.ctx_ext.data() + (r * Te + s.halo) * qw, s.T * qw, b.ctx.data() + r * s.T * qw);
}
// Materialized attention (plan `attention: materialized`): the scores step writes the whole
// probability matrix P [B, H, T, halo + T] of this rank's query rows against every key row it
// holds, and keeps it; the context step multiplies it by V. Backward: the context step forms dP
// (and dV), the scores step the softmax backward and dQ, dK — the two steps lower.cpp prices.
// With dropout the scores step also draws the mask of P (Korthikanti et al. 2022: P, its mask and
// the dropped P' are kept) and writes P' = P ⊙ mask / (1 − p), which the context step multiplies
// by V. The mask of p_{t,τ} hashes (sequence in the global batch, global query position t,
// channel = global head · seq_len + global key position τ).
void attn_scores_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s);
  K::attention_scores_forward(b.probs.data(), b.q_ext.data(), b.k_ext.data(), b.reset_ext.data(), s.B, Te, s.halo, s.heads_local,
                              s.kv_heads_local, s.N, s.window);
  if (s.pdrop <= 0) return;
  const KD::AttnDropout d = attn_dropout(s, st);  // the blocked core's mask: local query i is ext row halo + i
  const std::uint64_t thr = KD::dropout_threshold(s.pdrop);
  for (i64 r = 0; r < s.B; ++r)
    for (i64 h = 0; h < s.heads_local; ++h)
      for (i64 i = 0; i < s.T; ++i) {
        const std::uint64_t row = d.row(r, s.halo + i);
        const i64 c0 = d.channel(h, 0);
        std::uint8_t* mk = b.probs_mask.data() + ((r * s.heads_local + h) * s.T + i) * Te;
        for (i64 k = 0; k < Te; ++k) mk[k] = KD::dropout_keep(row, c0 + k, thr) ? 1 : 0;
      }
  KD::dropout_apply(b.probs_dropped.data(), b.probs.data(), b.probs_mask.data(), static_cast<i64>(b.probs.size()), s.pdrop);
}
// The probabilities the context step multiplies: P' with dropout, P without.
const float* probs(const State& s, const LayerBufs& b) { return s.pdrop > 0 ? b.probs_dropped.data() : b.probs.data(); }
void attn_context_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), qw = s.heads_local * s.N;
  K::attention_context_forward(b.ctx_ext.data(), probs(s, b), b.v_ext.data(), s.B, Te, s.halo, s.heads_local, s.kv_heads_local,
                               s.N);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(b.ctx_ext.data() + (r * Te + s.halo) * qw, s.T * qw, b.ctx.data() + r * s.T * qw);
}
void attn_context_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::attention_context_backward(b.dprobs.data(), b.dv_ext.data(), b.dctx_ext.data(), probs(s, b), b.v_ext.data(), s.B,
                                ext_rows(s), s.halo, s.heads_local, s.kv_heads_local, s.N);
}
void attn_scores_bwd(State& s, const Step& st) {  // dP = dP' ⊙ mask / (1 − p), then the softmax backward
  auto& b = lb(s, st);
  if (s.pdrop > 0)
    KD::dropout_apply(b.dprobs.data(), b.dprobs.data(), b.probs_mask.data(), static_cast<i64>(b.dprobs.size()), s.pdrop);
  K::attention_scores_backward(b.dq_ext.data(), b.dk_ext.data(), b.dprobs.data(), b.probs.data(), b.q_ext.data(), b.k_ext.data(),
                               s.B, ext_rows(s), s.halo, s.heads_local, s.kv_heads_local, s.N);
}
void attn_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.temporal_partial.data(), b.ctx.data(), s.par(st.layer, Param::attn_wo),
                    s.bias_after_reduce(st.layer, Param::attn_bo), s.rows, s.heads_local * s.N, s.D);
}

// The gradient of the attention branch's output: the block exit's (the MLP's) in a parallel block.
const float* dattn_out(const State& s, const LayerBufs& b) { return s.m.parallel_block ? b.dmlp_out.data() : b.dtemporal_out.data(); }
void attn_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), qw = s.heads_local * s.N;
  Vec da(static_cast<std::size_t>(s.rows * qw), 0.0f);
  K::linear_backward(da.data(), nul(), nul(), dattn_out(s, b), b.ctx.data(), s.par(st.layer, Param::attn_wo), s.rows, qw, s.D);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(da.data() + r * s.T * qw, s.T * qw, b.dctx_ext.data() + (r * Te + s.halo) * qw);
}
void attn_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::attn_wo), s.opt_grad(st.layer, Param::attn_bo), dattn_out(s, b),
                     b.ctx.data(), s.par(st.layer, Param::attn_wo), s.rows, s.heads_local * s.N, s.D);
}
void attn_core_bwd(State& s, const Step& st) {  // recomputes the scores block by block (the
  auto& b = lb(s, st);                            // "attention.scores" step is fused here)
  K::attention_backward(b.dq_ext.data(), b.dk_ext.data(), b.dv_ext.data(), b.dctx_ext.data(), b.ctx_ext.data(), b.lse_ext.data(),
                        b.q_ext.data(), b.k_ext.data(), b.v_ext.data(), b.reset_ext.data(), s.B, ext_rows(s), s.heads_local,
                        s.kv_heads_local, s.N, s.window, attn_dropout(s, st));
}
void kv_halo_bwd(State& s, const Step& st) {  // gradients of the received rows go back to their owners, summed there
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s);
  halo_exchange(
      s, st, -1, [&](const HaloPeer& p) { return pack_kv(s, b.dk_ext, b.dv_ext, p.ext0, p.rows); },
      [&](const HaloPeer& p, const Vec& in) { unpack_kv(s, b.dk_ext, b.dv_ext, Te - p.rows, p.rows, in, true); });
}
void rope_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = ext_rows(s), qw = s.heads_local * s.N, kw = s.kv_heads_local * s.N;
  Vec dq(static_cast<std::size_t>(s.rows * qw)), dk(static_cast<std::size_t>(s.rows * kw));
  for (i64 r = 0; r < s.B; ++r) {
    std::copy_n(b.dq_ext.data() + (r * Te + s.halo) * qw, s.T * qw, dq.data() + r * s.T * qw);
    std::copy_n(b.dk_ext.data() + (r * Te + s.halo) * kw, s.T * kw, dk.data() + r * s.T * kw);
    std::copy_n(b.dv_ext.data() + (r * Te + s.halo) * kw, s.T * kw, b.dv.data() + r * s.T * kw);
  }
  K::rope_backward(b.dq_proj.data(), dq.data(), s.pos.data(), s.B, s.T, s.heads_local, s.N, s.rope_dims, s.m.rope_base);
  K::rope_backward(b.dk_proj.data(), dk.data(), s.pos.data(), s.B, s.T, s.kv_heads_local, s.N, s.rope_dims, s.m.rope_base);
}
// The gradient of projection Which (0 q, 1 k, 2 v) of this rank's rows (from the extended buffer
// when there is no rope step).
const float* proj_dy(State& s, LayerBufs& b, int which) {
  Vec& local = which == 0 ? b.dq_proj : which == 1 ? b.dk_proj : b.dv;
  const Vec& ext = which == 0 ? b.dq_ext : which == 1 ? b.dk_ext : b.dv_ext;
  if (no_rope(s)) from_ext(s, ext, local.data(), which == 0 ? s.heads_local * s.N : s.kv_heads_local * s.N);
  return local.data();
}
template <int Which>  // 0 q, 1 k, 2 v
void attn_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Param w = Which == 0 ? Param::attn_wq : Which == 1 ? Param::attn_wk : Param::attn_wv;
  const float* dy = proj_dy(s, b, Which);
  if (Which == 0) {
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), s.par(st.layer, w), s.rows, s.D, s.heads_local * s.N);
    return;
  }
  const KvCols c = kv_cols(s);
  if (c.width == c.full) {
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), s.par(st.layer, w), s.rows, s.D, c.width);
  } else {
    const Vec ws = kv_slice(s, s.par(st.layer, w), c);
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), ws.data(), s.rows, s.D, c.width);
  }
}
template <int Which>
void attn_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Param w = Which == 0 ? Param::attn_wq : Which == 1 ? Param::attn_wk : Param::attn_wv;
  const Param bn = Which == 0 ? Param::attn_bq : Which == 1 ? Param::attn_bk : Param::attn_bv;
  const float* dy = proj_dy(s, b, Which);
  if (Which == 0) {
    K::linear_backward(nul(), s.grad(st.layer, w), s.opt_grad(st.layer, bn), dy, b.n1.data(), s.par(st.layer, w), s.rows, s.D,
                       s.heads_local * s.N);
    return;
  }
  const KvCols c = kv_cols(s);
  float* db = s.opt_grad(st.layer, bn);
  if (c.width == c.full) {
    K::linear_backward(nul(), s.grad(st.layer, w), db, dy, b.n1.data(), s.par(st.layer, w), s.rows, s.D, c.width);
    return;
  }
  // this head's columns of the replicated weight's gradient (the other heads' stay untouched)
  Vec dws(static_cast<std::size_t>(s.D * c.width), 0.0f);
  K::linear_backward(nul(), dws.data(), db ? db + c.begin : nullptr, dy, b.n1.data(), nullptr, s.rows, s.D, c.width);
  float* g = s.grad(st.layer, w);
  for (i64 d = 0; d < s.D; ++d)
    for (i64 j = 0; j < c.width; ++j) g[d * c.full + c.begin + j] += dws[static_cast<std::size_t>(d * c.width + j)];
}
void kv_grads_bwd(State& s, const Step& st) {  // replicated K/V heads: sum the per-rank partial gradients
  const i64 n = s.m.kv_heads * s.N;
  allreduce_inplace(s, st, s.grad(st.layer, Param::attn_wk), s.D * n);
  allreduce_inplace(s, st, s.grad(st.layer, Param::attn_wv), s.D * n);
  for (const Param bias : {Param::attn_bk, Param::attn_bv})
    if (float* g = s.opt_grad(st.layer, bias)) allreduce_inplace(s, st, g, n);
}

}  // namespace

// Sizes an attention layer's buffers (extended K/V rows: halo + T per sequence).
void size_attention_layer(const State& s, LayerBufs& b) {
  const i64 M = s.rows, Te = ext_rows(s);
  const i64 qw = s.heads_local * s.N, kw = s.kv_heads_local * s.N;
  for (auto* v : {&b.q_proj, &b.ctx, &b.dq_proj}) v->assign(sz(M * qw), 0.0f);
  for (auto* v : {&b.k_proj, &b.v, &b.dk_proj, &b.dv}) v->assign(sz(M * kw), 0.0f);
  for (auto* v : {&b.q_ext, &b.ctx_ext, &b.dctx_ext, &b.dq_ext}) v->assign(sz(s.B * Te * qw), 0.0f);
  for (auto* v : {&b.k_ext, &b.v_ext, &b.dk_ext, &b.dv_ext}) v->assign(sz(s.B * Te * kw), 0.0f);
  b.lse_ext.assign(sz(s.B * s.heads_local * Te), 0.0f);
  if (s.p.attention == AttentionKernel::materialized) {
    for (auto* v : {&b.probs, &b.dprobs}) v->assign(sz(s.B * s.heads_local * s.T * Te), 0.0f);
    if (s.pdrop > 0) {
      b.probs_dropped.assign(sz(s.B * s.heads_local * s.T * Te), 0.0f);
      b.probs_mask.assign(sz(s.B * s.heads_local * s.T * Te), 0);
    }
  }
  b.reset_ext.assign(sz(s.B * Te), 0);
  for (i64 r = 0; r < s.B; ++r) {  // every sequence is one document starting at global position 0
    const i64 g0 = s.sp_rank * s.T - s.halo;
    if (g0 <= 0) b.reset_ext[sz(r * Te - g0)] = 1;
  }
}

void add_attention_handlers(Table& t) {
  add_entries(t, {
      // transformer: learned positions, SwiGLU and GeLU MLP
      {step_key(ops::add_positions, tensors::embed_positions), {positions_fwd, positions_bwd}},
      {step_key(ops::silu_mul, tensors::mlp_act), {swiglu_act_fwd, swiglu_act_bwd}},  // transformer: SwiGLU
      {step_key(ops::gelu, tensors::mlp_act), {gelu_act_fwd, gelu_act_bwd}},          // transformer: GeLU MLP
      // dropout (transformer)
      {step_key(ops::dropout, tensors::embed_dropout), {embed_dropout_fwd, embed_dropout_bwd}},
      {step_key(ops::dropout, tensors::attn_dropout), {attn_dropout_fwd, attn_dropout_bwd}},
      {step_key(ops::dropout, tensors::mlp_dropout), {mlp_dropout_fwd, mlp_dropout_bwd}},
      // attention block
      {step_key(ops::linear, tensors::attn_wq), {attn_q_fwd, nullptr}},
      {step_key(ops::linear, tensors::attn_wk), {attn_kv_fwd<1>, nullptr}},
      {step_key(ops::linear, tensors::attn_wv), {attn_kv_fwd<2>, nullptr}},
      {step_key(ops::linear_dx, tensors::attn_wq), {nullptr, attn_proj_dx<0>}}, {step_key(ops::linear_dw, tensors::attn_wq), {nullptr, attn_proj_dw<0>}},
      {step_key(ops::linear_dx, tensors::attn_wk), {nullptr, attn_proj_dx<1>}}, {step_key(ops::linear_dw, tensors::attn_wk), {nullptr, attn_proj_dw<1>}},
      {step_key(ops::linear_dx, tensors::attn_wv), {nullptr, attn_proj_dx<2>}}, {step_key(ops::linear_dw, tensors::attn_wv), {nullptr, attn_proj_dw<2>}},
      {step_key(ops::all_reduce, tensors::attn_kv_grads), {nullptr, kv_grads_bwd}},
      {step_key(ops::rope, tensors::attn_rope), {rope_fwd, rope_bwd}},
      {step_key(ops::send_recv, tensors::attn_kv_halo), {kv_halo_fwd, kv_halo_bwd}},
      {step_key(ops::send_recv, tensors::attn_ring_kv), {ring_kv_fwd, ring_kv_bwd}},
      {step_key(ops::attention_local, tensors::attn_core), {attn_core_fwd, attn_core_bwd}},
      {step_key(ops::attention_global, tensors::attn_core), {attn_core_fwd, attn_core_bwd}},
      {step_key(ops::attention_scores, tensors::attn_scores_recompute), {nullptr, fused}},  // inside the attention backward
      {step_key(ops::attention_scores, tensors::attn_core), {attn_scores_fwd, attn_scores_bwd}},      // materialized
      {step_key(ops::attention_context, tensors::attn_core), {attn_context_fwd, attn_context_bwd}},
      {step_key(ops::linear, tensors::attn_wo), {attn_wo_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::attn_wo), {nullptr, attn_wo_dx}}, {step_key(ops::linear_dw, tensors::attn_wo), {nullptr, attn_wo_dw}},
  });
}

}  // namespace scanshard::train::exec
