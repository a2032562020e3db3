// train/executor.cpp — see executor.hpp. Layout of this file: the shard layout; the State (all
// buffers of one micro-batch); communication helpers; one handler per (op, name), forward then
// backward, block by block in the order lower.cpp emits them; the dispatch table.
#include "train/executor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <list>
#include <map>
#include <stdexcept>
#include <string_view>

#include "kernels/attention.hpp"
#include "kernels/bf16.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/dropout.hpp"
#include "kernels/embedding.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "train/wire.hpp"

namespace scanshard::train {

namespace K = scanshard::kernels::fast;
using Vec = kernels::AlignedVec;  // whole cache lines: see kernels.hpp

// ---- shard layout ------------------------------------------------------------------------------

ShardLayout::ShardLayout(const ModelSpec& m, const Layout& f, i64 t, i64 tcoord) : full(f) {
  for (const auto& p : full.tensors) {
    const int d = tensor_split_dim(m, p, t);
    dim.push_back(d);
    std::vector<i64> sh = p.shape;
    Range r{0, d < 0 ? 0 : sh[static_cast<std::size_t>(d)]};
    if (d >= 0) {
      r = split_range(sh[static_cast<std::size_t>(d)], t, tcoord);
      sh[static_cast<std::size_t>(d)] = r.size();
    }
    range.push_back(r);
    shape.push_back(sh);
    offset.push_back(total);
    // The slots of the largest shard (⌈n/t⌉ along the split dimension; only a vocabulary can
    // split unevenly): every tensor rank lays its buffer out alike, so a ZeRO part covers the
    // same elements of each whole tensor on every tensor rank (tp.replicated_grads sums them).
    // The padding after a smaller shard stays zero.
    i64 slots = count(shape.size() - 1);
    if (d >= 0 && r.size() > 0) slots = slots / r.size() * ((p.shape[static_cast<std::size_t>(d)] + t - 1) / t);
    total += slots;
  }
}

i64 ShardLayout::count(std::size_t i) const {
  i64 n = 1;
  for (auto s : shape[i]) n *= s;
  return n;
}

i64 ShardLayout::off(const std::string& block, const std::string& name) const {
  auto it = full.index.find(block + "/" + name);
  if (it == full.index.end()) throw std::logic_error("no parameter " + block + "/" + name);
  return offset[it->second];
}

namespace {
// outer × mid × inner view of tensor i around its split dimension
struct Slab3 { i64 outer = 1, mid = 1, inner = 1, begin = 0, len = 0; };
Slab3 slab3(const ShardLayout& s, std::size_t i) {
  Slab3 v;
  const auto& full = s.full.tensors[i].shape;
  const int d = s.dim[i];
  if (d < 0) { v.mid = s.full.tensors[i].count(); v.len = v.mid; return v; }
  for (int k = 0; k < d; ++k) v.outer *= full[static_cast<std::size_t>(k)];
  for (std::size_t k = static_cast<std::size_t>(d) + 1; k < full.size(); ++k) v.inner *= full[k];
  v.mid = full[static_cast<std::size_t>(d)];
  v.begin = s.range[i].begin;
  v.len = s.range[i].size();
  return v;
}
}  // namespace

void ShardLayout::extract(const float* full_buf, float* local) const {
  for (std::size_t i = 0; i < dim.size(); ++i) {
    const Slab3 v = slab3(*this, i);
    const float* src = full_buf + full.offset[i];
    float* dst = local + offset[i];
    for (i64 o = 0; o < v.outer; ++o)
      std::copy_n(src + (o * v.mid + v.begin) * v.inner, v.len * v.inner, dst + o * v.len * v.inner);
  }
}

void ShardLayout::insert(const float* local, float* full_buf) const {
  for (std::size_t i = 0; i < dim.size(); ++i) {
    const Slab3 v = slab3(*this, i);
    const float* src = local + offset[i];
    float* dst = full_buf + full.offset[i];
    for (i64 o = 0; o < v.outer; ++o)
      std::copy_n(src + o * v.len * v.inner, v.len * v.inner, dst + (o * v.mid + v.begin) * v.inner);
  }
}

// ---- state --------------------------------------------------------------------------------------

// Buffers of one layer. Forward values are kept for backward (the runner's models are small);
// names follow DESIGN §3.1.
struct LayerBufs {
  Temporal kind = Temporal::recurrent;
  // forward
  Vec n1, rstd1, tpart, tout_s, x_mid, n2, rstd2, h1, h2, gm, ypart, y_s;
  float* tout = nullptr;  // all-reduced temporal output (aliases tpart when tensor = 1)
  float* y = nullptr;     // all-reduced MLP output
  // recurrent
  Vec gy, u, conv_state, cu, ga, gx, hs0, hs_s, h_out, decay, h_in, pr;
  float* hs = nullptr;    // scan output after the carry fix (aliases hs0 when sequence = 1)
  // attention (ext: `halo` rows from the left neighbour, then the local T rows)
  Vec qr, kr, v, q_ext, k_ext, v_ext, a_ext, lse_ext, a;
  Vec pm, dpm;  // materialized attention: probabilities [B, H, T, halo + T] and their gradient
  // dropout: the dropped block outputs the residual adds read (tres/yres alias tout/y without
  // dropout), their 1-byte masks, and a materialized core's dropped probabilities P' and mask
  Vec tdrop, ydrop, pd;
  std::vector<std::uint8_t> tmask, ymask, pmask;
  const float* tres = nullptr;
  const float* yres = nullptr;
  std::vector<std::uint8_t> reset_ext;
  // RWKV-4 (ln: LayerNorm statistics; xs3: the three token-shift mixes r, k, v; c*: channel mix)
  Vec mean1, mean2, xs3, r, k, wkv, o, cxk, cxr, ck, ch, cv_s, cr, cvl, cg, cgath_s;
  float* cv = nullptr;     // all-reduced channel-mix value (aliases cvpart = ypart when tensor = 1)
  float* cgath = nullptr;  // gathered gated output (aliases cg when tensor = 1)
  Vec dxs3, dr, dk, dwkv, do_, dcxk, dcxr, dck, dch, dcv, dcr, dcvl_s;
  float* dcvl = nullptr;   // the gate's value-gradient slice (aliases dcv when tensor = 1)
  // RWKV under sequence sharding: token-shift halos, WKV-4 chunk states [3,B,Dl], their gradients [2,B,Dl];
  // fold: the all-gather carry's final state and summary of every shard, kept for backward
  Vec shift_prev, dshift_prev, cprev, dcprev, wkv_loc, st_loc, st_in, st_fin, logdec, dloc, dst_out, fold;
  // RWKV-6 time mix: xx, xxx (shift), z/tz (LoRA A, tanh), mz [5,M,D] (LoRA B), xs5 [5,M,D] (w k v r g),
  // dz/dlt (decay LoRA), dd, logw, g, gn (GroupNorm out), gmean/grstd [M,H]
  Vec xx, xxx, lz, ltz, mz, xs5, dza, dlt, dd, logw, gg, gn, gmean, grstd;
  Vec dxx, dxxx, dlz, dltz, dmz, dxs5, ddza, ddlt, ddd, dlogw, dgg, dgn;
  // backward
  Vec n1_loc, n2_loc, dn1_loc, dn2_loc, dtout_loc, dy_loc;  // rs_ag: this rank's tokens (see State::rs)
  int regathers = 0;  // rs_ag: "tp.regather_input" steps seen in this backward (MLP's first, then the mixer's)
  Vec dy, dgm, dh1, dh2, dn2, dx_mid, dtout, dpr, dgy, dhs, dcu, dga, dgx, du, dconv_state, dh_out, dh_loc, dn1;
  Vec da_ext, dq_ext, dk_ext, dv_ext, dqr, dkr, dv;
};

struct Executor::State {
  const ModelSpec& m;
  const Plan& p;
  const ShardLayout& lay;
  MeshComms comms;
  i64 B, T, M, D, Dl, V, v0, Vl, R, F, H, KV, N, rot, Kc, W, Hb;
  i64 t = 1, tcoord = 0, sp = 1, s = 0, halo = 0;
  // tensor_comm rs_ag (Megatron sequence parallelism): the residual region (norms, residual adds,
  // positions, pipeline transfers) holds this rank's Ms = M/t tokens, rows m0 .. m0+Ms of the
  // micro-batch; norms write their Ms-token outputs to the *_loc buffers, which the entry
  // all-gathers turn into the full M-token inputs of the tensor-parallel blocks.
  bool rs = false;
  i64 Ms = 0, m0 = 0;
  i64 stage = 0;
  std::vector<Range> chunks;  // the layers of each model chunk of this stage (one without interleaving)
  i64 chunk = 0;              // the chunk being run (its pipeline transfers)
  std::vector<MPI_Request> pending;  // pipeline sends of this slot, from copies in send_bufs
  SendCopies send_bufs;
  float escale = 1;
  // dropout: probability, this micro-batch's BatchIndex, and per residual-region row (Ms rows)
  // its sequence's index in the global batch and its global position; the embedding's mask
  double pdrop = 0;
  BatchIndex ix;
  std::vector<std::int64_t> row_seq, row_pos;
  std::vector<std::uint8_t> emask;
  const float* P = nullptr;  // parameters of this rank (ShardLayout order)
  float* Pw = nullptr;       // the same, for ZeRO-3's gathers
  std::vector<Range> zero3;  // ZeRO-3: the part of the flat buffer each fsdp rank owns
  float* G = nullptr;        // gradients
  std::vector<std::int32_t> tokens, targets, pos;
  std::vector<std::uint8_t> reset;
  std::vector<Vec> xs;  // residual stream: xs[l] enters layer l, xs[L] leaves the last
  std::vector<Vec> dxs;
  Vec emb, emean, erstd, demb, meanf;  // RWKV: embedding before its LayerNorm
  Vec demb_loc;                        // RWKV under rs_ag: the LayerNorm's input gradient, this rank's tokens
  float* emb_out = nullptr;            // where the (reduced) lookup lands: xs[0], or emb (RWKV)
  Vec epart, nf, rstdf, logits, stats, losses, dlosses, dlogits, dnf, nf_loc, dnf_loc;
  std::vector<LayerBufs> L;
  Vec fix_scratch;  // the WKV carry fix's discarded gradients: kept, so no step pays its page faults

  State(const ModelSpec& m_, const Plan& p_, const ShardLayout& l_, MeshComms c) : m(m_), p(p_), lay(l_), comms(c) {}
  const float* par(i64 layer, const char* name) const { return P + lay.off(block(layer), name); }
  float* grad(i64 layer, const char* name) const { return G + lay.off(block(layer), name); }
  static std::string block(i64 layer) {
    return layer == -1 ? "embed" : layer == -2 ? "final" : layer == -3 ? "head" : "layer." + std::to_string(layer);
  }
  // Biases the model may not have (transformer `bias: false`): nullptr when absent.
  bool has(i64 layer, const char* name) const { return lay.full.index.count(block(layer) + "/" + name) > 0; }
  const float* opt_par(i64 layer, const char* name) const { return has(layer, name) ? par(layer, name) : nullptr; }
  float* opt_grad(i64 layer, const char* name) const { return has(layer, name) ? grad(layer, name) : nullptr; }
  const float* bias_after_reduce(i64 layer, const char* name) const { return tcoord == 0 ? opt_par(layer, name) : nullptr; }
};

Executor::~Executor() = default;

namespace {

using State = Executor::State;
float* nul() { return nullptr; }
void zero(Vec& v) { std::fill(v.begin(), v.end(), 0.0f); }
void add(float* out, const float* a, const float* b, i64 n) { for (i64 i = 0; i < n; ++i) out[i] = a[i] + b[i]; }

// ---- communication ------------------------------------------------------------------------------

// The step's communicator on axis `a`, its messages in the dtype the lowering prices (wire.hpp).
Wire need(const State& s, Axis a, const Step& st) {
  const mpi::Comm* c = s.comms[a];
  if (!c) throw std::logic_error(std::string("executor: step ") + st.op + " " + st.name + " needs a communicator on axis " +
                                 to_string(a));
  return Wire(*c, message_dtype(s.p, st));
}

// out = Σ over the step's axis of in (out-of-place, so forward handlers stay idempotent).
void allreduce_into(const State& s, const Step& st, const float* in, float* out, i64 n) {
  std::copy_n(in, n, out);
  need(s, st.axis, st).allreduce_sum(std::span<float>(out, static_cast<std::size_t>(n)));
}
void allreduce_inplace(const State& s, const Step& st, float* buf, i64 n) {
  need(s, st.axis, st).allreduce_sum(std::span<float>(buf, static_cast<std::size_t>(n)));
}
int left(const State& s) { return s.s > 0 ? static_cast<int>(s.s - 1) : MPI_PROC_NULL; }
int right(const State& s) { return s.s + 1 < s.sp ? static_cast<int>(s.s + 1) : MPI_PROC_NULL; }

// Sends `send` to the right neighbour and receives `recv` from the left one (zeros on shard 0).
void shift_right(const State& s, const Step& st, const Vec& send, Vec& recv) {
  if (s.s == 0) zero(recv);
  need(s, Axis::sequence, st).sendrecv(std::span<const float>(send), right(s), std::span<float>(recv), left(s));
}
// The gradient of a halo goes back: send `send` left, receive `recv` from the right (zeros on the last shard).
void shift_left(const State& s, const Step& st, const Vec& send, Vec& recv) {
  if (s.s + 1 == s.sp) zero(recv);
  need(s, Axis::sequence, st).sendrecv(std::span<const float>(send), left(s), std::span<float>(recv), right(s));
}

// Rows [T−n, T) of x [B, T, C] → out [B, n, C]; with `reset`, entries followed by a document
// start inside the chunk are zeroed (they are invisible to any later token, conv1d.hpp).
Vec last_rows(const State& s, const float* x, i64 n, i64 C, bool masked) {
  Vec out(static_cast<std::size_t>(s.B * n * C), 0.0f);
  for (i64 b = 0; b < s.B; ++b) {
    bool later_reset = false;
    for (i64 k = n - 1; k >= 0; --k) {
      const i64 t = s.T - n + k;
      if (!later_reset || !masked) std::copy_n(x + (b * s.T + t) * C, C, out.data() + (b * n + k) * C);
      if (masked && s.reset[static_cast<std::size_t>(b * s.T + t)]) later_reset = true;
    }
  }
  return out;
}
void add_last_rows(const State& s, float* x, const Vec& in, i64 n, i64 C) {
  for (i64 b = 0; b < s.B; ++b)
    for (i64 k = 0; k < n; ++k) {
      float* dst = x + (b * s.T + s.T - n + k) * C;
      const float* src = in.data() + (b * n + k) * C;
      for (i64 c = 0; c < C; ++c) dst[c] += src[c];
    }
}

// ---- embedding and head -------------------------------------------------------------------------

void embed_fwd(State& s, const Step&) {  // a partial sum over vocab shards when tensor > 1
  K::embedding_shard_forward(s.t > 1 ? s.epart.data() : s.emb_out, s.tokens.data(), s.par(-1, "embed.table"), s.v0, s.Vl, s.M, s.D, s.escale);
}
void embed_reduce_fwd(State& s, const Step& st) { allreduce_into(s, st, s.epart.data(), s.emb_out, s.M * s.D); }
void embed_bwd(State& s, const Step&) {
  K::embedding_shard_backward(s.grad(-1, "embed.table"), s.m.is_rwkv() || s.rs ? s.demb.data() : s.dxs[0].data(), s.tokens.data(), s.v0, s.Vl, s.M, s.D,
                              s.escale);
}
// Learned positions (transformer): a replicated [max_positions, D] table; row pos (the token's
// position in its sequence) is added to the reduced token embedding. Every tensor rank holds the
// whole residual gradient, so each computes the table's whole gradient (no reduction: split dim −1).
void positions_fwd(State& s, const Step&) {  // in place: the embedding steps are never recomputed
  const float* P = s.par(-1, "embed.positions");
  float* x = s.xs[0].data();
  for (i64 m = 0; m < s.Ms; ++m) {  // this rank's tokens under rs_ag
    const float* row = P + static_cast<i64>(s.pos[static_cast<std::size_t>(s.m0 + m)]) * s.D;
    for (i64 d = 0; d < s.D; ++d) x[m * s.D + d] += row[d];
  }
}
void positions_bwd(State& s, const Step&) {
  float* G = s.grad(-1, "embed.positions");
  const float* dx = s.dxs[0].data();
  for (i64 m = 0; m < s.Ms; ++m) {
    float* row = G + static_cast<i64>(s.pos[static_cast<std::size_t>(s.m0 + m)]) * s.D;
    for (i64 d = 0; d < s.D; ++d) row[d] += dx[m * s.D + d];
  }
}
// The model's norm epsilon (RMSNorm and LayerNorm alike).
float eps_of(const State& s) { return static_cast<float>(s.m.norm_eps); }
void final_norm_fwd(State& s, const Step&) {
  K::rmsnorm_forward(s.rs ? s.nf_loc.data() : s.nf.data(), s.rstdf.data(), s.xs.back().data(), s.par(-2, "final_norm.scale"),
                     s.Ms, s.D, eps_of(s));
}
void final_norm_bwd(State& s, const Step&) {
  K::rmsnorm_backward(s.dxs.back().data(), s.grad(-2, "final_norm.scale"), s.rs ? s.dnf_loc.data() : s.dnf.data(),
                      s.xs.back().data(), s.rstdf.data(), s.par(-2, "final_norm.scale"), s.Ms, s.D);
}
void logits_fwd(State& s, const Step&) {  // local vocab columns, and their (max, Σ exp) per token
  K::logits_tied_forward(s.logits.data(), s.nf.data(), s.par(-1, "embed.table"), s.M, s.D, s.Vl);
  K::softmax_stats(s.stats.data(), s.logits.data(), s.M, s.Vl);
}
void merge_stats_op(void* in, void* io, int* len, MPI_Datatype*) {
  K::merge_softmax_stats(static_cast<float*>(io), static_cast<const float*>(in), *len / 2);
}
void loss_stats_fwd(State& s, const Step& st) {
  MPI_Op op;
  SCANSHARD_MPI(MPI_Op_create(&merge_stats_op, 1, &op));
  struct FreeOp {
    MPI_Op& op;
    ~FreeOp() { MPI_Op_free(&op); }
  } free_op{op};
  // Comm::allreduce_op: polled by the watchdog like Comm's other calls (train/watchdog.hpp) and
  // counted in mpi::traffic() (the fp32 statistics the lowering prices).
  need(s, st.axis, st).comm.allreduce_op(std::span<float>(s.stats), op);
}
void softmax_xent_fwd(State& s, const Step&) {
  K::softmax_ce_shard_finish(s.losses.data(), s.logits.data(), s.logits.data(), s.stats.data(), s.targets.data(), s.v0,
                             s.M, s.Vl);
}
void softmax_xent_bwd(State& s, const Step&) {
  K::softmax_ce_shard_backward(s.dlogits.data(), s.dlosses.data(), s.logits.data(), s.targets.data(), s.v0, s.M, s.Vl);
}
void head_dx_bwd(State& s, const Step&) {
  zero(s.dnf);
  K::logits_tied_backward(s.dnf.data(), nul(), s.dlogits.data(), s.nf.data(), s.par(-1, "embed.table"), s.M, s.D, s.Vl);
}
void head_dw_bwd(State& s, const Step&) {
  K::logits_tied_backward(nul(), s.grad(-1, "embed.table"), s.dlogits.data(), s.nf.data(), s.par(-1, "embed.table"), s.M,
                          s.D, s.Vl);
}
void head_in_grad_bwd(State& s, const Step& st) { allreduce_inplace(s, st, s.dnf.data(), s.M * s.D); }

// ---- shared block pieces ------------------------------------------------------------------------

LayerBufs& lb(State& s, const Step& st) { return s.L[static_cast<std::size_t>(st.layer)]; }
const float* x_in(const State& s, const Step& st) { return s.xs[static_cast<std::size_t>(st.layer)].data(); }
// A norm's output and the gradient its backward reads: this rank's tokens under rs_ag.
float* n1_out(State& s, LayerBufs& b) { return s.rs ? b.n1_loc.data() : b.n1.data(); }
float* n2_out(State& s, LayerBufs& b) { return s.rs ? b.n2_loc.data() : b.n2.data(); }
const float* dn1_in(State& s, LayerBufs& b) { return s.rs ? b.dn1_loc.data() : b.dn1.data(); }
const float* dn2_in(State& s, LayerBufs& b) { return s.rs ? b.dn2_loc.data() : b.dn2.data(); }

void norm1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_forward(n1_out(s, b), b.rstd1.data(), x_in(s, st), s.par(st.layer, "norm1.scale"), s.Ms, s.D, eps_of(s));
}
void norm1_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_backward(s.dxs[static_cast<std::size_t>(st.layer)].data(), s.grad(st.layer, "norm1.scale"), dn1_in(s, b),
                      x_in(s, st), b.rstd1.data(), s.par(st.layer, "norm1.scale"), s.Ms, s.D);
}
void norm2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_forward(n2_out(s, b), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, "norm2.scale"), s.Ms, s.D, eps_of(s));
}
void norm2_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_backward(b.dx_mid.data(), s.grad(st.layer, "norm2.scale"), dn2_in(s, b), b.x_mid.data(), b.rstd2.data(),
                      s.par(st.layer, "norm2.scale"), s.Ms, s.D);
}
void in_grad1_bwd(State& s, const Step& st) { allreduce_inplace(s, st, lb(s, st).dn1.data(), s.M * s.D); }
void in_grad2_bwd(State& s, const Step& st) { allreduce_inplace(s, st, lb(s, st).dn2.data(), s.M * s.D); }
void temporal_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.tpart.data(), b.tout, s.M * s.D);
}
void temporal_residual_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  add(b.x_mid.data(), x_in(s, st), b.tres, s.Ms * s.D);
}
void temporal_residual_bwd(State& s, const Step& st) {  // d tout = d x_in (so far) = d x_mid
  auto& b = lb(s, st);
  (s.rs ? b.dtout_loc : b.dtout) = b.dx_mid;  // rs_ag: the exit's all-gather makes dtout
  s.dxs[static_cast<std::size_t>(st.layer)] = b.dx_mid;
}

