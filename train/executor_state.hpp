// train/executor_state.hpp — private to train/: the Executor's State (every buffer of one
// micro-batch), the helpers the handler files share, and the handler table they register into.
// For: executor.cpp (sizing, binding, running) and the handler files exec_common.cpp (embedding,
// head, norms, residuals, gated MLP, ZeRO-3 gathers, pipeline transfers, rs_ag),
// exec_recurrent.cpp (Griffin/Hawk RG-LRU block), exec_attention.cpp (attention, MQA, the
// transformer's MLP variants, positions and dropout), exec_rwkv4.cpp (RWKV-4 time mix, the RWKV
// channel mix, the WKV carry of both generations), exec_rwkv6.cpp (RWKV-6 time mix).
// Not for: anything outside train/ (the public interface is executor.hpp).
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "train/executor.hpp"
#include "train/wire.hpp"

namespace scanshard::train {

namespace K = scanshard::kernels::fast;
using Vec = kernels::AlignedVec;  // whole cache lines: see kernels.hpp


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
  // RWKV under sequence sharding: token-shift halos, WKV-4 chunk states [3,B,Dl], their gradients [2,B,Dl]
  Vec shift_prev, dshift_prev, cprev, dcprev, wkv_loc, st_loc, st_in, st_fin, logdec, dloc, dst_out;
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

namespace exec {

using State = Executor::State;
inline float* nul() { return nullptr; }
inline void zero(Vec& v) { std::fill(v.begin(), v.end(), 0.0f); }
inline void add(float* out, const float* a, const float* b, i64 n) { for (i64 i = 0; i < n; ++i) out[i] = a[i] + b[i]; }

inline int left(const State& s) { return s.s > 0 ? static_cast<int>(s.s - 1) : MPI_PROC_NULL; }
inline int right(const State& s) { return s.s + 1 < s.sp ? static_cast<int>(s.s + 1) : MPI_PROC_NULL; }

// The model's norm epsilon (RMSNorm and LayerNorm alike).
inline float eps_of(const State& s) { return static_cast<float>(s.m.norm_eps); }
inline LayerBufs& lb(State& s, const Step& st) { return s.L[static_cast<std::size_t>(st.layer)]; }
inline const float* x_in(const State& s, const Step& st) { return s.xs[static_cast<std::size_t>(st.layer)].data(); }
// A norm's output and the gradient its backward reads: this rank's tokens under rs_ag.
inline float* n1_out(State& s, LayerBufs& b) { return s.rs ? b.n1_loc.data() : b.n1.data(); }
inline float* n2_out(State& s, LayerBufs& b) { return s.rs ? b.n2_loc.data() : b.n2.data(); }
inline const float* dn1_in(State& s, LayerBufs& b) { return s.rs ? b.dn1_loc.data() : b.dn1.data(); }
inline const float* dn2_in(State& s, LayerBufs& b) { return s.rs ? b.dn2_loc.data() : b.dn2.data(); }

namespace KD = scanshard::kernels;
inline i64 heads6(const State& s) { return s.Dl / s.m.head_size; }  // this tensor rank's WKV heads
// WKV chunk-state carry of either generation (DESIGN §4). RWKV-4: a state is the kernel's scaled
// (α, β, p) form [3,B,Dl], its gradient [2,B,Dl], the decay summary [Dl]; composing gradients also
// needs the shard's incoming and final states (aux). RWKV-6: a state is the matrix S [B,H,N,N] of
// this rank's heads, its gradient the same, the summary log diag(Π w) [B,H,N]; both compose
// linearly (S_out = diag(Π w) S_in + S_loc, dS_in = diag(Π w) dS_out + dS_loc). The output is
// not linear in the state for RWKV-4, so for both the fix re-runs the chunk from its true state.
struct WkvCarry {
  bool six;
  i64 state, grad, summary, aux;  // elements per shard: state, its gradient, decay summary, aux states
  void combine(const State& s, float* out, const float* in, const float* local, const float* logdec) const {
    if (six) kernels::wkv6_state_combine(out, in, local, logdec, s.B, heads6(s), s.m.head_size);
    else kernels::wkv4_state_combine(out, in, local, logdec, s.B, s.Dl);
  }
  // d_in = dL/d(incoming state) of a shard, from its d_out, its own part dloc, its aux states
  // (st_in, st_fin; RWKV-4 only) and its summary.
  void grad_combine(const State& s, float* d_in, const float* d_out, const float* dloc, const float* st_in,
                    const float* st_fin, const float* logdec) const {
    if (six) kernels::wkv6_grad_state_combine(d_in, d_out, dloc, logdec, s.B, heads6(s), s.m.head_size);
    else kernels::wkv4_grad_state_combine(d_in, d_out, dloc, st_in, st_fin, logdec, s.B, s.Dl);
  }
};
inline WkvCarry wkv_carry(const State& s) {
  if (s.m.family == Family::rwkv6) {
    const i64 st = s.B * s.Dl * s.m.head_size;
    return {true, st, st, s.B * s.Dl, 0};
  }
  return {false, 3 * s.B * s.Dl, 2 * s.B * s.Dl, s.Dl, 3 * s.B * s.Dl};
}

// ---- shared helpers (exec_common.cpp) -------------------------------------------------------------

// The step's communicator on axis `a`, its messages in the dtype the lowering prices (wire.hpp).
Wire need(const State& s, Axis a, const Step& st);
// out = Σ over the step's axis of in (out-of-place, so forward handlers stay idempotent).
void allreduce_into(const State& s, const Step& st, const float* in, float* out, i64 n);
void allreduce_inplace(const State& s, const Step& st, float* buf, i64 n);
// Sends `send` to the right neighbour and receives `recv` from the left one (zeros on shard 0).
void shift_right(const State& s, const Step& st, const Vec& send, Vec& recv);
// The gradient of a halo goes back: send `send` left, receive `recv` from the right (zeros on the last shard).
void shift_left(const State& s, const Step& st, const Vec& send, Vec& recv);
// Rows [T−n, T) of x [B, T, C] → out [B, n, C]; with `reset`, entries followed by a document
// start inside the chunk are zeroed (they are invisible to any later token, conv1d.hpp).
Vec last_rows(const State& s, const float* x, i64 n, i64 C, bool masked);
void add_last_rows(const State& s, float* x, const Vec& in, i64 n, i64 C);

// ---- handlers one family's table borrows from another's file --------------------------------------

void mlp_residual_bwd(State& s, const Step& st);  // exec_common.cpp: also the RWKV channel mix's residual
void fused(State&, const Step&);                  // exec_common.cpp: work done inside a neighbouring step's kernel
// exec_rwkv4.cpp: the WKV chunk-state carry ("scan.carry" of an RWKV layer, exec_recurrent.cpp's carry_any)
void wkv_carry_ring_fwd(State& s, const Step& st);
void wkv_carry_gather_fwd(State& s, const Step& st);
void wkv_carry_ring_bwd(State& s, const Step& st);
void wkv_carry_gather_bwd(State& s, const Step& st);
// exec_rwkv6.cpp: RWKV-6's handlers of the steps both generations name alike (exec_rwkv4.cpp's by_family)
void r6_shift_fwd(State& s, const Step& st);
void r6_shift_bwd(State& s, const Step& st);
template <int J>  // 1 k, 2 v, 3 r (4 g stays in exec_rwkv6.cpp)
void r6_proj_fwd(State& s, const Step& st);
template <int J>
void r6_proj_dx(State& s, const Step& st);
template <int J>
void r6_proj_dw(State& s, const Step& st);

// ---- the handler table ------------------------------------------------------------------------------

// What a step (op, name) runs in a forward pass and in a backward pass (nullptr: nothing).
struct Entry { Executor::Handler fwd; Executor::Handler bwd; };
using Table = std::map<std::string, Entry, std::less<>>;
// Adds `entries` to `t`; a key two files register is a logic_error naming it.
void add_entries(Table& t, std::initializer_list<Table::value_type> entries);
// Each handler file's entries (executor.cpp's table() calls all five).
void add_common_handlers(Table& t);
void add_recurrent_handlers(Table& t);
void add_attention_handlers(Table& t);
void add_rwkv4_handlers(Table& t);
void add_rwkv6_handlers(Table& t);

}  // namespace exec
}  // namespace scanshard::train