// Gated MLP, Megatron split: W1, W2 by columns (F/t), W3 by rows, all-reduce after W3.
void mlp_w1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.h1.data(), b.n2.data(), s.par(st.layer, "mlp.w1"), s.opt_par(st.layer, "mlp.b1"), s.M, s.D, s.F);
}
void mlp_w2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.h2.data(), b.n2.data(), s.par(st.layer, "mlp.w2"), s.opt_par(st.layer, "mlp.b2"), s.M, s.D, s.F);
}
void mlp_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.gm.data(), b.h1.data(), b.h2.data(), s.M * s.F);
}
void mlp_w3_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.ypart.data(), b.gm.data(), s.par(st.layer, "mlp.w3"), s.bias_after_reduce(st.layer, "mlp.b3"), s.M,
                    s.F, s.D);
}
void mlp_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.ypart.data(), b.y, s.M * s.D);
}
void mlp_residual_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  add(s.xs[static_cast<std::size_t>(st.layer) + 1].data(), b.x_mid.data(), b.yres, s.Ms * s.D);
}
void mlp_residual_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  (s.rs ? b.dy_loc : b.dy) = s.dxs[static_cast<std::size_t>(st.layer) + 1];  // rs_ag: the exit's all-gather makes dy
  b.dx_mid = s.dxs[static_cast<std::size_t>(st.layer) + 1];
}
// ---- dropout (transformer; kernels/dropout.hpp) ------------------------------------------------
// The residual-region sites (embedding, attention and MLP outputs) cover this rank's Ms rows at
// full width D: the row's sequence and position (State::row_seq/row_pos) are global, channels are
// 0..D−1. Forward draws the mask and keeps it (1 byte per element, as Emit::dropout prices);
// backward applies the kept mask and scale to the incoming gradient in place.
namespace KD = scanshard::kernels;
void drop_rows_fwd(const State& s, std::vector<std::uint8_t>& mask, float* y, const float* x, i64 layer, KD::DropSite site) {
  mask.resize(static_cast<std::size_t>(s.Ms * s.D));
  KD::dropout_mask(mask.data(), KD::dropout_key(s.ix.seed, s.ix.step, layer, site), s.row_seq.data(), s.row_pos.data(), s.Ms,
                   s.D, 0, s.pdrop);
  KD::dropout_apply(y, x, mask.data(), s.Ms * s.D, s.pdrop);
}
void embed_dropout_fwd(State& s, const Step&) {  // in place: the embedding steps are never recomputed
  drop_rows_fwd(s, s.emask, s.xs[0].data(), s.xs[0].data(), -1, KD::DropSite::embed);
}
void embed_dropout_bwd(State& s, const Step&) {
  KD::dropout_apply(s.dxs[0].data(), s.dxs[0].data(), s.emask.data(), s.Ms * s.D, s.pdrop);
}
void attn_dropout_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  drop_rows_fwd(s, b.tmask, b.tdrop.data(), b.tout, st.layer, KD::DropSite::attn_out);
}
void attn_dropout_bwd(State& s, const Step& st) {  // after the residual's backward wrote d tout
  auto& b = lb(s, st);
  float* d = s.rs ? b.dtout_loc.data() : b.dtout.data();
  KD::dropout_apply(d, d, b.tmask.data(), s.Ms * s.D, s.pdrop);
}
void mlp_dropout_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  drop_rows_fwd(s, b.ymask, b.ydrop.data(), b.y, st.layer, KD::DropSite::mlp_out);
}
void mlp_dropout_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  float* d = s.rs ? b.dy_loc.data() : b.dy.data();
  KD::dropout_apply(d, d, b.ymask.data(), s.Ms * s.D, s.pdrop);
}

void mlp_w3_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dgm.data(), nul(), nul(), b.dy.data(), b.gm.data(), s.par(st.layer, "mlp.w3"), s.M, s.F, s.D);
}
void mlp_w3_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "mlp.w3"), s.opt_grad(st.layer, "mlp.b3"), b.dy.data(), b.gm.data(),
                     s.par(st.layer, "mlp.w3"), s.M, s.F, s.D);
}
void mlp_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dh1.data(), b.dh2.data(), b.dgm.data(), b.h1.data(), b.h2.data(), s.M * s.F);
}
// GeLU MLP (transformer): g = gelu_tanh(h1) — the gated product without its second operand.
void gelu_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.gm.data(), b.h1.data(), nullptr, s.M * s.F);
}
void gelu_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dh1.data(), nullptr, b.dgm.data(), b.h1.data(), nullptr, s.M * s.F);
}
// SwiGLU (transformer): g = silu(h1) ⊙ h2 — rwkv_ops' a ⊙ silu(g) with a = h2, g = h1.
void swiglu_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_forward(b.gm.data(), b.h2.data(), b.h1.data(), s.M * s.F);
}
void swiglu_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_backward(b.dh2.data(), b.dh1.data(), b.dgm.data(), b.h2.data(), b.h1.data(), s.M * s.F);
}
void mlp_w2_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn2.data(), nul(), nul(), b.dh2.data(), b.n2.data(), s.par(st.layer, "mlp.w2"), s.M, s.D, s.F);
}
void mlp_w2_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "mlp.w2"), s.opt_grad(st.layer, "mlp.b2"), b.dh2.data(), b.n2.data(),
                     s.par(st.layer, "mlp.w2"), s.M, s.D, s.F);
}
void mlp_w1_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn2.data(), nul(), nul(), b.dh1.data(), b.n2.data(), s.par(st.layer, "mlp.w1"), s.M, s.D, s.F);
}
void mlp_w1_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "mlp.w1"), s.opt_grad(st.layer, "mlp.b1"), b.dh1.data(), b.n2.data(),
                     s.par(st.layer, "mlp.w1"), s.M, s.D, s.F);
}

// ---- recurrent block (R/t channels per tensor rank; channel-local conv, gates, scan) -----------

void rec_wy_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.gy.data(), b.n1.data(), s.par(st.layer, "rec.wy"), s.par(st.layer, "rec.by"), s.M, s.D, s.R);
}
void rec_wx_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.u.data(), b.n1.data(), s.par(st.layer, "rec.wx"), s.par(st.layer, "rec.bx"), s.M, s.D, s.R);
}
void conv_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  shift_right(s, st, last_rows(s, b.u.data(), s.Kc - 1, s.R, true), b.conv_state);
}
void conv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::conv1d_forward(b.cu.data(), nul(), b.u.data(), s.sp > 1 ? b.conv_state.data() : nullptr, s.reset.data(),
                    s.par(st.layer, "rec.conv_w"), s.par(st.layer, "rec.conv_b"), s.B, s.T, s.R, s.Kc);
}
void gate_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_forward(b.ga.data(), b.cu.data(), s.par(st.layer, "rec.gate_a_w"), s.par(st.layer, "rec.gate_a_b"), s.M,
                       s.R, s.Hb);
}
void gate_x_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_forward(b.gx.data(), b.cu.data(), s.par(st.layer, "rec.gate_x_w"), s.par(st.layer, "rec.gate_x_b"), s.M,
                       s.R, s.Hb);
}
void scan_fwd(State& s, const Step& st) {  // chunk-local: from h = 0 when the sequence is sharded
  auto& b = lb(s, st);
  K::rglru_scan_forward(b.hs0.data(), s.sp > 1 ? b.h_out.data() : nullptr, s.sp > 1 ? b.decay.data() : nullptr,
                        b.cu.data(), b.ga.data(), b.gx.data(), nullptr, s.reset.data(), s.par(st.layer, "rec.lambda"),
                        s.B, s.T, s.R);
}
// Ring: shard s waits for h_in from s−1, passes h_out + decay ⊙ h_in to s+1 (P−1 sequential hops).
void carry_ring_fwd(State& s, const Step& st);
void carry_gather_fwd(State& s, const Step& st);
void carry_ring_bwd(State& s, const Step& st);
void carry_gather_bwd(State& s, const Step& st);
void wkv_carry_ring_fwd(State& s, const Step& st);
void wkv_carry_gather_fwd(State& s, const Step& st);
void wkv_carry_ring_bwd(State& s, const Step& st);
void wkv_carry_gather_bwd(State& s, const Step& st);
// "scan.carry" belongs to whichever scan the layer has.
template <bool Ring, bool Fwd>
void carry_any(State& s, const Step& st) {
  const Temporal k = lb(s, st).kind;
  const bool wkv = k == Temporal::rwkv4_time_mix || k == Temporal::rwkv6_time_mix;
  if (Ring && Fwd) (wkv ? wkv_carry_ring_fwd : carry_ring_fwd)(s, st);
  if (!Ring && Fwd) (wkv ? wkv_carry_gather_fwd : carry_gather_fwd)(s, st);
  if (Ring && !Fwd) (wkv ? wkv_carry_ring_bwd : carry_ring_bwd)(s, st);
  if (!Ring && !Fwd) (wkv ? wkv_carry_gather_bwd : carry_gather_bwd)(s, st);
}
void carry_ring_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  const i64 n = s.B * s.R;
  zero(b.h_in);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.h_in), left(s));
  Vec h_fin(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) h_fin[i] = b.h_out[i] + b.decay[i] * b.h_in[i];
  c.sendrecv(std::span<const float>(h_fin), right(s), std::span<float>(), MPI_PROC_NULL);
}
// All-gather: every shard's (h_out, decay); shard s folds shards 0..s−1 into its h_in.
void carry_gather_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 n = s.B * s.R;
  Vec mine(static_cast<std::size_t>(2 * n)), all(static_cast<std::size_t>(2 * n * s.sp));
  std::copy(b.h_out.begin(), b.h_out.end(), mine.begin());
  std::copy(b.decay.begin(), b.decay.end(), mine.begin() + n);
  need(s, Axis::sequence, st).allgather(std::span<const float>(mine), std::span<float>(all));
  zero(b.h_in);
  for (i64 r = 0; r < s.s; ++r)
    for (i64 i = 0; i < n; ++i) b.h_in[i] = all[(2 * r) * n + i] + all[(2 * r + 1) * n + i] * b.h_in[i];
}
void carry_fix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  b.hs_s = b.hs0;
  K::rglru_carry(b.hs_s.data(), nullptr, b.h_in.data(), b.decay.data(), b.ga.data(), s.reset.data(),
                 s.par(st.layer, "rec.lambda"), s.B, s.T, s.R);
}
void rec_gated_fwd(State& s, const Step& st) {  // gelu(gy) ⊙ h (the "gelu rec.gate" step is fused here)
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.pr.data(), b.gy.data(), b.hs, s.M * s.R);
}
void rec_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.tpart.data(), b.pr.data(), s.par(st.layer, "rec.wo"), s.bias_after_reduce(st.layer, "rec.bo"), s.M,
                    s.R, s.D);
}

void rec_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dpr.data(), nul(), nul(), b.dtout.data(), b.pr.data(), s.par(st.layer, "rec.wo"), s.M, s.R, s.D);
}
void rec_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "rec.wo"), s.grad(st.layer, "rec.bo"), b.dtout.data(), b.pr.data(),
                     s.par(st.layer, "rec.wo"), s.M, s.R, s.D);
}
void rec_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dgy.data(), b.dhs.data(), b.dpr.data(), b.gy.data(), b.hs, s.M * s.R);
}
void carry_fix_bwd(State& s, const Step& st) {  // this chunk's own contribution to dh_in
  auto& b = lb(s, st);
  K::rglru_carry_backward(b.dh_loc.data(), b.dhs.data(), b.ga.data(), s.reset.data(), s.par(st.layer, "rec.lambda"), s.B,
                          s.T, s.R);
}
// Mirrored ring: shard s waits for dh_out from s+1, passes dh_loc + decay ⊙ dh_out to s−1.
void carry_ring_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  const i64 n = s.B * s.R;
  zero(b.dh_out);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.dh_out), right(s));
  Vec d_fin(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) d_fin[i] = b.dh_loc[i] + b.decay[i] * b.dh_out[i];
  c.sendrecv(std::span<const float>(d_fin), left(s), std::span<float>(), MPI_PROC_NULL);
}
void carry_gather_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 n = s.B * s.R;
  Vec mine(static_cast<std::size_t>(2 * n)), all(static_cast<std::size_t>(2 * n * s.sp));
  std::copy(b.dh_loc.begin(), b.dh_loc.end(), mine.begin());
  std::copy(b.decay.begin(), b.decay.end(), mine.begin() + n);
  need(s, Axis::sequence, st).allgather(std::span<const float>(mine), std::span<float>(all));
  zero(b.dh_out);
  for (i64 r = s.sp - 1; r > s.s; --r)
    for (i64 i = 0; i < n; ++i) b.dh_out[i] = all[(2 * r) * n + i] + all[(2 * r + 1) * n + i] * b.dh_out[i];
}
void scan_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const bool sh = s.sp > 1;
  K::rglru_scan_backward(b.dcu.data(), b.dga.data(), b.dgx.data(), nullptr, s.grad(st.layer, "rec.lambda"), b.dhs.data(),
                         sh ? b.dh_out.data() : nullptr, b.hs, b.cu.data(), b.ga.data(), b.gx.data(),
                         sh ? b.h_in.data() : nullptr, s.reset.data(), s.par(st.layer, "rec.lambda"), s.B, s.T, s.R);
}
void gate_x_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(b.dcu.data(), nul(), nul(), b.dgx.data(), b.cu.data(), s.par(st.layer, "rec.gate_x_w"), s.M, s.R,
                        s.Hb);
}
void gate_x_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(nul(), s.grad(st.layer, "rec.gate_x_w"), s.grad(st.layer, "rec.gate_x_b"), b.dgx.data(),
                        b.cu.data(), s.par(st.layer, "rec.gate_x_w"), s.M, s.R, s.Hb);
}
void gate_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(b.dcu.data(), nul(), nul(), b.dga.data(), b.cu.data(), s.par(st.layer, "rec.gate_a_w"), s.M, s.R,
                        s.Hb);
}
void gate_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(nul(), s.grad(st.layer, "rec.gate_a_w"), s.grad(st.layer, "rec.gate_a_b"), b.dga.data(),
                        b.cu.data(), s.par(st.layer, "rec.gate_a_w"), s.M, s.R, s.Hb);
}
void conv_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const bool sh = s.sp > 1;
  K::conv1d_backward(b.du.data(), sh ? b.dconv_state.data() : nullptr, s.grad(st.layer, "rec.conv_w"),
                     s.grad(st.layer, "rec.conv_b"), b.dcu.data(), nullptr, b.u.data(), sh ? b.conv_state.data() : nullptr,
                     s.reset.data(), s.par(st.layer, "rec.conv_w"), s.B, s.T, s.R, s.Kc);
}
void conv_halo_bwd(State& s, const Step& st) {  // the halo's gradient returns to its owner's last K−1 rows
  auto& b = lb(s, st);
  Vec back(b.dconv_state.size());
  shift_left(s, st, b.dconv_state, back);
  // entries the owner masked (a later document start) were zeros there: their gradient is dropped
  const Vec mask = last_rows(s, std::vector<float>(static_cast<std::size_t>(s.M * s.R), 1.0f).data(), s.Kc - 1, s.R, true);
  for (std::size_t i = 0; i < back.size(); ++i) back[i] *= mask[i];
  add_last_rows(s, b.du.data(), back, s.Kc - 1, s.R);
}
void rec_wx_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn1.data(), nul(), nul(), b.du.data(), b.n1.data(), s.par(st.layer, "rec.wx"), s.M, s.D, s.R);
}
void rec_wx_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "rec.wx"), s.grad(st.layer, "rec.bx"), b.du.data(), b.n1.data(),
                     s.par(st.layer, "rec.wx"), s.M, s.D, s.R);
}
void rec_wy_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn1.data(), nul(), nul(), b.dgy.data(), b.n1.data(), s.par(st.layer, "rec.wy"), s.M, s.D, s.R);
}
void rec_wy_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "rec.wy"), s.grad(st.layer, "rec.by"), b.dgy.data(), b.n1.data(),
                     s.par(st.layer, "rec.wy"), s.M, s.D, s.R);
}

// ---- attention block (H/t query heads per rank; K/V split when kv_heads ≥ t, else replicated) --

i64 text(const State& s) { return s.halo + s.T; }  // rows of the extended (halo + local) K/V
// The K/V projection columns this rank computes, of the `full` columns of its local wk / wv (and
// bk / bv): all of them when the K/V heads are split over tensor ranks (kv_heads ≥ t); when they
// are replicated (kv_heads < t, MQA or grouped-query) the one head its H query heads share —
// head ⌊tcoord·kv_heads/t⌋. The replicated weights' gradients then hold only that head's columns
// on this rank; the "attn.kv_grads" all-reduce over the tensor group sums them (lower.cpp).
struct KvCols { i64 begin = 0, width = 0, full = 0; };
KvCols kv_cols(const State& s) {
  if (s.m.kv_heads >= s.t) return {0, s.KV * s.N, s.KV * s.N};
  return {s.tcoord * s.m.kv_heads / s.t * s.N, s.KV * s.N, s.m.kv_heads * s.N};
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
  const i64 Te = text(s);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(local + r * s.T * w, s.T * w, ext.data() + (r * Te + s.halo) * w);
}
void from_ext(const State& s, const Vec& ext, float* local, i64 w) {
  const i64 Te = text(s);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(ext.data() + (r * Te + s.halo) * w, s.T * w, local + r * s.T * w);
}
void attn_q_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.qr.data(), b.n1.data(), s.par(st.layer, "attn.wq"), s.opt_par(st.layer, "attn.bq"), s.M, s.D, s.H * s.N);
  if (no_rope(s)) to_ext(s, b.qr.data(), b.q_ext, s.H * s.N);
}
template <int Which>  // 1 k, 2 v
void attn_kv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const KvCols c = kv_cols(s);
  const float* w = s.par(st.layer, Which == 1 ? "attn.wk" : "attn.wv");
  const float* bias = s.opt_par(st.layer, Which == 1 ? "attn.bk" : "attn.bv");
  Vec& out = Which == 1 ? b.kr : b.v;
  if (c.width == c.full) {
    K::linear_forward(out.data(), b.n1.data(), w, bias, s.M, s.D, c.width);
  } else {
    const Vec ws = kv_slice(s, w, c);
    K::linear_forward(out.data(), b.n1.data(), ws.data(), bias ? bias + c.begin : nullptr, s.M, s.D, c.width);
  }
  if (no_rope(s)) to_ext(s, out.data(), Which == 1 ? b.k_ext : b.v_ext, c.width);
}
// Writes the local rows into the extended buffers: q after rope at rows halo.., zeros above.
void rope_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), qw = s.H * s.N, kw = s.KV * s.N;
  Vec q(static_cast<std::size_t>(s.M * qw)), k(static_cast<std::size_t>(s.M * kw));
  K::rope_forward(q.data(), b.qr.data(), s.pos.data(), s.B, s.T, s.H, s.N, s.rot, s.m.rope_base);
  K::rope_forward(k.data(), b.kr.data(), s.pos.data(), s.B, s.T, s.KV, s.N, s.rot, s.m.rope_base);
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
  for (i64 h = 1; h <= kv_halo_hops(s.W, s.T); ++h) {
    const i64 rows = kv_halo_rows(s.W, s.T, h);
    out.push_back({h, rows, s.halo - (h - 1) * s.T - rows});
  }
  return out;
}
// Packs rows [e0, e0 + rows) of the K and V ext buffers of every sequence as [B][k|v][rows][kw].
Vec pack_kv(const State& s, const Vec& k, const Vec& v, i64 e0, i64 rows) {
  const i64 Te = text(s), kw = s.KV * s.N;
  Vec out(static_cast<std::size_t>(2 * s.B * rows * kw));
  for (i64 r = 0; r < s.B; ++r)
    for (int which = 0; which < 2; ++which)
      std::copy_n((which ? v : k).data() + (r * Te + e0) * kw, rows * kw, out.data() + ((2 * r + which) * rows) * kw);
  return out;
}
// Unpacks pack_kv's layout into rows [e0, e0 + rows), overwriting or (accumulate) adding.
void unpack_kv(const State& s, Vec& k, Vec& v, i64 e0, i64 rows, const Vec& in, bool accumulate) {
  const i64 Te = text(s), kw = s.KV * s.N;
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
    const i64 to = s.s + dir * p.hop;
    if (to < 0 || to >= s.sp) continue;
    reqs.push_back(c.isend(std::span<const float>(send(p)), static_cast<int>(to), kKvHaloTag, out));
  }
  for (const HaloPeer& p : peers) {
    const i64 from = s.s - dir * p.hop;
    if (from < 0 || from >= s.sp) continue;
    Vec in(static_cast<std::size_t>(2 * s.B * p.rows * s.KV * s.N));
    c.recv(std::span<float>(in), static_cast<int>(from), kKvHaloTag);
    recv(p, in);
  }
  mpi::Comm::wait_all(reqs);
}
void kv_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s);
  halo_exchange(
      s, st, +1, [&](const HaloPeer& p) { return pack_kv(s, b.k_ext, b.v_ext, Te - p.rows, p.rows); },
      [&](const HaloPeer& p, const Vec& in) { unpack_kv(s, b.k_ext, b.v_ext, p.ext0, p.rows, in, false); });
}
// Ring attention (global attention, sequence-sharded): K/V blocks travel one hop right per step
// of a P−1-hop chain; shard s keeps the blocks of shards 0..s−1 in its extended K/V rows.
void ring_kv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), kw = s.KV * s.N, blk = s.B * s.T * kw;
  const auto& c = need(s, Axis::sequence, st);
  Vec cur(static_cast<std::size_t>(2 * blk)), got(cur.size());
  for (i64 r = 0; r < s.B; ++r)  // my own block, packed [k|v][B][T][kw]
    for (int which = 0; which < 2; ++which)
      std::copy_n((which ? b.v_ext : b.k_ext).data() + (r * Te + s.halo) * kw, s.T * kw, cur.data() + which * blk + r * s.T * kw);
  for (i64 h = 0; h + 1 < s.sp; ++h) {
    c.sendrecv(std::span<const float>(cur), right(s), std::span<float>(got), left(s));
    const i64 owner = s.s - h - 1;  // whose block just arrived
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
  const i64 Te = text(s), kw = s.KV * s.N, blk = s.B * s.T * kw;
  const auto& c = need(s, Axis::sequence, st);
  auto at = [&](Vec& v, i64 block, int which) { return v.data() + (block * 2 + which) * blk; };  // [block][k|v][B][T][kw]
  Vec in(static_cast<std::size_t>((s.s + 1) * 2 * blk), 0.0f);
  if (s.s + 1 < s.sp) c.recv(std::span<float>(in), static_cast<int>(s.s + 1), 2);
  for (i64 r = 0; r < s.B; ++r)
    for (int which = 0; which < 2; ++which) {
      Vec& g = which ? b.dv_ext : b.dk_ext;
      float* own = g.data() + (r * Te + s.halo) * kw;  // received sums for my own block
      const float* add_in = at(in, s.s, which) + r * s.T * kw;
      for (i64 i = 0; i < s.T * kw; ++i) own[i] += add_in[i];
      for (i64 j = 0; j < s.s; ++j) {  // my contributions to the borrowed blocks
        float* acc = at(in, j, which) + r * s.T * kw;
        const float* mine = g.data() + (r * Te + j * s.T) * kw;
        for (i64 i = 0; i < s.T * kw; ++i) acc[i] += mine[i];
      }
    }
  if (s.s > 0) c.sendrecv(std::span<const float>(in.data(), static_cast<std::size_t>(s.s * 2 * blk)), static_cast<int>(s.s - 1),
                          std::span<float>(), MPI_PROC_NULL, 2);
}

// The blocked core's probability dropout: the mask attn_scores_fwd draws for the materialized
// core (row 0 of the ext buffers is global position s·T − halo; this rank's heads start at
// tcoord·H), regenerated inside the kernel in backward.
KD::AttnDropout attn_dropout(const State& s, const Step& st) {
  KD::AttnDropout d;
  if (s.pdrop <= 0) return d;
  d.p = s.pdrop;
  d.key = KD::dropout_key(s.ix.seed, s.ix.step, st.layer, KD::DropSite::attn_probs);
  d.first_seq = s.ix.first_sequence;
  d.pos0 = s.s * s.T - s.halo;
  d.head0 = s.tcoord * s.H;
  d.seq_len = s.p.seq_len;
  return d;
}
void attn_core_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), qw = s.H * s.N;
  K::attention_forward(b.a_ext.data(), b.lse_ext.data(), b.q_ext.data(), b.k_ext.data(), b.v_ext.data(),
                       b.reset_ext.data(), s.B, Te, s.H, s.KV, s.N, s.W, attn_dropout(s, st));
  for (i64 r = 0; r < s.B; ++r)
    std::copy_n(b.a_ext.data() + (r * Te + s.halo) * qw, s.T * qw, b.a.data() + r * s.T * qw);
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
  const i64 Te = text(s);
  K::attention_scores_forward(b.pm.data(), b.q_ext.data(), b.k_ext.data(), b.reset_ext.data(), s.B, Te, s.halo, s.H,
                              s.KV, s.N, s.W);
  if (s.pdrop <= 0) return;
  const KD::AttnDropout d = attn_dropout(s, st);  // the blocked core's mask: local query i is ext row halo + i
  const std::uint64_t thr = KD::dropout_threshold(s.pdrop);
  for (i64 r = 0; r < s.B; ++r)
    for (i64 h = 0; h < s.H; ++h)
      for (i64 i = 0; i < s.T; ++i) {
        const std::uint64_t row = d.row(r, s.halo + i);
        const i64 c0 = d.channel(h, 0);
        std::uint8_t* mk = b.pmask.data() + ((r * s.H + h) * s.T + i) * Te;
        for (i64 k = 0; k < Te; ++k) mk[k] = KD::dropout_keep(row, c0 + k, thr) ? 1 : 0;
      }
  KD::dropout_apply(b.pd.data(), b.pm.data(), b.pmask.data(), static_cast<i64>(b.pm.size()), s.pdrop);
}
// The probabilities the context step multiplies: P' with dropout, P without.
const float* probs(const State& s, const LayerBufs& b) { return s.pdrop > 0 ? b.pd.data() : b.pm.data(); }
void attn_context_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), qw = s.H * s.N;
  K::attention_context_forward(b.a_ext.data(), probs(s, b), b.v_ext.data(), s.B, Te, s.halo, s.H, s.KV, s.N);
  for (i64 r = 0; r < s.B; ++r)
    std::copy_n(b.a_ext.data() + (r * Te + s.halo) * qw, s.T * qw, b.a.data() + r * s.T * qw);
}
void attn_context_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::attention_context_backward(b.dpm.data(), b.dv_ext.data(), b.da_ext.data(), probs(s, b), b.v_ext.data(), s.B, text(s),
                                s.halo, s.H, s.KV, s.N);
}
void attn_scores_bwd(State& s, const Step& st) {  // dP = dP' ⊙ mask / (1 − p), then the softmax backward
  auto& b = lb(s, st);
  if (s.pdrop > 0) KD::dropout_apply(b.dpm.data(), b.dpm.data(), b.pmask.data(), static_cast<i64>(b.dpm.size()), s.pdrop);
  K::attention_scores_backward(b.dq_ext.data(), b.dk_ext.data(), b.dpm.data(), b.pm.data(), b.q_ext.data(), b.k_ext.data(),
                               s.B, text(s), s.halo, s.H, s.KV, s.N);
}
void attn_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.tpart.data(), b.a.data(), s.par(st.layer, "attn.wo"), s.bias_after_reduce(st.layer, "attn.bo"), s.M,
                    s.H * s.N, s.D);
}

void attn_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), qw = s.H * s.N;
  Vec da(static_cast<std::size_t>(s.M * qw), 0.0f);
  K::linear_backward(da.data(), nul(), nul(), b.dtout.data(), b.a.data(), s.par(st.layer, "attn.wo"), s.M, qw, s.D);
  for (i64 r = 0; r < s.B; ++r) std::copy_n(da.data() + r * s.T * qw, s.T * qw, b.da_ext.data() + (r * Te + s.halo) * qw);
}
void attn_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "attn.wo"), s.opt_grad(st.layer, "attn.bo"), b.dtout.data(), b.a.data(),
                     s.par(st.layer, "attn.wo"), s.M, s.H * s.N, s.D);
}
void attn_core_bwd(State& s, const Step& st) {  // recomputes the scores block by block (the
  auto& b = lb(s, st);                            // "attention.scores" step is fused here)
  K::attention_backward(b.dq_ext.data(), b.dk_ext.data(), b.dv_ext.data(), b.da_ext.data(), b.a_ext.data(),
                        b.lse_ext.data(), b.q_ext.data(), b.k_ext.data(), b.v_ext.data(), b.reset_ext.data(), s.B, text(s),
                        s.H, s.KV, s.N, s.W, attn_dropout(s, st));
}
void kv_halo_bwd(State& s, const Step& st) {  // gradients of the received rows go back to their owners, summed there
  auto& b = lb(s, st);
  const i64 Te = text(s);
  halo_exchange(
      s, st, -1, [&](const HaloPeer& p) { return pack_kv(s, b.dk_ext, b.dv_ext, p.ext0, p.rows); },
      [&](const HaloPeer& p, const Vec& in) { unpack_kv(s, b.dk_ext, b.dv_ext, Te - p.rows, p.rows, in, true); });
}
void rope_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 Te = text(s), qw = s.H * s.N, kw = s.KV * s.N;
  Vec dq(static_cast<std::size_t>(s.M * qw)), dk(static_cast<std::size_t>(s.M * kw));
  for (i64 r = 0; r < s.B; ++r) {
    std::copy_n(b.dq_ext.data() + (r * Te + s.halo) * qw, s.T * qw, dq.data() + r * s.T * qw);
    std::copy_n(b.dk_ext.data() + (r * Te + s.halo) * kw, s.T * kw, dk.data() + r * s.T * kw);
    std::copy_n(b.dv_ext.data() + (r * Te + s.halo) * kw, s.T * kw, b.dv.data() + r * s.T * kw);
  }
  K::rope_backward(b.dqr.data(), dq.data(), s.pos.data(), s.B, s.T, s.H, s.N, s.rot, s.m.rope_base);
  K::rope_backward(b.dkr.data(), dk.data(), s.pos.data(), s.B, s.T, s.KV, s.N, s.rot, s.m.rope_base);
}
// The gradient of projection Which (0 q, 1 k, 2 v) of this rank's rows (from the extended buffer
// when there is no rope step).
const float* proj_dy(State& s, LayerBufs& b, int which) {
  Vec& local = which == 0 ? b.dqr : which == 1 ? b.dkr : b.dv;
  if (no_rope(s)) from_ext(s, which == 0 ? b.dq_ext : which == 1 ? b.dk_ext : b.dv_ext, local.data(), which == 0 ? s.H * s.N : s.KV * s.N);
  return local.data();
}
template <int Which>  // 0 q, 1 k, 2 v
void attn_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const char* w = Which == 0 ? "attn.wq" : Which == 1 ? "attn.wk" : "attn.wv";
  const float* dy = proj_dy(s, b, Which);
  if (Which == 0) {
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), s.par(st.layer, w), s.M, s.D, s.H * s.N);
    return;
  }
  const KvCols c = kv_cols(s);
  if (c.width == c.full) {
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), s.par(st.layer, w), s.M, s.D, c.width);
  } else {
    const Vec ws = kv_slice(s, s.par(st.layer, w), c);
    K::linear_backward(b.dn1.data(), nul(), nul(), dy, b.n1.data(), ws.data(), s.M, s.D, c.width);
  }
}
template <int Which>
void attn_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  const char* w = Which == 0 ? "attn.wq" : Which == 1 ? "attn.wk" : "attn.wv";
  const char* bn = Which == 0 ? "attn.bq" : Which == 1 ? "attn.bk" : "attn.bv";
  const float* dy = proj_dy(s, b, Which);
  if (Which == 0) {
    K::linear_backward(nul(), s.grad(st.layer, w), s.opt_grad(st.layer, bn), dy, b.n1.data(), s.par(st.layer, w), s.M,
                       s.D, s.H * s.N);
    return;
  }
  const KvCols c = kv_cols(s);
  float* db = s.opt_grad(st.layer, bn);
  if (c.width == c.full) {
    K::linear_backward(nul(), s.grad(st.layer, w), db, dy, b.n1.data(), s.par(st.layer, w), s.M, s.D, c.width);
    return;
  }
  // this head's columns of the replicated weight's gradient (the other heads' stay untouched)
  Vec dws(static_cast<std::size_t>(s.D * c.width), 0.0f);
  K::linear_backward(nul(), dws.data(), db ? db + c.begin : nullptr, dy, b.n1.data(), nullptr, s.M, s.D, c.width);
  float* g = s.grad(st.layer, w);
  for (i64 d = 0; d < s.D; ++d)
    for (i64 j = 0; j < c.width; ++j) g[d * c.full + c.begin + j] += dws[static_cast<std::size_t>(d * c.width + j)];
}
void kv_grads_bwd(State& s, const Step& st) {  // replicated K/V heads: sum the per-rank partial gradients
  const i64 n = s.m.kv_heads * s.N;
  allreduce_inplace(s, st, s.grad(st.layer, "attn.wk"), s.D * n);
  allreduce_inplace(s, st, s.grad(st.layer, "attn.wv"), s.D * n);
  for (const char* bias : {"attn.bk", "attn.bv"})
    if (float* g = s.opt_grad(st.layer, bias)) allreduce_inplace(s, st, g, n);
}

// ---- RWKV-4 (DESIGN §3.2): D/t channels of r, k, v, WKV and the gate per tensor rank -----------

// The embedding's LayerNorm on this rank's Ms tokens (all M without rs_ag): under rs_ag the
// reduce-scatter leaves them in emb and the norm's input gradient goes to demb_loc, which the
// embedding's all-gather turns into every token's gradient (demb).
void embed_norm_fwd(State& s, const Step&) {
  K::layer_norm_forward(s.xs[0].data(), s.emean.data(), s.erstd.data(), s.emb.data(), s.par(-1, "embed_norm.scale"),
                        s.par(-1, "embed_norm.bias"), s.Ms, s.D, eps_of(s));
}
void embed_norm_bwd(State& s, const Step&) {
  Vec& d = s.rs ? s.demb_loc : s.demb;
  zero(d);
  K::layer_norm_backward(d.data(), s.grad(-1, "embed_norm.scale"), s.grad(-1, "embed_norm.bias"), s.dxs[0].data(),
                         s.emean.data(), s.erstd.data(), s.emb.data(), s.par(-1, "embed_norm.scale"), s.Ms, s.D);
}
void ln_final_fwd(State& s, const Step&) {
  K::layer_norm_forward(s.rs ? s.nf_loc.data() : s.nf.data(), s.meanf.data(), s.rstdf.data(), s.xs.back().data(),
                        s.par(-2, "final_norm.scale"), s.par(-2, "final_norm.bias"), s.Ms, s.D, eps_of(s));
}
void ln_final_bwd(State& s, const Step&) {
  K::layer_norm_backward(s.dxs.back().data(), s.grad(-2, "final_norm.scale"), s.grad(-2, "final_norm.bias"),
                         s.rs ? s.dnf_loc.data() : s.dnf.data(), s.meanf.data(), s.rstdf.data(), s.xs.back().data(),
                         s.par(-2, "final_norm.scale"), s.Ms, s.D);
}
// The untied head [D, V]: this rank's vocab columns.
void head_w_fwd(State& s, const Step&) {
  K::linear_forward(s.logits.data(), s.nf.data(), s.par(-3, "head.w"), nullptr, s.M, s.D, s.Vl);
  K::softmax_stats(s.stats.data(), s.logits.data(), s.M, s.Vl);
}
void head_w_dx(State& s, const Step&) {
  zero(s.dnf);
  K::linear_backward(s.dnf.data(), nul(), nul(), s.dlogits.data(), s.nf.data(), s.par(-3, "head.w"), s.M, s.D, s.Vl);
}
void head_w_dw(State& s, const Step&) {
  K::linear_backward(nul(), s.grad(-3, "head.w"), nul(), s.dlogits.data(), s.nf.data(), s.par(-3, "head.w"), s.M, s.D,
                     s.Vl);
}
void ln1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_forward(n1_out(s, b), b.mean1.data(), b.rstd1.data(), x_in(s, st), s.par(st.layer, "norm1.scale"),
                        s.par(st.layer, "norm1.bias"), s.Ms, s.D, eps_of(s));
}
void ln1_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_backward(s.dxs[static_cast<std::size_t>(st.layer)].data(), s.grad(st.layer, "norm1.scale"),
                         s.grad(st.layer, "norm1.bias"), dn1_in(s, b), b.mean1.data(), b.rstd1.data(), x_in(s, st),
                         s.par(st.layer, "norm1.scale"), s.Ms, s.D);
}
void ln2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_forward(n2_out(s, b), b.mean2.data(), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, "norm2.scale"),
                        s.par(st.layer, "norm2.bias"), s.Ms, s.D, eps_of(s));
}
void ln2_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_backward(b.dx_mid.data(), s.grad(st.layer, "norm2.scale"), s.grad(st.layer, "norm2.bias"), dn2_in(s, b),
                         b.mean2.data(), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, "norm2.scale"), s.Ms, s.D);
}
constexpr const char* kTmMu[3] = {"tm.mu_r", "tm.mu_k", "tm.mu_v"};
void tm_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  for (int j = 0; j < 3; ++j)
    K::token_shift_forward(b.xs3.data() + j * s.M * s.D, b.n1.data(), s.sp > 1 ? b.shift_prev.data() : nullptr,
                           s.par(st.layer, kTmMu[j]), s.B, s.T, s.D);
}
void tm_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  for (int j = 0; j < 3; ++j)
    K::token_shift_backward(b.dn1.data(), s.sp > 1 ? b.dshift_prev.data() : nullptr, s.grad(st.layer, kTmMu[j]),
                            b.dxs3.data() + j * s.M * s.D, b.n1.data(), s.sp > 1 ? b.shift_prev.data() : nullptr,
                            s.par(st.layer, kTmMu[j]), s.B, s.T, s.D);
}
// Parameters whole on every tensor rank that see only this rank's part of their gradient (their
// consumers are column-split): the gradients are summed over the tensor axis.
void replicated_grads_bwd(State& s, const Step& st, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    const auto it = s.lay.full.index.find(State::block(st.layer) + "/" + n);
    allreduce_inplace(s, st, s.grad(st.layer, n), s.lay.count(it->second));
  }
}
// RWKV-4: the three token-shift mixes. RWKV-6: μ_x, μ_□, the shared LoRA A and B and the decay LoRA A.
void tm_mu_grads_bwd(State& s, const Step& st) {
  if (s.m.family == Family::rwkv6) return replicated_grads_bwd(s, st, {"tm.mu_x", "tm.mu", "tm.lora_a", "tm.lora_b", "tm.decay_a"});
  replicated_grads_bwd(s, st, {kTmMu[0], kTmMu[1], kTmMu[2]});
}
template <int J>  // 0 r, 1 k, 2 v
void tm_proj_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const char* w = J == 0 ? "tm.wr" : J == 1 ? "tm.wk" : "tm.wv";
  float* out = J == 0 ? b.r.data() : J == 1 ? b.k.data() : b.v.data();
  K::linear_forward(out, b.xs3.data() + J * s.M * s.D, s.par(st.layer, w), nullptr, s.M, s.D, s.Dl);
}
template <int J>
void tm_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const char* w = J == 0 ? "tm.wr" : J == 1 ? "tm.wk" : "tm.wv";
  const float* dy = J == 0 ? b.dr.data() : J == 1 ? b.dk.data() : b.dv.data();
  K::linear_backward(b.dxs3.data() + J * s.M * s.D, nul(), nul(), dy, b.xs3.data() + J * s.M * s.D, s.par(st.layer, w), s.M,
                     s.D, s.Dl);
}
template <int J>
void tm_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  const char* w = J == 0 ? "tm.wr" : J == 1 ? "tm.wk" : "tm.wv";
  const float* dy = J == 0 ? b.dr.data() : J == 1 ? b.dk.data() : b.dv.data();
  K::linear_backward(nul(), s.grad(st.layer, w), nul(), dy, b.xs3.data() + J * s.M * s.D, s.par(st.layer, w), s.M, s.D,
                     s.Dl);
}
void wkv4_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {  // chunk-local from the zero state; its state and decay summary for the carry
    kernels::wkv4_chunk_forward(b.wkv_loc.data(), b.st_loc.data(), b.logdec.data(), b.k.data(), b.v.data(),
                          s.par(st.layer, "tm.decay"), s.par(st.layer, "tm.bonus"), nullptr, s.B, s.T, s.Dl);
    return;
  }
  K::wkv4_forward(b.wkv.data(), nul(), b.k.data(), b.v.data(), s.par(st.layer, "tm.decay"), s.par(st.layer, "tm.bonus"),
                  nullptr, s.B, s.T, s.Dl);
}
void wkv4_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {
    kernels::wkv4_chunk_backward(b.dk.data(), b.dv.data(), s.grad(st.layer, "tm.decay"), s.grad(st.layer, "tm.bonus"), nullptr,
                           b.dwkv.data(), s.s + 1 < s.sp ? b.dst_out.data() : nullptr, b.k.data(), b.v.data(),
                           s.par(st.layer, "tm.decay"), s.par(st.layer, "tm.bonus"), s.s > 0 ? b.st_in.data() : nullptr,
                           s.B, s.T, s.Dl);
    return;
  }
  K::wkv4_backward(b.dk.data(), b.dv.data(), s.grad(st.layer, "tm.decay"), s.grad(st.layer, "tm.bonus"), nul(),
                   b.dwkv.data(), nullptr, b.k.data(), b.v.data(), s.par(st.layer, "tm.decay"), s.par(st.layer, "tm.bonus"),
                   nullptr, s.B, s.T, s.Dl);
}
void tm_gated_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::sigmoid_mul_forward(b.o.data(), b.r.data(), b.wkv.data(), s.M * s.Dl);
}
void tm_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::sigmoid_mul_backward(b.dr.data(), b.dwkv.data(), b.do_.data(), b.r.data(), b.wkv.data(), s.M * s.Dl);
}
void tm_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.tpart.data(), b.o.data(), s.par(st.layer, "tm.wo"), nullptr, s.M, s.Dl, s.D);
}
void tm_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.do_.data(), nul(), nul(), b.dtout.data(), b.o.data(), s.par(st.layer, "tm.wo"), s.M, s.Dl, s.D);
}
void tm_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "tm.wo"), nul(), b.dtout.data(), b.o.data(), s.par(st.layer, "tm.wo"), s.M,
                     s.Dl, s.D);
}
// Channel mix: Wk column split (F/t), Wv row split + all-reduce, Wr column split (D/t), the gate on
// the local D/t slice, then gathered.
void cm_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const float* prev = s.sp > 1 ? b.cprev.data() : nullptr;
  K::token_shift_forward(b.cxk.data(), b.n2.data(), prev, s.par(st.layer, "cm.mu_k"), s.B, s.T, s.D);
  K::token_shift_forward(b.cxr.data(), b.n2.data(), prev, s.par(st.layer, "cm.mu_r"), s.B, s.T, s.D);
}
void cm_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const float* prev = s.sp > 1 ? b.cprev.data() : nullptr;
  float* dprev = s.sp > 1 ? b.dcprev.data() : nullptr;
  K::token_shift_backward(b.dn2.data(), dprev, s.grad(st.layer, "cm.mu_k"), b.dcxk.data(), b.n2.data(), prev,
                          s.par(st.layer, "cm.mu_k"), s.B, s.T, s.D);
  K::token_shift_backward(b.dn2.data(), dprev, s.grad(st.layer, "cm.mu_r"), b.dcxr.data(), b.n2.data(), prev,
                          s.par(st.layer, "cm.mu_r"), s.B, s.T, s.D);
}
void cm_mu_grads_bwd(State& s, const Step& st) { replicated_grads_bwd(s, st, {"cm.mu_k", "cm.mu_r"}); }
void cm_wk_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.ck.data(), b.cxk.data(), s.par(st.layer, "cm.wk"), nullptr, s.M, s.D, s.F);
}
void cm_wk_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dcxk.data(), nul(), nul(), b.dck.data(), b.cxk.data(), s.par(st.layer, "cm.wk"), s.M, s.D, s.F);
}
void cm_wk_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "cm.wk"), nul(), b.dck.data(), b.cxk.data(), s.par(st.layer, "cm.wk"), s.M,
                     s.D, s.F);
}
void cm_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::relu_square_forward(b.ch.data(), b.ck.data(), s.M * s.F);
}
void cm_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::relu_square_backward(b.dck.data(), b.dch.data(), b.ck.data(), s.M * s.F);
}
void cm_wv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.ypart.data(), b.ch.data(), s.par(st.layer, "cm.wv"), nullptr, s.M, s.F, s.D);
}
void cm_wv_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dch.data(), nul(), nul(), b.dcv.data(), b.ch.data(), s.par(st.layer, "cm.wv"), s.M, s.F, s.D);
}
void cm_wv_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "cm.wv"), nul(), b.dcv.data(), b.ch.data(), s.par(st.layer, "cm.wv"), s.M,
                     s.F, s.D);
}
void cm_value_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.ypart.data(), b.cv, s.M * s.D);
}
void cm_wr_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.cr.data(), b.cxr.data(), s.par(st.layer, "cm.wr"), nullptr, s.M, s.D, s.Dl);
}
void cm_wr_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dcxr.data(), nul(), nul(), b.dcr.data(), b.cxr.data(), s.par(st.layer, "cm.wr"), s.M, s.D, s.Dl);
}
void cm_wr_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "cm.wr"), nul(), b.dcr.data(), b.cxr.data(), s.par(st.layer, "cm.wr"), s.M,
                     s.D, s.Dl);
}
// ---- RWKV-6 time mix (DESIGN §3.3) ---------------------------------------------------------------
// Under tensor: the shift, the LoRAs and the five mixes are whole on every rank (replicated
// parameters, tm.mu_grads); decay_b, the decay, r, k, v, g, the WKV heads, GroupNorm and the gate
// hold this rank's Dl = D/t channels (Dl/N heads); W_o is row-split. Under sequence: the shift's
// previous token comes from the left shard (tm.shift_halo), the WKV state through scan.carry.

i64 rank_mix(const State& s) { return s.m.lora_rank_mix; }
i64 rank_decay(const State& s) { return s.m.lora_rank_decay; }
float* x5(State& s, Vec& v, int j) { return v.data() + j * s.M * s.D; }  // j: 0 w, 1 k, 2 v, 3 r, 4 g
void r6_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_shift_forward(b.xx.data(), b.xxx.data(), b.n1.data(), s.sp > 1 ? b.shift_prev.data() : nullptr,
                          s.par(st.layer, "tm.mu_x"), s.B, s.T, s.D);
}
void r6_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_shift_backward(b.dn1.data(), s.sp > 1 ? b.dshift_prev.data() : nullptr, s.grad(st.layer, "tm.mu_x"),
                           b.dxx.data(), b.dxxx.data(), b.n1.data(), s.sp > 1 ? b.shift_prev.data() : nullptr,
                           s.par(st.layer, "tm.mu_x"), s.B, s.T, s.D);
}
void r6_lora_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.lz.data(), b.xxx.data(), s.par(st.layer, "tm.lora_a"), nullptr, s.M, s.D, 5 * rank_mix(s));
}
void r6_lora_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dxxx.data(), nul(), nul(), b.dlz.data(), b.xxx.data(), s.par(st.layer, "tm.lora_a"), s.M, s.D,
                     5 * rank_mix(s));
}
void r6_lora_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "tm.lora_a"), nul(), b.dlz.data(), b.xxx.data(), s.par(st.layer, "tm.lora_a"),
                     s.M, s.D, 5 * rank_mix(s));
}
void r6_lora_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_forward(b.ltz.data(), b.lz.data(), s.M * 5 * rank_mix(s));
}
void r6_lora_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_backward(b.dlz.data(), b.dltz.data(), b.ltz.data(), s.M * 5 * rank_mix(s));
}
// LoRA B: five rank-r maps; map j reads columns [j·r, (j+1)·r) of tanh(z) and writes x5 block j
// (kernels::grouped_linear: strided GEMMs, no copies of the column blocks).
void r6_lora_b_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_forward(b.mz.data(), b.ltz.data(), s.par(st.layer, "tm.lora_b"), s.M, 5, rank_mix(s), s.D);
}
void r6_lora_b_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_backward(b.dltz.data(), nul(), b.dmz.data(), b.ltz.data(), s.par(st.layer, "tm.lora_b"), s.M, 5,
                             rank_mix(s), s.D);
}
void r6_lora_b_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_backward(nul(), s.grad(st.layer, "tm.lora_b"), b.dmz.data(), b.ltz.data(),
                             s.par(st.layer, "tm.lora_b"), s.M, 5, rank_mix(s), s.D);
}
void r6_mix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_mix_forward(b.xs5.data(), b.n1.data(), b.xx.data(), s.par(st.layer, "tm.mu"), b.mz.data(), 5, s.M, s.D);
}
void r6_mix_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_mix_backward(b.dn1.data(), b.dxx.data(), s.grad(st.layer, "tm.mu"), b.dmz.data(), b.dxs5.data(), b.xx.data(),
                         s.par(st.layer, "tm.mu"), b.mz.data(), 5, s.M, s.D);
}
void r6_decay_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.dza.data(), x5(s, b.xs5, 0), s.par(st.layer, "tm.decay_a"), nullptr, s.M, s.D, rank_decay(s));
}
void r6_decay_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(x5(s, b.dxs5, 0), nul(), nul(), b.ddza.data(), x5(s, b.xs5, 0), s.par(st.layer, "tm.decay_a"), s.M,
                     s.D, rank_decay(s));
}
void r6_decay_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "tm.decay_a"), nul(), b.ddza.data(), x5(s, b.xs5, 0),
                     s.par(st.layer, "tm.decay_a"), s.M, s.D, rank_decay(s));
}
void r6_decay_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_forward(b.dlt.data(), b.dza.data(), s.M * rank_decay(s));
}
void r6_decay_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_backward(b.ddza.data(), b.ddlt.data(), b.dlt.data(), s.M * rank_decay(s));
}
void r6_decay_b_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.dd.data(), b.dlt.data(), s.par(st.layer, "tm.decay_b"), nullptr, s.M, rank_decay(s), s.Dl);
}
void r6_decay_b_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.ddlt.data(), nul(), nul(), b.ddd.data(), b.dlt.data(), s.par(st.layer, "tm.decay_b"), s.M,
                     rank_decay(s), s.Dl);
}
void r6_decay_b_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, "tm.decay_b"), nul(), b.ddd.data(), b.dlt.data(), s.par(st.layer, "tm.decay_b"),
                     s.M, rank_decay(s), s.Dl);
}
void r6_decay_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::decay_forward(b.logw.data(), s.par(st.layer, "tm.decay"), b.dd.data(), s.M, s.Dl);
}
void r6_decay_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::decay_backward(s.grad(st.layer, "tm.decay"), b.ddd.data(), b.dlogw.data(), b.logw.data(), s.M, s.Dl);
}
template <int J>  // 1 k, 2 v, 3 r, 4 g
float* r6_out(LayerBufs& b, bool grad) {
  if (J == 1) return (grad ? b.dk : b.k).data();
  if (J == 2) return (grad ? b.dv : b.v).data();
  if (J == 3) return (grad ? b.dr : b.r).data();
  return (grad ? b.dgg : b.gg).data();
}
constexpr const char* kR6W[5] = {"", "tm.wk", "tm.wv", "tm.wr", "tm.wg"};
template <int J>
void r6_proj_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(r6_out<J>(b, false), x5(s, b.xs5, J), s.par(st.layer, kR6W[J]), nullptr, s.M, s.D, s.Dl);
}
template <int J>
void r6_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(x5(s, b.dxs5, J), nul(), nul(), r6_out<J>(b, true), x5(s, b.xs5, J), s.par(st.layer, kR6W[J]), s.M,
                     s.D, s.Dl);
}
template <int J>
void r6_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, kR6W[J]), nul(), r6_out<J>(b, true), x5(s, b.xs5, J),
                     s.par(st.layer, kR6W[J]), s.M, s.D, s.Dl);
}
i64 heads6(const State& s) { return s.Dl / s.m.head_size; }  // this tensor rank's WKV heads
void wkv6_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {  // chunk-local from the zero state; its state and decay summary for the carry
    kernels::wkv6_chunk_forward(b.wkv_loc.data(), b.st_loc.data(), b.logdec.data(), b.r.data(), b.k.data(), b.v.data(),
                                b.logw.data(), s.par(st.layer, "tm.bonus"), nullptr, s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  K::wkv6_forward(b.wkv.data(), nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, "tm.bonus"),
                  nullptr, s.B, s.T, heads6(s), s.m.head_size);
}
void wkv6_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {
    kernels::wkv6_chunk_backward(b.dr.data(), b.dk.data(), b.dv.data(), b.dlogw.data(), s.grad(st.layer, "tm.bonus"), nullptr,
                                 b.dwkv.data(), s.s + 1 < s.sp ? b.dst_out.data() : nullptr, b.r.data(), b.k.data(),
                                 b.v.data(), b.logw.data(), s.par(st.layer, "tm.bonus"), s.s > 0 ? b.st_in.data() : nullptr,
                                 s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  K::wkv6_backward(b.dr.data(), b.dk.data(), b.dv.data(), b.dlogw.data(), s.grad(st.layer, "tm.bonus"), nullptr,
                   b.dwkv.data(), nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, "tm.bonus"),
                   nullptr, s.B, s.T, heads6(s), s.m.head_size);
}
void r6_gn_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::group_norm_forward(b.gn.data(), b.gmean.data(), b.grstd.data(), b.wkv.data(), s.par(st.layer, "tm.gn_scale"),
                        s.par(st.layer, "tm.gn_bias"), s.M, heads6(s), s.m.head_size, static_cast<float>(s.m.group_norm_eps));
}
void r6_gn_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::group_norm_backward(b.dwkv.data(), s.grad(st.layer, "tm.gn_scale"), s.grad(st.layer, "tm.gn_bias"), b.dgn.data(),
                         b.gmean.data(), b.grstd.data(), b.wkv.data(), s.par(st.layer, "tm.gn_scale"), s.M, heads6(s),
                         s.m.head_size);
}
void r6_gated_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_forward(b.o.data(), b.gn.data(), b.gg.data(), s.M * s.Dl);
}
void r6_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_backward(b.dgn.data(), b.dgg.data(), b.do_.data(), b.gn.data(), b.gg.data(), s.M * s.Dl);
}

// Steps both RWKV generations name alike ("tm.shift", "tm.wr", ...) but compute differently.
template <Executor::Handler Four, Executor::Handler Six>
void by_family(State& s, const Step& st) { (s.m.family == Family::rwkv6 ? Six : Four)(s, st); }

// Token-shift halo: the last token of the norm output goes right; its gradient comes back.
template <bool Channel>
void shift_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  shift_right(s, st, last_rows(s, (Channel ? b.n2 : b.n1).data(), 1, s.D, false), Channel ? b.cprev : b.shift_prev);
}
template <bool Channel>
void shift_halo_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  Vec back(static_cast<std::size_t>(s.B * s.D));
  shift_left(s, st, Channel ? b.dcprev : b.dshift_prev, back);
  add_last_rows(s, (Channel ? b.dn2 : b.dn1).data(), back, 1, s.D);
}
// WKV chunk-state carry of either generation (DESIGN §4); its element counts, and what each scheme
// sends, are program/lower.hpp wkv_carry_elems. RWKV-4: a state is the kernel's scaled (α, β, p)
// form [3,B,Dl], its gradient [2,B,Dl], the decay summary [Dl] (the same on every shard); composing
// gradients also needs the exponents of the shard's incoming and final states. RWKV-6: a state is
// the matrix S [B,H,N,N] of this rank's heads, its gradient the same, the summary log diag(Π w)
// [B,H,N]; both compose linearly (S_out = diag(Π w) S_in + S_loc, dS_in = diag(Π w) dS_out +
// dS_loc). The output is not linear in the state for RWKV-4, so for both the fix re-runs the chunk
// from its true state.
struct WkvCarry {
  bool six;
  WkvCarryElems n;  // elements per shard
  void combine(const State& s, float* out, const float* in, const float* local, const float* logdec) const {
    if (six) kernels::wkv6_state_combine(out, in, local, logdec, s.B, heads6(s), s.m.head_size);
    else kernels::wkv4_state_combine(out, in, local, logdec, s.B, s.Dl);
  }
  // d_in = dL/d(incoming state) of a shard, from its d_out, its own part dloc, its incoming and
  // final states (st_in, st_fin; RWKV-4 only) and its summary.
  void grad_combine(const State& s, float* d_in, const float* d_out, const float* dloc, const float* st_in,
                    const float* st_fin, const float* logdec) const {
    if (six) kernels::wkv6_grad_state_combine(d_in, d_out, dloc, logdec, s.B, heads6(s), s.m.head_size);
    else kernels::wkv4_grad_state_combine(d_in, d_out, dloc, st_in, st_fin, logdec, s.B, s.Dl);
  }
};
WkvCarry wkv_carry(const State& s) {
  return {s.m.family == Family::rwkv6, wkv_carry_elems(s.m.family, s.B, s.Dl, s.m.head_size)};
}
void wkv_carry_ring_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.st_in), left(s));
  wkv_carry(s).combine(s, b.st_fin.data(), s.s > 0 ? b.st_in.data() : nullptr, b.st_loc.data(), b.logdec.data());
  c.sendrecv(std::span<const float>(b.st_fin), right(s), std::span<float>(), MPI_PROC_NULL);
}
// All-gather of every shard's local state (and summary, where the data decide it; otherwise every
// shard's is this shard's own). Every rank folds all shards into `fold` (shard r's final state,
// then its summary), keeps it for backward, and takes its own incoming and final states from it.
void wkv_carry_gather_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const WkvCarry w = wkv_carry(s);
  const i64 n = w.n.state, sum = w.n.summary, per = w.n.gather_forward(), kept = n + sum;
  Vec mine(static_cast<std::size_t>(per)), all(static_cast<std::size_t>(per * s.sp));
  std::copy(b.st_loc.begin(), b.st_loc.end(), mine.begin());
  if (w.n.summary_sent) std::copy(b.logdec.begin(), b.logdec.end(), mine.begin() + n);
  need(s, Axis::sequence, st).allgather(std::span<const float>(mine), std::span<float>(all));
  for (i64 r = 0; r < s.sp; ++r) {
    const float* local = all.data() + r * per;
    float* fin = b.fold.data() + r * kept;
    std::copy_n(w.n.summary_sent ? local + n : b.logdec.data(), sum, fin + n);
    w.combine(s, fin, r > 0 ? fin - kept : nullptr, local, fin + n);
  }
  if (s.s > 0) std::copy_n(b.fold.data() + (s.s - 1) * kept, n, b.st_in.data());
  std::copy_n(b.fold.data() + s.s * kept, n, b.st_fin.data());
}
void wkv_carry_fix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.s == 0) { b.wkv = b.wkv_loc; return; }
  if (s.m.family == Family::rwkv6)
    kernels::wkv6_chunk_forward(b.wkv.data(), nullptr, nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(),
                                s.par(st.layer, "tm.bonus"), b.st_in.data(), s.B, s.T, heads6(s), s.m.head_size);
  else
    kernels::wkv4_chunk_forward(b.wkv.data(), nullptr, nullptr, b.k.data(), b.v.data(), s.par(st.layer, "tm.decay"),
                                s.par(st.layer, "tm.bonus"), b.st_in.data(), s.B, s.T, s.Dl);
}
void wkv_carry_fix_bwd(State& s, const Step& st) {  // this chunk's own dstate_in (dstate_out = 0)
  auto& b = lb(s, st);
  // discarded gradients (the kernels accumulate: zeroed): dk, dv, dr, dlogw the size of dk; dd, db [Dl]
  const std::size_t n = b.dk.size(), dl = static_cast<std::size_t>(s.Dl);
  s.fix_scratch.assign(4 * n + 2 * dl, 0.0f);
  float *dk = s.fix_scratch.data(), *dv = dk + n, *dr = dv + n, *dlogw = dr + n, *dd = dlogw + n, *db = dd + dl;
  std::fill(b.dloc.begin(), b.dloc.end(), 0.0f);
  const float* st_in = s.s > 0 ? b.st_in.data() : nullptr;
  if (s.m.family == Family::rwkv6) {  // dd: d bonus [H,N] = Dl
    kernels::wkv6_chunk_backward(dr, dk, dv, dlogw, dd, b.dloc.data(), b.dwkv.data(),
                                 nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, "tm.bonus"),
                                 st_in, s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  kernels::wkv4_chunk_backward(dk, dv, dd, db, b.dloc.data(), b.dwkv.data(), nullptr, b.k.data(),
                               b.v.data(), s.par(st.layer, "tm.decay"), s.par(st.layer, "tm.bonus"), st_in, s.B, s.T, s.Dl);
}
void wkv_carry_ring_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  zero(b.dst_out);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.dst_out), right(s));
  if (s.s == 0) return;
  Vec d_in(b.dloc.size());
  wkv_carry(s).grad_combine(s, d_in.data(), b.dst_out.data(), b.dloc.data(), b.st_in.data(), b.st_fin.data(),
                            b.logdec.data());
  c.sendrecv(std::span<const float>(d_in), left(s), std::span<float>(), MPI_PROC_NULL);
}
// All-gather of every shard's own dloc only: the states and summaries of the later shards are in
// the forward's `fold`.
void wkv_carry_gather_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const WkvCarry w = wkv_carry(s);
  const i64 n2 = w.n.gather_backward(), kept = w.n.state + w.n.summary;
  Vec all(static_cast<std::size_t>(n2 * s.sp));
  need(s, Axis::sequence, st).allgather(std::span<const float>(b.dloc), std::span<float>(all));
  zero(b.dst_out);
  Vec d_in(static_cast<std::size_t>(n2));
  for (i64 r = s.sp - 1; r > s.s; --r) {  // dstate_out of shard r−1 = total dstate_in of shard r
    const float* fin = b.fold.data() + r * kept;
    w.grad_combine(s, d_in.data(), b.dst_out.data(), all.data() + r * n2, fin - kept, fin, fin + w.n.state);
    b.dst_out = d_in;
  }
}

// rows [M, D] ↔ this rank's column slice [M, Dl]
void take_cols(const State& s, const float* full, float* part) {
  const i64 d0 = s.tcoord * s.Dl;
  for (i64 m = 0; m < s.M; ++m) std::copy_n(full + m * s.D + d0, s.Dl, part + m * s.Dl);
}
void cm_gate_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  take_cols(s, b.cv, b.cvl.data());
  K::sigmoid_mul_forward(b.cg.data(), b.cr.data(), b.cvl.data(), s.M * s.Dl);
}
void cm_gate_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  Vec dcg(static_cast<std::size_t>(s.M * s.Dl));
  take_cols(s, b.dy.data(), dcg.data());
  std::fill_n(b.dcvl, s.M * s.Dl, 0.0f);
  K::sigmoid_mul_backward(b.dcr.data(), b.dcvl, dcg.data(), b.cr.data(), b.cvl.data(), s.M * s.Dl);
}
// All-gather of [M, Dl] column slices into [M, D].
void gather_cols(const State& s, const Step& st, const float* part, float* full) {
  Vec all(static_cast<std::size_t>(s.M * s.D));
  need(s, Axis::tensor, st).allgather(std::span<const float>(part, static_cast<std::size_t>(s.M * s.Dl)), std::span<float>(all));
  for (i64 r = 0; r < s.t; ++r)
    for (i64 m = 0; m < s.M; ++m) std::copy_n(all.data() + (r * s.M + m) * s.Dl, s.Dl, full + m * s.D + r * s.Dl);
}
void cm_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  gather_cols(s, st, b.cg.data(), b.cgath);
}
void cm_value_grad_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  gather_cols(s, st, b.dcvl, b.dcv.data());
}
// The residual adds this rank's tokens of the gathered output (all of them without rs_ag).
void cm_residual_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  add(s.xs[static_cast<std::size_t>(st.layer) + 1].data(), b.x_mid.data(), b.cgath + s.m0 * s.D, s.Ms * s.D);
}

// ---- ZeRO-3: gather a block's parameters from their owners before use --------------------------

Range block_range(const ShardLayout& lay, const std::string& block) {
  Range r{lay.total, 0};
  for (std::size_t i = 0; i < lay.dim.size(); ++i)
    if (lay.full.tensors[i].block == block) {
      r.begin = std::min(r.begin, lay.offset[i]);
      r.end = std::max(r.end, lay.offset[i] + lay.count(i));
    }
  return r;
}
void gather_range(State& s, const Step& st, const Range r) {
  std::vector<int> counts;
  for (const Range& part : s.zero3)
    counts.push_back(static_cast<int>(std::max<i64>(0, std::min(r.end, part.end) - std::max(r.begin, part.begin))));
  need(s, Axis::fsdp, st).allgather_v_inplace(std::span<float>(s.Pw + r.begin, static_cast<std::size_t>(r.size())), counts);
}
void gather_block(State& s, const Step& st, const std::string& block) { gather_range(s, st, block_range(s.lay, block)); }
void layer_params_gather(State& s, const Step& st) { gather_block(s, st, State::block(st.layer)); }
void embed_params_gather(State& s, const Step& st) { gather_block(s, st, "embed"); }
// The final norm and the head: an untied head's block, or a tied head's table on a last stage
// that is not also the first (whose embedding steps gathered it) — lower.cpp's head_params.
void head_params_gather(State& s, const Step& st) {
  gather_block(s, st, "final");
  if (!s.m.tied_embeddings) return gather_block(s, st, "head");
  if (s.stage == 0) return;
  const std::size_t table = s.lay.full.index.at("embed/embed.table");
  gather_range(s, st, {s.lay.offset[table], s.lay.offset[table] + s.lay.count(table)});
}

// ---- pipeline stages: activations forward, their gradients back ---------------------------------
// Chunk j of stage s (its layers [b, e)) receives xs[b] from the previous stage — stage s − 1,
// or for stage 0's later chunks stage pp − 1's chunk j − 1 — and sends xs[e] to the next (stage
// s + 1, or stage 0 from the last stage); the gradients go back the same way. The boundary layer
// names the message: tag 2·b for the activations entering layer b, 2·b + 1 for their gradient.
// Sends go from copies, completed before the step's gradient reduction (finish), so no slot ever
// waits for a receiver.
int prev_stage(const State& s) { return static_cast<int>((s.stage + s.p.mesh[Axis::pipeline] - 1) % s.p.mesh[Axis::pipeline]); }
int next_stage(const State& s) { return static_cast<int>((s.stage + 1) % s.p.mesh[Axis::pipeline]); }
const Range& cur_chunk(const State& s) { return s.chunks[static_cast<std::size_t>(s.chunk)]; }
void pp_isend(State& s, const Step& st, std::span<const float> data, int dest, int tag) {
  s.pending.push_back(need(s, Axis::pipeline, st).isend(data, dest, tag, s.send_bufs));
}

std::span<float> span_of(Vec& v) { return std::span<float>(v); }
// Megatron's scatter/gather (Plan::scatter_gather, lower.cpp): the residual stream is replicated
// on the tensor ranks, so each sends only its slice (split_range of the buffer) and the receiver
// all-gathers the slices over the tensor axis ("all_gather|pipeline.activations/.gradients").
bool scatters(const State& s) { return pipeline_scatter_gather(s.p); }
std::span<float> pp_part(const State& s, Vec& v) {
  if (!scatters(s)) return span_of(v);
  const Range r = split_range(static_cast<i64>(v.size()), s.t, s.tcoord);
  return {v.data() + r.begin, static_cast<std::size_t>(r.size())};
}
void pp_gather(const State& s, const Step& st, Vec& v) {
  std::vector<int> counts;
  for (i64 i = 0; i < s.t; ++i) counts.push_back(static_cast<int>(split_range(static_cast<i64>(v.size()), s.t, i).size()));
  need(s, Axis::tensor, st).allgather_v_inplace(span_of(v), counts);
}
void pp_recv_act(State& s, const Step& st) {
  const i64 b = cur_chunk(s).begin;
  need(s, Axis::pipeline, st).recv(pp_part(s, s.xs[static_cast<std::size_t>(b)]), prev_stage(s), static_cast<int>(2 * b));
}
void pp_gather_act(State& s, const Step& st) { pp_gather(s, st, s.xs[static_cast<std::size_t>(cur_chunk(s).begin)]); }
void pp_send_act(State& s, const Step& st) {
  const i64 e = cur_chunk(s).end;
  pp_isend(s, st, pp_part(s, s.xs[static_cast<std::size_t>(e)]), next_stage(s), static_cast<int>(2 * e));
}
// A layer's accumulation targets (its backward kernels add into them) cleared for this
// micro-batch: lower.cpp's "zero grad_buffers", the first step of each layer's backward.
void clear_grad_buffers(State& s, const Step& st) {
  auto& b = lb(s, st);
  for (auto* v : {&b.dn1, &b.dn2, &b.dcu, &b.du, &b.dconv_state, &b.dq_ext, &b.dk_ext, &b.dv_ext, &b.dqr, &b.dkr, &b.dv,
                  &b.dgy, &b.dhs, &b.dh1, &b.dh2, &b.dgm, &b.dpr, &b.dxs3, &b.dr, &b.dk, &b.dwkv, &b.do_, &b.dcxk,
                  &b.dcxr, &b.dck, &b.dch, &b.dcr, &b.dshift_prev, &b.dcprev, &b.dxx, &b.dxxx, &b.ddd, &b.dlogw,
                  &b.dgg, &b.dgn, &b.dlz, &b.dltz, &b.dmz, &b.dxs5, &b.ddza, &b.ddlt})
    zero(*v);
}

void pp_recv_grad(State& s, const Step& st) {
  const i64 e = cur_chunk(s).end;
  need(s, Axis::pipeline, st).recv(pp_part(s, s.dxs[static_cast<std::size_t>(e)]), next_stage(s), static_cast<int>(2 * e + 1));
}
void pp_gather_grad(State& s, const Step& st) { pp_gather(s, st, s.dxs[static_cast<std::size_t>(cur_chunk(s).end)]); }
void pp_send_grad(State& s, const Step& st) {
  const i64 b = cur_chunk(s).begin;
  pp_isend(s, st, pp_part(s, s.dxs[static_cast<std::size_t>(b)]), prev_stage(s), static_cast<int>(2 * b + 1));
}

// ---- tensor_comm rs_ag (Megatron sequence parallelism, lower.cpp tensor_allreduce_fwd/_bwd) -----
// Tokens are split over the tensor group in contiguous blocks of Ms rows: a reduce-scatter of an
// [M, D] buffer leaves rank r the sum of rows r·Ms .., an all-gather rebuilds the [M, D] buffer.
void rs_into(const State& s, const Step& st, const float* in, float* out, i64 rows) {
  need(s, st.axis, st).reduce_scatter_sum(std::span<const float>(in, static_cast<std::size_t>(rows * s.D)),
                                          std::span<float>(out, static_cast<std::size_t>(rows / s.t * s.D)));
}
void ag_into(const State& s, const Step& st, const float* in, float* out, i64 rows) {
  need(s, st.axis, st).allgather(std::span<const float>(in, static_cast<std::size_t>(rows / s.t * s.D)),
                                 std::span<float>(out, static_cast<std::size_t>(rows * s.D)));
}
// exits: the block's partial sums → this rank's tokens; backward: their gradient gathered
void embed_rs_fwd(State& s, const Step& st) { rs_into(s, st, s.epart.data(), s.emb_out, s.M); }
void embed_ag_bwd(State& s, const Step& st) { ag_into(s, st, s.m.is_rwkv() ? s.demb_loc.data() : s.dxs[0].data(), s.demb.data(), s.M); }
void temporal_rs_fwd(State& s, const Step& st) { auto& b = lb(s, st); rs_into(s, st, b.tpart.data(), b.tout, s.M); }
void temporal_ag_bwd(State& s, const Step& st) { auto& b = lb(s, st); ag_into(s, st, b.dtout_loc.data(), b.dtout.data(), s.M); }
void mlp_rs_fwd(State& s, const Step& st) { auto& b = lb(s, st); rs_into(s, st, b.ypart.data(), b.y, s.M); }
void mlp_ag_bwd(State& s, const Step& st) { auto& b = lb(s, st); ag_into(s, st, b.dy_loc.data(), b.dy.data(), s.M); }
// RWKV's channel mix: the residual's gradient covers this rank's tokens; the gate's backward needs
// every token of this rank's channels, so the token slices are gathered (lower.cpp "cm.out_grad").
void cm_out_grad_bwd(State& s, const Step& st) { auto& b = lb(s, st); ag_into(s, st, b.dy_loc.data(), b.dy.data(), s.M); }
// entries: the norm output gathered to every token; backward: the input gradient reduce-scattered
void in1_ag_fwd(State& s, const Step& st) { auto& b = lb(s, st); ag_into(s, st, b.n1_loc.data(), b.n1.data(), s.M); }
void in1_rs_bwd(State& s, const Step& st) { auto& b = lb(s, st); rs_into(s, st, b.dn1.data(), b.dn1_loc.data(), s.M); }
void in2_ag_fwd(State& s, const Step& st) { auto& b = lb(s, st); ag_into(s, st, b.n2_loc.data(), b.n2.data(), s.M); }
void in2_rs_bwd(State& s, const Step& st) { auto& b = lb(s, st); rs_into(s, st, b.dn2.data(), b.dn2_loc.data(), s.M); }
void head_ag_fwd(State& s, const Step& st) { ag_into(s, st, s.nf_loc.data(), s.nf.data(), s.M); }
void head_rs_bwd(State& s, const Step& st) { rs_into(s, st, s.dnf.data(), s.dnf_loc.data(), s.M); }
// The entry's input is saved sharded in a memory-bound implementation, so backward gathers it again
// for the weight gradients (priced overlapped). The executor keeps the gathered input anyway; it
// performs the gather into the same buffer (same values): the MLP's first, then the mixer's.
void regather_bwd(State& s, const Step& st) {
  if (st.layer < 0) return ag_into(s, st, s.nf_loc.data(), s.nf.data(), s.M);
  auto& b = lb(s, st);
  if (b.regathers++ == 0) ag_into(s, st, b.n2_loc.data(), b.n2.data(), s.M);
  else ag_into(s, st, b.n1_loc.data(), b.n1.data(), s.M);
}

void fused(State&, const Step&) {}  // work done inside a neighbouring step's kernel (named in the table)

// ---- dispatch -----------------------------------------------------------------------------------

struct Entry { Executor::Handler fwd; Executor::Handler bwd; };
const std::map<std::string, Entry, std::less<>>& table() {
  static const std::map<std::string, Entry, std::less<>> t = {
      {step_key(ops::send_recv, tensors::pipeline_recv_activations), {pp_recv_act, nullptr}},
      {step_key(ops::all_gather, tensors::pipeline_activations), {pp_gather_act, nullptr}},
      {step_key(ops::all_gather, tensors::pipeline_gradients), {nullptr, pp_gather_grad}},
      {step_key(ops::send_recv, tensors::pipeline_send_activations), {pp_send_act, nullptr}},
      {step_key(ops::send_recv, tensors::pipeline_recv_gradients), {nullptr, pp_recv_grad}},
      {step_key(ops::zero, tensors::grad_buffers), {nullptr, clear_grad_buffers}},
      {step_key(ops::send_recv, tensors::pipeline_send_gradients), {nullptr, pp_send_grad}},
      {step_key(ops::all_gather, tensors::params), {layer_params_gather, layer_params_gather}},
      {step_key(ops::all_gather, tensors::embed_params), {embed_params_gather, nullptr}},
      {step_key(ops::all_gather, tensors::head_params), {head_params_gather, nullptr}},
      {step_key(ops::embedding, tensors::embed_table), {embed_fwd, embed_bwd}},
      {step_key(ops::layernorm, tensors::embed_norm), {embed_norm_fwd, embed_norm_bwd}},
      {step_key(ops::layernorm, tensors::final_norm), {ln_final_fwd, ln_final_bwd}},
      {step_key(ops::logits, tensors::head_w), {head_w_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::head_w), {nullptr, head_w_dx}}, {step_key(ops::linear_dw, tensors::head_w), {nullptr, head_w_dw}},
      // RWKV-4 time mix and the RWKV channel mix
      {step_key(ops::layernorm, tensors::norm1), {ln1_fwd, ln1_bwd}},
      {step_key(ops::layernorm, tensors::norm2), {ln2_fwd, ln2_bwd}},
      {step_key(ops::all_reduce, tensors::tm_in_grad), {nullptr, in_grad1_bwd}},
      {step_key(ops::all_reduce, tensors::cm_in_grad), {nullptr, in_grad2_bwd}},
      {step_key(ops::all_reduce, tensors::tm_mu_grads), {nullptr, tm_mu_grads_bwd}},
      {step_key(ops::all_reduce, tensors::cm_mu_grads), {nullptr, cm_mu_grads_bwd}},
      {step_key(ops::token_shift, tensors::tm_shift), {by_family<tm_shift_fwd, r6_shift_fwd>, by_family<tm_shift_bwd, r6_shift_bwd>}},
      {step_key(ops::linear, tensors::tm_wr), {by_family<tm_proj_fwd<0>, r6_proj_fwd<3>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wr), {nullptr, by_family<tm_proj_dx<0>, r6_proj_dx<3>>}}, {step_key(ops::linear_dw, tensors::tm_wr), {nullptr, by_family<tm_proj_dw<0>, r6_proj_dw<3>>}},
      {step_key(ops::linear, tensors::tm_wk), {by_family<tm_proj_fwd<1>, r6_proj_fwd<1>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wk), {nullptr, by_family<tm_proj_dx<1>, r6_proj_dx<1>>}}, {step_key(ops::linear_dw, tensors::tm_wk), {nullptr, by_family<tm_proj_dw<1>, r6_proj_dw<1>>}},
      {step_key(ops::linear, tensors::tm_wv), {by_family<tm_proj_fwd<2>, r6_proj_fwd<2>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wv), {nullptr, by_family<tm_proj_dx<2>, r6_proj_dx<2>>}}, {step_key(ops::linear_dw, tensors::tm_wv), {nullptr, by_family<tm_proj_dw<2>, r6_proj_dw<2>>}},
      {step_key(ops::wkv4_scan, tensors::tm_wkv), {wkv4_fwd, wkv4_bwd}},
      {step_key(ops::scan_carry_fix, tensors::tm_wkv), {wkv_carry_fix_fwd, wkv_carry_fix_bwd}},  // both generations
      // RWKV-6 time mix
      {step_key(ops::linear, tensors::tm_lora_a), {r6_lora_a_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_lora_a), {nullptr, r6_lora_a_dx}}, {step_key(ops::linear_dw, tensors::tm_lora_a), {nullptr, r6_lora_a_dw}},
      {step_key(ops::tanh, tensors::tm_lora_act), {r6_lora_act_fwd, r6_lora_act_bwd}},
      {step_key(ops::linear, tensors::tm_lora_b), {r6_lora_b_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_lora_b), {nullptr, r6_lora_b_dx}}, {step_key(ops::linear_dw, tensors::tm_lora_b), {nullptr, r6_lora_b_dw}},
      {step_key(ops::ddlerp, tensors::tm_mix), {r6_mix_fwd, r6_mix_bwd}},
      {step_key(ops::linear, tensors::tm_decay_a), {r6_decay_a_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_decay_a), {nullptr, r6_decay_a_dx}}, {step_key(ops::linear_dw, tensors::tm_decay_a), {nullptr, r6_decay_a_dw}},
      {step_key(ops::tanh, tensors::tm_decay_act), {r6_decay_act_fwd, r6_decay_act_bwd}},
      {step_key(ops::linear, tensors::tm_decay_b), {r6_decay_b_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_decay_b), {nullptr, r6_decay_b_dx}}, {step_key(ops::linear_dw, tensors::tm_decay_b), {nullptr, r6_decay_b_dw}},
      {step_key(ops::exp_exp, tensors::tm_decay), {r6_decay_fwd, r6_decay_bwd}},
      {step_key(ops::linear, tensors::tm_wg), {r6_proj_fwd<4>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wg), {nullptr, r6_proj_dx<4>}}, {step_key(ops::linear_dw, tensors::tm_wg), {nullptr, r6_proj_dw<4>}},
      {step_key(ops::wkv6_scan, tensors::tm_wkv), {wkv6_fwd, wkv6_bwd}},
      {step_key(ops::wkv6_chunked, tensors::tm_wkv), {wkv6_fwd, wkv6_bwd}},
      {step_key(ops::groupnorm, tensors::tm_gn), {r6_gn_fwd, r6_gn_bwd}},
      {step_key(ops::silu_mul, tensors::tm_gated), {r6_gated_fwd, r6_gated_bwd}},
      {step_key(ops::send_recv, tensors::tm_shift_halo), {shift_halo_fwd<false>, shift_halo_bwd<false>}},
      {step_key(ops::send_recv, tensors::cm_shift_halo), {shift_halo_fwd<true>, shift_halo_bwd<true>}},
      {step_key(ops::sigmoid_mul, tensors::tm_gated), {tm_gated_fwd, tm_gated_bwd}},
      {step_key(ops::linear, tensors::tm_wo), {tm_wo_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wo), {nullptr, tm_wo_dx}}, {step_key(ops::linear_dw, tensors::tm_wo), {nullptr, tm_wo_dw}},
      {step_key(ops::all_reduce, tensors::tm_out), {temporal_out_fwd, nullptr}},
      {step_key(ops::add, tensors::tm_residual), {temporal_residual_fwd, temporal_residual_bwd}},
      {step_key(ops::token_shift, tensors::cm_shift), {cm_shift_fwd, cm_shift_bwd}},
      {step_key(ops::linear, tensors::cm_wk), {cm_wk_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wk), {nullptr, cm_wk_dx}}, {step_key(ops::linear_dw, tensors::cm_wk), {nullptr, cm_wk_dw}},
      {step_key(ops::relu_sq, tensors::cm_act), {cm_act_fwd, cm_act_bwd}},
      {step_key(ops::linear, tensors::cm_wv), {cm_wv_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wv), {nullptr, cm_wv_dx}}, {step_key(ops::linear_dw, tensors::cm_wv), {nullptr, cm_wv_dw}},
      {step_key(ops::all_reduce, tensors::cm_value), {cm_value_fwd, nullptr}},
      {step_key(ops::linear, tensors::cm_wr), {cm_wr_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wr), {nullptr, cm_wr_dx}}, {step_key(ops::linear_dw, tensors::cm_wr), {nullptr, cm_wr_dw}},
      {step_key(ops::sigmoid_mul, tensors::cm_gate), {cm_gate_fwd, cm_gate_bwd}},
      {step_key(ops::all_gather, tensors::cm_value_grad), {nullptr, cm_value_grad_bwd}},
      {step_key(ops::all_gather, tensors::cm_out), {cm_out_fwd, nullptr}},
      {step_key(ops::all_gather, tensors::cm_out_grad), {nullptr, cm_out_grad_bwd}},
      {step_key(ops::add, tensors::cm_residual), {cm_residual_fwd, mlp_residual_bwd}},
      {step_key(ops::all_reduce, tensors::embed_out), {embed_reduce_fwd, nullptr}},
      // tensor_comm rs_ag: reduce-scatter / all-gather pairs in place of the all-reduces
      {step_key(ops::reduce_scatter, tensors::embed_out), {embed_rs_fwd, nullptr}}, {step_key(ops::all_gather, tensors::embed_out), {nullptr, embed_ag_bwd}},
      {step_key(ops::reduce_scatter, tensors::attn_out), {temporal_rs_fwd, nullptr}}, {step_key(ops::all_gather, tensors::attn_out), {nullptr, temporal_ag_bwd}},
      {step_key(ops::reduce_scatter, tensors::rec_out), {temporal_rs_fwd, nullptr}}, {step_key(ops::all_gather, tensors::rec_out), {nullptr, temporal_ag_bwd}},
      {step_key(ops::reduce_scatter, tensors::mlp_out), {mlp_rs_fwd, nullptr}}, {step_key(ops::all_gather, tensors::mlp_out), {nullptr, mlp_ag_bwd}},
      {step_key(ops::reduce_scatter, tensors::tm_out), {temporal_rs_fwd, nullptr}}, {step_key(ops::all_gather, tensors::tm_out), {nullptr, temporal_ag_bwd}},
      {step_key(ops::all_gather, tensors::attn_in_grad), {in1_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::attn_in_grad), {nullptr, in1_rs_bwd}},
      {step_key(ops::all_gather, tensors::rec_in_grad), {in1_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::rec_in_grad), {nullptr, in1_rs_bwd}},
      {step_key(ops::all_gather, tensors::mlp_in_grad), {in2_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::mlp_in_grad), {nullptr, in2_rs_bwd}},
      {step_key(ops::all_gather, tensors::tm_in_grad), {in1_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::tm_in_grad), {nullptr, in1_rs_bwd}},
      {step_key(ops::all_gather, tensors::cm_in_grad), {in2_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::cm_in_grad), {nullptr, in2_rs_bwd}},
      {step_key(ops::all_gather, tensors::head_in_grad), {head_ag_fwd, nullptr}}, {step_key(ops::reduce_scatter, tensors::head_in_grad), {nullptr, head_rs_bwd}},
      {step_key(ops::all_gather, tensors::tp_regather_input), {nullptr, regather_bwd}},
      {step_key(ops::add_positions, tensors::embed_positions), {positions_fwd, positions_bwd}},
      {step_key(ops::rmsnorm, tensors::final_norm), {final_norm_fwd, final_norm_bwd}},
      {step_key(ops::all_reduce, tensors::head_in_grad), {nullptr, head_in_grad_bwd}},
      {step_key(ops::logits, tensors::embed_table), {logits_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::embed_table), {nullptr, head_dx_bwd}},
      {step_key(ops::linear_dw, tensors::embed_table), {nullptr, head_dw_bwd}},
      {step_key(ops::all_reduce, tensors::loss_stats), {loss_stats_fwd, nullptr}},
      {step_key(ops::softmax_xent, tensors::loss), {softmax_xent_fwd, softmax_xent_bwd}},
      // blocks: norms, reductions, residuals
      {step_key(ops::rmsnorm, tensors::norm1), {norm1_fwd, norm1_bwd}},
      {step_key(ops::rmsnorm, tensors::norm2), {norm2_fwd, norm2_bwd}},
      {step_key(ops::all_reduce, tensors::rec_in_grad), {nullptr, in_grad1_bwd}},
      {step_key(ops::all_reduce, tensors::attn_in_grad), {nullptr, in_grad1_bwd}},
      {step_key(ops::all_reduce, tensors::mlp_in_grad), {nullptr, in_grad2_bwd}},
      {step_key(ops::all_reduce, tensors::rec_out), {temporal_out_fwd, nullptr}},
      {step_key(ops::all_reduce, tensors::attn_out), {temporal_out_fwd, nullptr}},
      {step_key(ops::add, tensors::rec_residual), {temporal_residual_fwd, temporal_residual_bwd}},
      {step_key(ops::add, tensors::attn_residual), {temporal_residual_fwd, temporal_residual_bwd}},
      // gated MLP
      {step_key(ops::linear, tensors::mlp_w1), {mlp_w1_fwd, nullptr}},
      {step_key(ops::linear, tensors::mlp_w2), {mlp_w2_fwd, nullptr}},
      {step_key(ops::gelu_mul, tensors::mlp_act), {mlp_act_fwd, mlp_act_bwd}},
      {step_key(ops::silu_mul, tensors::mlp_act), {swiglu_act_fwd, swiglu_act_bwd}},  // transformer: SwiGLU
      {step_key(ops::gelu, tensors::mlp_act), {gelu_act_fwd, gelu_act_bwd}},          // transformer: GeLU MLP
      {step_key(ops::linear, tensors::mlp_w3), {mlp_w3_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::mlp_w3), {nullptr, mlp_w3_dx}}, {step_key(ops::linear_dw, tensors::mlp_w3), {nullptr, mlp_w3_dw}},
      {step_key(ops::linear_dx, tensors::mlp_w2), {nullptr, mlp_w2_dx}}, {step_key(ops::linear_dw, tensors::mlp_w2), {nullptr, mlp_w2_dw}},
      {step_key(ops::linear_dx, tensors::mlp_w1), {nullptr, mlp_w1_dx}}, {step_key(ops::linear_dw, tensors::mlp_w1), {nullptr, mlp_w1_dw}},
      {step_key(ops::all_reduce, tensors::mlp_out), {mlp_out_fwd, nullptr}},
      {step_key(ops::add, tensors::mlp_residual), {mlp_residual_fwd, mlp_residual_bwd}},
      // dropout (transformer)
      {step_key(ops::dropout, tensors::embed_dropout), {embed_dropout_fwd, embed_dropout_bwd}},
      {step_key(ops::dropout, tensors::attn_dropout), {attn_dropout_fwd, attn_dropout_bwd}},
      {step_key(ops::dropout, tensors::mlp_dropout), {mlp_dropout_fwd, mlp_dropout_bwd}},
      // recurrent block
      {step_key(ops::linear, tensors::rec_wy), {rec_wy_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::rec_wy), {nullptr, rec_wy_dx}}, {step_key(ops::linear_dw, tensors::rec_wy), {nullptr, rec_wy_dw}},
      {step_key(ops::gelu, tensors::rec_gate), {fused, fused}},  // inside "mul rec.gated" (gelu(gy) ⊙ h)
      {step_key(ops::linear, tensors::rec_wx), {rec_wx_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::rec_wx), {nullptr, rec_wx_dx}}, {step_key(ops::linear_dw, tensors::rec_wx), {nullptr, rec_wx_dw}},
      {step_key(ops::send_recv, tensors::rec_conv_halo), {conv_halo_fwd, conv_halo_bwd}},
      {step_key(ops::conv1d, tensors::rec_conv), {conv_fwd, conv_bwd}},
      {step_key(ops::linear, tensors::rec_gate_a), {gate_a_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::rec_gate_a), {nullptr, gate_a_dx}}, {step_key(ops::linear_dw, tensors::rec_gate_a), {nullptr, gate_a_dw}},
      {step_key(ops::linear, tensors::rec_gate_x), {gate_x_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::rec_gate_x), {nullptr, gate_x_dx}}, {step_key(ops::linear_dw, tensors::rec_gate_x), {nullptr, gate_x_dw}},
      {step_key(ops::rglru_decay, tensors::rec_decay), {fused, fused}},  // inside the fused scan (σ, softplus, √(1−a²))
      {step_key(ops::rglru_scan, tensors::rec_scan), {scan_fwd, scan_bwd}},
      {step_key(ops::send_recv, tensors::scan_carry), {carry_any<true, true>, carry_any<true, false>}},
      {step_key(ops::all_gather, tensors::scan_carry), {carry_any<false, true>, carry_any<false, false>}},
      {step_key(ops::scan_carry_fix, tensors::rec_scan), {carry_fix_fwd, carry_fix_bwd}},
      {step_key(ops::mul, tensors::rec_gated), {rec_gated_fwd, rec_gated_bwd}},
      {step_key(ops::linear, tensors::rec_wo), {rec_wo_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::rec_wo), {nullptr, rec_wo_dx}}, {step_key(ops::linear_dw, tensors::rec_wo), {nullptr, rec_wo_dw}},
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
  };
  return t;
}

}  // namespace

bool has_handler(const Step& st, bool backward) {
  const auto it = table().find(step_key(st.op, st.name));
  if (it == table().end()) return false;
  return (backward && st.phase == Phase::backward ? it->second.bwd : it->second.fwd) != nullptr;
}

std::vector<Executor::Bound> Executor::bind(const std::vector<Step>& steps, bool backward) const {
  std::vector<Bound> out;
  for (const Step& st : steps) {
    const std::string key = step_key(st.op, st.name);
    auto it = table().find(key);
    const bool bwd = backward && st.phase == Phase::backward;  // recompute steps rerun the forward handler
    Handler h = it == table().end() ? nullptr : bwd ? it->second.bwd : it->second.fwd;
    if (!h)
      throw std::logic_error(std::string("executor: no kernel for the ") + to_string(st.phase) + " step '" + st.op + " " +
                             st.name + "' (layer " + std::to_string(st.layer) + ") of " + to_string(slots_[0]->m.family) +
                             " under this plan");
    out.push_back({h, &st});
  }
  return out;
}

namespace {
// Sizes every buffer of one activation slot for this rank's stage.
void init_state(State& s, const ModelSpec& m, const Plan& p, const StepProgram& prog, const std::vector<Range>& zero3_parts) {
  s.zero3 = zero3_parts;
  s.stage = prog.coord[static_cast<int>(Axis::pipeline)];
  s.chunks = prog.chunk_layers;
  s.t = p.mesh[Axis::tensor];
  s.tcoord = prog.coord[static_cast<int>(Axis::tensor)];
  s.sp = p.mesh[Axis::sequence];
  s.s = prog.coord[static_cast<int>(Axis::sequence)];
  s.B = p.micro_batch;
  s.T = p.local_tokens();
  s.M = s.B * s.T;
  s.rs = p.tensor_comm == TensorComm::rs_ag && s.t > 1;
  s.Ms = s.rs ? s.M / s.t : s.M;
  s.m0 = s.rs ? s.tcoord * s.Ms : 0;
  s.D = m.width;
  s.Dl = m.width / s.t;
  s.V = m.vocab;
  const Range vr = split_range(m.vocab, s.t, s.tcoord);
  s.v0 = vr.begin;
  s.Vl = vr.size();
  s.R = m.recurrent_width / s.t;
  s.F = m.mlp_width / s.t;
  s.H = m.heads ? m.heads / s.t : 0;
  s.KV = m.kv_heads >= s.t ? m.kv_heads / s.t : 1;  // replicated K/V heads: the one this rank's query heads share
  s.N = m.head_dim;
  s.rot = static_cast<i64>(std::lround(m.rope_fraction * static_cast<double>(m.head_dim)));
  s.Kc = m.conv_width;
  s.W = m.window;
  s.Hb = m.gate_blocks ? m.gate_blocks / s.t : 0;
  // K/V rows before the local ones: the window's halo (local attention) or every earlier shard (ring)
  s.halo = s.W > 0 ? kv_halo(s.W, s.T, s.s, s.sp).received : s.s * s.T;
  s.escale = m.scale_embedding ? static_cast<float>(std::sqrt(static_cast<double>(m.width))) : 1.0f;
  s.pdrop = m.family == Family::transformer ? m.dropout : 0.0;  // lower.cpp emits dropout steps for transformers only

  const auto sz = [](i64 n) { return static_cast<std::size_t>(n); };
  const i64 M = s.M, D = s.D;
  s.xs.assign(sz(m.depth + 1), Vec(sz(s.Ms * D)));  // the residual stream: this rank's tokens under rs_ag
  s.dxs = s.xs;
  for (auto* v : {&s.epart, &s.nf, &s.dnf}) v->assign(sz(M * D), 0.0f);
  if (s.rs) {
    for (auto* v : {&s.nf_loc, &s.dnf_loc}) v->assign(sz(s.Ms * D), 0.0f);
    s.demb.assign(sz(M * D), 0.0f);
  }
  s.rstdf.assign(sz(M), 0.0f);
  s.logits.assign(sz(M * s.Vl), 0.0f);
  s.dlogits = s.logits;
  s.stats.assign(sz(2 * M), 0.0f);
  s.losses.assign(sz(M), 0.0f);
  s.dlosses.assign(sz(M), 1.0f / static_cast<float>(s.B * p.seq_len));
  if (m.is_rwkv()) {
    for (auto* v : {&s.emb, &s.demb}) v->assign(sz(M * D), 0.0f);
    if (s.rs) s.demb_loc.assign(sz(s.Ms * D), 0.0f);
    for (auto* v : {&s.emean, &s.erstd, &s.meanf}) v->assign(sz(M), 0.0f);
  }
  const bool layernorm = m.is_rwkv() || m.norm == NormKind::layernorm;  // LayerNorm statistics (mean)
  if (layernorm) s.meanf.assign(sz(M), 0.0f);
  s.emb_out = m.is_rwkv() ? s.emb.data() : s.xs[0].data();
  s.L.resize(sz(m.depth));
  const i64 Te = s.halo + s.T;
  for (const Range& chunk : s.chunks)
  for (i64 l = chunk.begin; l < chunk.end; ++l) {
    LayerBufs& b = s.L[sz(l)];
    b.kind = temporal_kind(m, l);
    for (auto* v : {&b.n1, &b.tpart, &b.tout_s, &b.n2, &b.ypart, &b.y_s, &b.dy, &b.dn2, &b.dtout, &b.dn1})
      v->assign(sz(M * D), 0.0f);
    for (auto* v : {&b.x_mid, &b.dx_mid}) v->assign(sz(s.Ms * D), 0.0f);
    if (s.rs)
      for (auto* v : {&b.n1_loc, &b.n2_loc, &b.dn1_loc, &b.dn2_loc, &b.dtout_loc, &b.dy_loc}) v->assign(sz(s.Ms * D), 0.0f);
    b.rstd1.assign(sz(M), 0.0f);
    b.rstd2 = b.rstd1;
    for (auto* v : {&b.h1, &b.h2, &b.gm, &b.dgm, &b.dh1, &b.dh2}) v->assign(sz(M * s.F), 0.0f);
    b.tout = s.t > 1 ? b.tout_s.data() : b.tpart.data();
    b.y = s.t > 1 ? b.y_s.data() : b.ypart.data();
    b.tres = b.tout;
    b.yres = b.y;
    if (s.pdrop > 0) {
      for (auto* v : {&b.tdrop, &b.ydrop}) v->assign(sz(s.Ms * D), 0.0f);
      for (auto* v : {&b.tmask, &b.ymask}) v->assign(sz(s.Ms * D), 0);
      b.tres = b.tdrop.data();
      b.yres = b.ydrop.data();
    }
    if (layernorm) for (auto* v : {&b.mean1, &b.mean2}) v->assign(sz(M), 0.0f);
    if (m.is_rwkv()) {
      const i64 Dl = s.Dl;
      for (auto* v : {&b.mean1, &b.mean2}) v->assign(sz(M), 0.0f);
      for (auto* v : {&b.xs3, &b.dxs3}) v->assign(sz(3 * M * D), 0.0f);
      for (auto* v : {&b.r, &b.k, &b.v, &b.wkv, &b.o, &b.dr, &b.dk, &b.dv, &b.dwkv, &b.do_, &b.cr, &b.dcr, &b.cvl, &b.cg, &b.dcvl_s})
        v->assign(sz(M * Dl), 0.0f);
      for (auto* v : {&b.cxk, &b.cxr, &b.dcxk, &b.dcxr, &b.cv_s, &b.dcv, &b.cgath_s}) v->assign(sz(M * D), 0.0f);
      for (auto* v : {&b.ck, &b.ch, &b.dck, &b.dch}) v->assign(sz(M * s.F), 0.0f);
      b.cv = s.t > 1 ? b.cv_s.data() : b.ypart.data();
      b.cgath = s.t > 1 ? b.cgath_s.data() : b.cg.data();
      b.dcvl = s.t > 1 ? b.dcvl_s.data() : b.dcv.data();
      for (auto* v : {&b.shift_prev, &b.dshift_prev, &b.cprev, &b.dcprev}) v->assign(sz(s.B * D), 0.0f);
      b.wkv_loc.assign(sz(M * Dl), 0.0f);
      const WkvCarryElems wc = wkv_carry(s).n;
      for (auto* v : {&b.st_loc, &b.st_in, &b.st_fin}) v->assign(sz(wc.state), 0.0f);
      for (auto* v : {&b.dloc, &b.dst_out}) v->assign(sz(wc.grad), 0.0f);
      b.logdec.assign(sz(wc.summary), 0.0f);
      if (p.carry == CarryScheme::allgather && s.sp > 1) b.fold.assign(sz(s.sp * (wc.state + wc.summary)), 0.0f);
      if (m.family == Family::rwkv6) {
        const i64 r5 = 5 * m.lora_rank_mix, rw = m.lora_rank_decay, Hh = Dl / m.head_size;
        for (auto* v : {&b.xx, &b.xxx, &b.dxx, &b.dxxx}) v->assign(sz(M * D), 0.0f);
        for (auto* v : {&b.dd, &b.logw, &b.gg, &b.gn, &b.ddd, &b.dlogw, &b.dgg, &b.dgn}) v->assign(sz(M * Dl), 0.0f);
        for (auto* v : {&b.lz, &b.ltz, &b.dlz, &b.dltz}) v->assign(sz(M * r5), 0.0f);
        for (auto* v : {&b.mz, &b.xs5, &b.dmz, &b.dxs5}) v->assign(sz(5 * M * D), 0.0f);
        for (auto* v : {&b.dza, &b.dlt, &b.ddza, &b.ddlt}) v->assign(sz(M * rw), 0.0f);
        for (auto* v : {&b.gmean, &b.grstd}) v->assign(sz(M * Hh), 0.0f);
      }
    } else if (b.kind == Temporal::recurrent) {
      for (auto* v : {&b.gy, &b.u, &b.cu, &b.ga, &b.gx, &b.hs0, &b.hs_s, &b.pr, &b.dpr, &b.dgy, &b.dhs, &b.dcu, &b.dga, &b.dgx, &b.du})
        v->assign(sz(M * s.R), 0.0f);
      for (auto* v : {&b.h_out, &b.decay, &b.h_in, &b.dh_out, &b.dh_loc}) v->assign(sz(s.B * s.R), 0.0f);
      for (auto* v : {&b.conv_state, &b.dconv_state}) v->assign(sz(s.B * (s.Kc - 1) * s.R), 0.0f);
      b.hs = s.sp > 1 ? b.hs_s.data() : b.hs0.data();
    } else {
      const i64 qw = s.H * s.N, kw = s.KV * s.N;
      for (auto* v : {&b.qr, &b.a, &b.dqr}) v->assign(sz(M * qw), 0.0f);
      for (auto* v : {&b.kr, &b.v, &b.dkr, &b.dv}) v->assign(sz(M * kw), 0.0f);
      for (auto* v : {&b.q_ext, &b.a_ext, &b.da_ext, &b.dq_ext}) v->assign(sz(s.B * Te * qw), 0.0f);
      for (auto* v : {&b.k_ext, &b.v_ext, &b.dk_ext, &b.dv_ext}) v->assign(sz(s.B * Te * kw), 0.0f);
      b.lse_ext.assign(sz(s.B * s.H * Te), 0.0f);
      if (p.attention == AttentionKernel::materialized) {
        for (auto* v : {&b.pm, &b.dpm}) v->assign(sz(s.B * s.H * s.T * Te), 0.0f);
        if (s.pdrop > 0) {
          b.pd.assign(sz(s.B * s.H * s.T * Te), 0.0f);
          b.pmask.assign(sz(s.B * s.H * s.T * Te), 0);
        }
      }
      b.reset_ext.assign(sz(s.B * Te), 0);
      for (i64 r = 0; r < s.B; ++r) {  // every sequence is one document starting at global position 0
        const i64 g0 = s.s * s.T - s.halo;
        if (g0 <= 0) b.reset_ext[sz(r * Te - g0)] = 1;
      }
    }
  }
}

}  // namespace

Executor::Executor(const ModelSpec& m, const Plan& p, const StepProgram& prog, const ShardLayout& lay, MeshComms comms,
                   std::vector<Range> zero3_parts)
    : prog_(prog) {
  // one activation set per micro-batch the stage's schedule keeps alive at once (micro-batches start
  // and finish in order, so slot micro mod n is free when micro starts)
  const std::int64_t pp = p.mesh[Axis::pipeline], v = static_cast<std::int64_t>(prog.chunk_layers.size());
  const std::int64_t n = std::max<std::int64_t>(
      1, live_micro_batches(pipeline_schedule(p.schedule, prog.micro_batches, pp, v, prog.coord[static_cast<int>(Axis::pipeline)])));
  for (std::int64_t i = 0; i < n; ++i) {
    slots_.push_back(std::make_unique<State>(m, p, lay, comms));
    init_state(*slots_.back(), m, p, prog, zero3_parts);
  }
  fwd_ = bind(prog.forward, false);
  bwd_ = bind(prog.backward, true);
  last_of_layer_.assign(bwd_.size(), 0);
  std::vector<char> seen(static_cast<std::size_t>(std::max<std::int64_t>(m.depth, 0)), 0);
  for (std::size_t i = 0; i < bwd_.size(); ++i) {
    const std::int32_t l = bwd_[i].step->layer;
    if (l < 0) continue;
    const bool run_starts = i == 0 || bwd_[i - 1].step->layer != l;
    if (run_starts && seen[static_cast<std::size_t>(l)]) layers_contiguous_ = false;  // the layer comes back
    seen[static_cast<std::size_t>(l)] = 1;
    last_of_layer_[i] = i + 1 == bwd_.size() || bwd_[i + 1].step->layer != l;
  }
}

namespace {
// Activations stored in bf16 (plan `dtypes: activations: bf16`): the residual stream — each
// layer's input xs[l], which backward and recompute read, the blocks add into and pipeline stages
// exchange — and its gradient dxs[l] are rounded to bf16 (kernels/bf16.hpp) at every layer
// boundary a pass crosses; the kernels inside a layer compute and keep fp32. Parameters arrive as
// bf16 values already (the runner's working copy); messages travel in bf16 (wire.hpp).
struct LayerBoundaries {
  std::vector<Vec>& stream;  // xs (forward) or dxs (backward)
  bool bf16;
  std::int32_t current = -1;
  void store(std::size_t i) {
    if (bf16) kernels::round_bf16(stream[i].data(), static_cast<i64>(stream[i].size()));
  }
  // Before running a step of layer `l` (−1 outside the layers); forward: l's input xs[l] and the
  // previous layer's output; backward (reverse order): dxs[l + 1] arriving, dxs[l] leaving.
  void enter(std::int32_t l, bool forward) {
    if (l == current) return;
    if (current >= 0) store(static_cast<std::size_t>(forward ? current + 1 : current));
    if (l >= 0) store(static_cast<std::size_t>(forward ? l : l + 1));
    current = l;
  }
  void done(bool forward) { enter(-1, forward); }
};
}  // namespace

Executor::State& Executor::slot(std::int64_t micro) {
  State& s = *slots_[static_cast<std::size_t>(micro % static_cast<std::int64_t>(slots_.size()))];
  mpi::Comm::test_all(s.pending);  // the sends copied their data: only free what has gone
  if (s.pending.empty()) s.send_bufs.clear();
  return s;
}

std::span<const float> Executor::head_probs(std::int64_t micro) {
  const State& s = slot(micro);
  return {s.logits.data(), s.logits.size()};
}

void Executor::finish() {
  for (auto& s : slots_) {
    mpi::Comm::wait_all(s->pending);
    s->send_bufs.clear();
  }
}

Range Executor::chunk_range(const std::vector<Range>& chunks, std::size_t steps, std::int64_t chunk) const {
  if (chunk < 0) {
    if (chunks.size() > 1) throw std::logic_error("executor: an interleaved stage runs one model chunk per pass");
    return {0, static_cast<std::int64_t>(steps)};
  }
  if (chunk >= static_cast<std::int64_t>(chunks.size()))
    throw std::logic_error("executor: chunk " + std::to_string(chunk) + " of a stage with " + std::to_string(chunks.size()));
  return chunks[static_cast<std::size_t>(chunk)];
}

double Executor::forward(std::int64_t micro, float* params, const std::int32_t* tokens, const std::int32_t* targets,
                         Trace* tr, const BatchIndex& ix, std::int64_t chunk) {
  const Range run = chunk_range(prog_.forward_chunk, fwd_.size(), chunk);
  State& s = slot(micro);
  s.chunk = std::max<std::int64_t>(0, chunk);
  s.ix = ix;
  s.row_seq.resize(static_cast<std::size_t>(s.Ms));
  s.row_pos.resize(static_cast<std::size_t>(s.Ms));
  for (i64 r = 0; r < s.Ms; ++r) {  // residual-region row r is micro-batch row m0 + r: sequence b, local token t
    const i64 b = (s.m0 + r) / s.T, t = (s.m0 + r) % s.T;
    s.row_seq[static_cast<std::size_t>(r)] = ix.first_sequence + b;
    s.row_pos[static_cast<std::size_t>(r)] = s.s * s.T + t;
  }
  s.P = s.Pw = params;
  const auto n = static_cast<std::size_t>(s.M);
  s.tokens.assign(tokens, tokens + n);
  s.targets.assign(targets, targets + n);
  s.reset.assign(n, 0);
  s.pos.assign(n, 0);
  for (i64 b = 0; b < s.B; ++b)
    for (i64 t = 0; t < s.T; ++t) {
      const i64 g = s.s * s.T + t;  // global position in the sequence
      s.pos[static_cast<std::size_t>(b * s.T + t)] = static_cast<std::int32_t>(g);
      s.reset[static_cast<std::size_t>(b * s.T + t)] = g == 0;
    }
  bool loss = false;  // the pass ran the head: its token losses are this micro-batch's
  LayerBoundaries stored{s.xs, s.p.act_dtype == DType::bf16};
  for (i64 i = run.begin; i < run.end; ++i) {
    const Bound& b = fwd_[static_cast<std::size_t>(i)];
    stored.enter(b.step->layer, true);
    const mpi::Traffic before = mpi::traffic();
    {
      Trace::Scope sc(tr, to_string(b.step->phase), b.step->op, b.step->name);
      b.fn(s, *b.step);
    }
    trace_step_bytes(tr, *b.step, before);
    loss = loss || std::string_view(b.step->op) == ops::softmax_xent;
  }
  stored.done(true);
  double sum = 0;
  if (loss)
    for (float l : s.losses) sum += l;
  return sum;
}

void Executor::backward(std::int64_t micro, float* params, float* grads, Trace* tr,
                        const std::function<void(std::int32_t)>& layer_done, std::int64_t chunk) {
  const Range run = chunk_range(prog_.backward_chunk, bwd_.size(), chunk);
  State& s = slot(micro);
  s.chunk = std::max<std::int64_t>(0, chunk);
  s.P = s.Pw = params;
  s.G = grads;
  zero(s.dxs.back());  // the gradient arriving at the top (each layer clears its own buffers: clear_grad_buffers)
  for (auto& b : s.L) b.regathers = 0;
  LayerBoundaries stored{s.dxs, s.p.act_dtype == DType::bf16};
  for (auto i = static_cast<std::size_t>(run.begin); i < static_cast<std::size_t>(run.end); ++i) {
    const Bound& b = bwd_[i];
    stored.enter(b.step->layer, false);
    const mpi::Traffic before = mpi::traffic();
    {
      Trace::Scope sc(tr, to_string(b.step->phase), b.step->op, b.step->name);
      b.fn(s, *b.step);
    }
    trace_step_bytes(tr, *b.step, before);
    if (layer_done && layers_contiguous_ && last_of_layer_[i]) layer_done(b.step->layer);
  }
  stored.done(false);
}

}  // namespace scanshard::train
