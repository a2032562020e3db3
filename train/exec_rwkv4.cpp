// train/exec_rwkv4.cpp — the Executor's handlers of the RWKV-4 time mix, the RWKV channel mix (both
// generations), the embedding's LayerNorm, the token-shift halos and the WKV chunk-state carry
// of both generations under sequence sharding.
// See executor.hpp for what the Executor does and executor_state.hpp for the State.

#include <algorithm>
#include <initializer_list>

#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train::exec {

namespace {
// ---- RWKV-4 (DESIGN §3.2): D/t channels of r, k, v, WKV and the gate per tensor rank -----------

// The embedding's LayerNorm on this rank's res_rows tokens (all rows without rs_ag): under rs_ag the
// reduce-scatter leaves them in emb and the norm's input gradient goes to demb_loc, which the
// embedding's all-gather turns into every token's gradient (demb).
void embed_norm_fwd(State& s, const Step&) {
  K::layer_norm_forward(s.xs[0].data(), s.embed_norm_mean.data(), s.embed_norm_rstd.data(), s.emb.data(),
                        s.par(-1, Param::embed_norm_scale), s.par(-1, Param::embed_norm_bias), s.res_rows, s.D, eps_of(s));
}
void embed_norm_bwd(State& s, const Step&) {
  Vec& d = s.rs_ag ? s.demb_loc : s.demb;
  zero(d);
  K::layer_norm_backward(d.data(), s.grad(-1, Param::embed_norm_scale), s.grad(-1, Param::embed_norm_bias), s.dxs[0].data(),
                         s.embed_norm_mean.data(), s.embed_norm_rstd.data(), s.emb.data(), s.par(-1, Param::embed_norm_scale),
                         s.res_rows, s.D);
}
constexpr Param kTmMu[3] = {Param::tm_mu_r, Param::tm_mu_k, Param::tm_mu_v};
void tm_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  for (int j = 0; j < 3; ++j)
    K::token_shift_forward(b.mix3.data() + j * s.rows * s.D, b.n1.data(), s.sp > 1 ? b.tm_shift_prev.data() : nullptr,
                           s.par(st.layer, kTmMu[j]), s.B, s.T, s.D);
}
void tm_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  for (int j = 0; j < 3; ++j)
    K::token_shift_backward(b.dn1.data(), s.sp > 1 ? b.dtm_shift_prev.data() : nullptr, s.grad(st.layer, kTmMu[j]),
                            b.dmix3.data() + j * s.rows * s.D, b.n1.data(), s.sp > 1 ? b.tm_shift_prev.data() : nullptr,
                            s.par(st.layer, kTmMu[j]), s.B, s.T, s.D);
}
// Parameters whole on every tensor rank that see only this rank's part of their gradient (their
// consumers are column-split): the gradients are summed over the tensor axis.
void replicated_grads_bwd(State& s, const Step& st, std::initializer_list<Param> names) {
  for (const Param n : names) allreduce_inplace(s, st, s.grad(st.layer, n), s.param_index->count(st.layer, n));
}
// RWKV-4: the three token-shift mixes. RWKV-6: μ_x, μ_□, the shared LoRA A and B and the decay LoRA A.
void tm_mu_grads_bwd(State& s, const Step& st) {
  if (s.m.family == Family::rwkv6)
    return replicated_grads_bwd(s, st, {Param::tm_mu_x, Param::tm_mu, Param::tm_lora_a, Param::tm_lora_b, Param::tm_decay_a});
  replicated_grads_bwd(s, st, {kTmMu[0], kTmMu[1], kTmMu[2]});
}
template <int J>  // 0 r, 1 k, 2 v
void tm_proj_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Param w = J == 0 ? Param::tm_wr : J == 1 ? Param::tm_wk : Param::tm_wv;
  float* out = J == 0 ? b.r.data() : J == 1 ? b.k.data() : b.v.data();
  K::linear_forward(out, b.mix3.data() + J * s.rows * s.D, s.par(st.layer, w), nullptr, s.rows, s.D, s.width_local);
}
template <int J>
void tm_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Param w = J == 0 ? Param::tm_wr : J == 1 ? Param::tm_wk : Param::tm_wv;
  const float* dy = J == 0 ? b.dr.data() : J == 1 ? b.dk.data() : b.dv.data();
  K::linear_backward(b.dmix3.data() + J * s.rows * s.D, nul(), nul(), dy, b.mix3.data() + J * s.rows * s.D, s.par(st.layer, w),
                     s.rows, s.D, s.width_local);
}
template <int J>
void tm_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Param w = J == 0 ? Param::tm_wr : J == 1 ? Param::tm_wk : Param::tm_wv;
  const float* dy = J == 0 ? b.dr.data() : J == 1 ? b.dk.data() : b.dv.data();
  K::linear_backward(nul(), s.grad(st.layer, w), nul(), dy, b.mix3.data() + J * s.rows * s.D, s.par(st.layer, w), s.rows, s.D,
                     s.width_local);
}
// The WKV-4 forward writes its checkpoints (b.wkv_ck) for the backward, from the state the backward
// starts from: the zero state here (on the first sequence shard only: it is the true one there),
// the true incoming state in the carry fix's re-run (the other shards; a remat re-run of this step
// alone then leaves them intact).
static_assert(kernels::wkv4_checkpoint_floats(3, 50, 7) == wkv4_checkpoint_elems(3, 50, 7) &&
                  kernels::kWkv4CheckpointTokens == kWkv4CheckpointTokens,
              "program/lower.hpp prices the checkpoints kernels/rwkv4.hpp writes");
void wkv4_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {  // chunk-local from the zero state; its state and decay summary for the carry
    kernels::wkv4_chunk_forward(b.wkv_loc.data(), b.st_loc.data(), b.logdec.data(), b.k.data(), b.v.data(),
                                s.par(st.layer, Param::tm_decay), s.par(st.layer, Param::tm_bonus), nullptr, s.B, s.T,
                                s.width_local, s.sp_rank == 0 ? b.wkv_ck.data() : nullptr);
    return;
  }
  K::wkv4_forward(b.wkv.data(), nul(), b.k.data(), b.v.data(), s.par(st.layer, Param::tm_decay), s.par(st.layer, Param::tm_bonus),
                  nullptr, s.B, s.T, s.width_local, b.wkv_ck.data());
}
void wkv4_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {
    kernels::wkv4_chunk_backward(b.dk.data(), b.dv.data(), s.grad(st.layer, Param::tm_decay), s.grad(st.layer, Param::tm_bonus),
                                 nullptr, b.dwkv.data(), s.sp_rank + 1 < s.sp ? b.dst_out.data() : nullptr, b.k.data(),
                                 b.v.data(), s.par(st.layer, Param::tm_decay), s.par(st.layer, Param::tm_bonus),
                                 s.sp_rank > 0 ? b.st_in.data() : nullptr, s.B, s.T, s.width_local, b.wkv_ck.data());
    return;
  }
  K::wkv4_backward(b.dk.data(), b.dv.data(), s.grad(st.layer, Param::tm_decay), s.grad(st.layer, Param::tm_bonus), nul(),
                   b.dwkv.data(), nullptr, b.k.data(), b.v.data(), s.par(st.layer, Param::tm_decay),
                   s.par(st.layer, Param::tm_bonus), nullptr, s.B, s.T, s.width_local, b.wkv_ck.data());
}
void tm_gated_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::sigmoid_mul_forward(b.o.data(), b.r.data(), b.wkv.data(), s.rows * s.width_local);
}
void tm_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::sigmoid_mul_backward(b.dr.data(), b.dwkv.data(), b.do_.data(), b.r.data(), b.wkv.data(), s.rows * s.width_local);
}
void tm_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.temporal_partial.data(), b.o.data(), s.par(st.layer, Param::tm_wo), nullptr, s.rows, s.width_local, s.D);
}
void tm_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.do_.data(), nul(), nul(), b.dtemporal_out.data(), b.o.data(), s.par(st.layer, Param::tm_wo), s.rows,
                     s.width_local, s.D);
}
void tm_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::tm_wo), nul(), b.dtemporal_out.data(), b.o.data(),
                     s.par(st.layer, Param::tm_wo), s.rows, s.width_local, s.D);
}
// Channel mix: Wk column split (F/t), Wv row split + all-reduce, Wr column split (D/t), the gate on
// the local D/t slice, then gathered.
void cm_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const float* prev = s.sp > 1 ? b.cm_shift_prev.data() : nullptr;
  K::token_shift_forward(b.cm_mix_k.data(), b.n2.data(), prev, s.par(st.layer, Param::cm_mu_k), s.B, s.T, s.D);
  K::token_shift_forward(b.cm_mix_r.data(), b.n2.data(), prev, s.par(st.layer, Param::cm_mu_r), s.B, s.T, s.D);
}
void cm_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const float* prev = s.sp > 1 ? b.cm_shift_prev.data() : nullptr;
  float* dprev = s.sp > 1 ? b.dcm_shift_prev.data() : nullptr;
  K::token_shift_backward(b.dn2.data(), dprev, s.grad(st.layer, Param::cm_mu_k), b.dcm_mix_k.data(), b.n2.data(), prev,
                          s.par(st.layer, Param::cm_mu_k), s.B, s.T, s.D);
  K::token_shift_backward(b.dn2.data(), dprev, s.grad(st.layer, Param::cm_mu_r), b.dcm_mix_r.data(), b.n2.data(), prev,
                          s.par(st.layer, Param::cm_mu_r), s.B, s.T, s.D);
}
void cm_mu_grads_bwd(State& s, const Step& st) { replicated_grads_bwd(s, st, {Param::cm_mu_k, Param::cm_mu_r}); }
void cm_wk_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.cm_key.data(), b.cm_mix_k.data(), s.par(st.layer, Param::cm_wk), nullptr, s.rows, s.D, s.mlp_local);
}
void cm_wk_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dcm_mix_k.data(), nul(), nul(), b.dcm_key.data(), b.cm_mix_k.data(), s.par(st.layer, Param::cm_wk), s.rows,
                     s.D, s.mlp_local);
}
void cm_wk_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::cm_wk), nul(), b.dcm_key.data(), b.cm_mix_k.data(),
                     s.par(st.layer, Param::cm_wk), s.rows, s.D, s.mlp_local);
}
void cm_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::relu_square_forward(b.cm_hidden.data(), b.cm_key.data(), s.rows * s.mlp_local);
}
void cm_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::relu_square_backward(b.dcm_key.data(), b.dcm_hidden.data(), b.cm_key.data(), s.rows * s.mlp_local);
}
void cm_wv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.mlp_partial.data(), b.cm_hidden.data(), s.par(st.layer, Param::cm_wv), nullptr, s.rows, s.mlp_local, s.D);
}
void cm_wv_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dcm_hidden.data(), nul(), nul(), b.dcm_value.data(), b.cm_hidden.data(), s.par(st.layer, Param::cm_wv),
                     s.rows, s.mlp_local, s.D);
}
void cm_wv_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::cm_wv), nul(), b.dcm_value.data(), b.cm_hidden.data(),
                     s.par(st.layer, Param::cm_wv), s.rows, s.mlp_local, s.D);
}
void cm_value_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.mlp_partial.data(), b.cm_value, s.rows * s.D);
}
void cm_wr_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.cm_recept.data(), b.cm_mix_r.data(), s.par(st.layer, Param::cm_wr), nullptr, s.rows, s.D, s.width_local);
}
void cm_wr_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dcm_mix_r.data(), nul(), nul(), b.dcm_recept.data(), b.cm_mix_r.data(), s.par(st.layer, Param::cm_wr),
                     s.rows, s.D, s.width_local);
}
void cm_wr_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::cm_wr), nul(), b.dcm_recept.data(), b.cm_mix_r.data(),
                     s.par(st.layer, Param::cm_wr), s.rows, s.D, s.width_local);
}
// Steps both RWKV generations name alike ("tm.shift", Param::tm_wr, ...) but compute differently.
template <Executor::Handler Four, Executor::Handler Six>
void by_family(State& s, const Step& st) { (s.m.family == Family::rwkv6 ? Six : Four)(s, st); }

// Token-shift halo: the last token of the norm output goes right; its gradient comes back.
template <bool Channel>
void shift_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  shift_right(s, st, last_rows(s, (Channel ? b.n2 : b.n1).data(), 1, s.D, false), Channel ? b.cm_shift_prev : b.tm_shift_prev);
}
template <bool Channel>
void shift_halo_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  Vec back(static_cast<std::size_t>(s.B * s.D));
  shift_left(s, st, Channel ? b.dcm_shift_prev : b.dtm_shift_prev, back);
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
    if (six)
      kernels::wkv6_state_combine(out, in, local, logdec, s.B, heads6(s), s.m.head_size);
    else
      kernels::wkv4_state_combine(out, in, local, logdec, s.B, s.width_local);
  }
  // d_in = dL/d(incoming state) of a shard, from its d_out, its own part dloc, its incoming and
  // final states (st_in, st_fin; RWKV-4 only) and its summary.
  void grad_combine(const State& s, float* d_in, const float* d_out, const float* dloc, const float* st_in, const float* st_fin,
                    const float* logdec) const {
    if (six)
      kernels::wkv6_grad_state_combine(d_in, d_out, dloc, logdec, s.B, heads6(s), s.m.head_size);
    else
      kernels::wkv4_grad_state_combine(d_in, d_out, dloc, st_in, st_fin, logdec, s.B, s.width_local);
  }
};
WkvCarry wkv_carry(const State& s) {
  return {s.m.family == Family::rwkv6, wkv_carry_elems(s.m.family, s.B, s.width_local, s.m.head_size)};
}
}  // namespace
void wkv_carry_ring_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.st_in), left(s));
  wkv_carry(s).combine(s, b.st_fin.data(), s.sp_rank > 0 ? b.st_in.data() : nullptr, b.st_loc.data(), b.logdec.data());
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
  if (s.sp_rank > 0) std::copy_n(b.fold.data() + (s.sp_rank - 1) * kept, n, b.st_in.data());
  std::copy_n(b.fold.data() + s.sp_rank * kept, n, b.st_fin.data());
}
namespace {
void wkv_carry_fix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp_rank == 0) {
    b.wkv = b.wkv_loc;
    return;
  }
  if (s.m.family == Family::rwkv6)
    kernels::wkv6_chunk_forward(b.wkv.data(), nullptr, nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(),
                                s.par(st.layer, Param::tm_bonus), b.st_in.data(), s.B, s.T, heads6(s), s.m.head_size);
  else
    kernels::wkv4_chunk_forward(b.wkv.data(), nullptr, nullptr, b.k.data(), b.v.data(), s.par(st.layer, Param::tm_decay),
                                s.par(st.layer, Param::tm_bonus), b.st_in.data(), s.B, s.T, s.width_local, b.wkv_ck.data());
}
void wkv_carry_fix_bwd(State& s, const Step& st) {  // this chunk's own dstate_in (dstate_out = 0)
  auto& b = lb(s, st);
  // discarded gradients (the kernels accumulate: zeroed): dk, dv, dr, dlogw the size of dk; dd, db [Dl]
  const std::size_t n = b.dk.size(), dl = static_cast<std::size_t>(s.width_local);
  s.fix_scratch.assign(4 * n + 2 * dl, 0.0f);
  float *dk = s.fix_scratch.data(), *dv = dk + n, *dr = dv + n, *dlogw = dr + n, *dd = dlogw + n, *db = dd + dl;
  std::fill(b.dloc.begin(), b.dloc.end(), 0.0f);
  const float* st_in = s.sp_rank > 0 ? b.st_in.data() : nullptr;
  if (s.m.family == Family::rwkv6) {  // dd: d bonus [H,N] = Dl
    kernels::wkv6_chunk_backward(dr, dk, dv, dlogw, dd, b.dloc.data(), b.dwkv.data(), nullptr, b.r.data(), b.k.data(), b.v.data(),
                                 b.logw.data(), s.par(st.layer, Param::tm_bonus), st_in, s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  kernels::wkv4_chunk_backward(dk, dv, dd, db, b.dloc.data(), b.dwkv.data(), nullptr, b.k.data(), b.v.data(),
                               s.par(st.layer, Param::tm_decay), s.par(st.layer, Param::tm_bonus), st_in, s.B, s.T,
                               s.width_local, b.wkv_ck.data());
}
}  // namespace
void wkv_carry_ring_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  zero(b.dst_out);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.dst_out), right(s));
  if (s.sp_rank == 0) return;
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
  for (i64 r = s.sp - 1; r > s.sp_rank; --r) {  // dstate_out of shard r−1 = total dstate_in of shard r
    const float* fin = b.fold.data() + r * kept;
    w.grad_combine(s, d_in.data(), b.dst_out.data(), all.data() + r * n2, fin - kept, fin, fin + w.n.state);
    b.dst_out = d_in;
  }
}

namespace {
// [rows, D] ↔ this rank's column slice [rows, width_local]
void take_cols(const State& s, const float* full, float* part) {
  const i64 d0 = s.tp_rank * s.width_local;
  for (i64 m = 0; m < s.rows; ++m) std::copy_n(full + m * s.D + d0, s.width_local, part + m * s.width_local);
}
void cm_gate_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  take_cols(s, b.cm_value, b.cm_value_local.data());
  K::sigmoid_mul_forward(b.cm_gated.data(), b.cm_recept.data(), b.cm_value_local.data(), s.rows * s.width_local);
}
void cm_gate_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  Vec dcg(static_cast<std::size_t>(s.rows * s.width_local));
  take_cols(s, b.dmlp_out.data(), dcg.data());
  std::fill_n(b.dcm_value_local, s.rows * s.width_local, 0.0f);
  K::sigmoid_mul_backward(b.dcm_recept.data(), b.dcm_value_local, dcg.data(), b.cm_recept.data(), b.cm_value_local.data(),
                          s.rows * s.width_local);
}
// All-gather of [rows, width_local] column slices into [rows, D].
void gather_cols(const State& s, const Step& st, const float* part, float* full) {
  Vec all(static_cast<std::size_t>(s.rows * s.D));
  need(s, Axis::tensor, st)
      .allgather(std::span<const float>(part, static_cast<std::size_t>(s.rows * s.width_local)), std::span<float>(all));
  for (i64 r = 0; r < s.tp; ++r)
    for (i64 m = 0; m < s.rows; ++m)
      std::copy_n(all.data() + (r * s.rows + m) * s.width_local, s.width_local, full + m * s.D + r * s.width_local);
}
void cm_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  gather_cols(s, st, b.cm_gated.data(), b.cm_out);
}
void cm_value_grad_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  gather_cols(s, st, b.dcm_value_local, b.dcm_value.data());
}
// The residual adds this rank's tokens of the gathered output (all of them without rs_ag).
void cm_residual_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  add(s.xs[static_cast<std::size_t>(st.layer) + 1].data(), b.x_mid.data(), b.cm_out + s.res_row0 * s.D, s.res_rows * s.D);
}

}  // namespace

// Sizes an RWKV layer's buffers (either generation; RWKV-6's time mix adds its own).
void size_rwkv_layer(const State& s, LayerBufs& b) {
  const i64 M = s.rows, D = s.D;
  const i64 Dl = s.width_local;
  for (auto* v : {&b.mean1, &b.mean2}) v->assign(sz(M), 0.0f);
  for (auto* v : {&b.mix3, &b.dmix3}) v->assign(sz(3 * M * D), 0.0f);
  for (auto* v : {&b.r, &b.k, &b.v, &b.wkv, &b.o, &b.dr, &b.dk, &b.dv, &b.dwkv, &b.do_, &b.cm_recept, &b.dcm_recept,
                  &b.cm_value_local, &b.cm_gated, &b.dcm_value_slice})
    v->assign(sz(M * Dl), 0.0f);
  for (auto* v : {&b.cm_mix_k, &b.cm_mix_r, &b.dcm_mix_k, &b.dcm_mix_r, &b.cm_value_sum, &b.dcm_value, &b.cm_gathered})
    v->assign(sz(M * D), 0.0f);
  for (auto* v : {&b.cm_key, &b.cm_hidden, &b.dcm_key, &b.dcm_hidden}) v->assign(sz(M * s.mlp_local), 0.0f);
  b.cm_value = s.tp > 1 ? b.cm_value_sum.data() : b.mlp_partial.data();
  b.cm_out = s.tp > 1 ? b.cm_gathered.data() : b.cm_gated.data();
  b.dcm_value_local = s.tp > 1 ? b.dcm_value_slice.data() : b.dcm_value.data();
  for (auto* v : {&b.tm_shift_prev, &b.dtm_shift_prev, &b.cm_shift_prev, &b.dcm_shift_prev}) v->assign(sz(s.B * D), 0.0f);
  b.wkv_loc.assign(sz(M * Dl), 0.0f);
  if (s.m.family == Family::rwkv4) b.wkv_ck.assign(sz(wkv4_checkpoint_elems(s.B, s.T, Dl)), 0.0f);
  const WkvCarryElems wc = wkv_carry(s).n;
  for (auto* v : {&b.st_loc, &b.st_in, &b.st_fin}) v->assign(sz(wc.state), 0.0f);
  for (auto* v : {&b.dloc, &b.dst_out}) v->assign(sz(wc.grad), 0.0f);
  b.logdec.assign(sz(wc.summary), 0.0f);
  if (s.p.carry == CarryScheme::allgather && s.sp > 1) b.fold.assign(sz(s.sp * (wc.state + wc.summary)), 0.0f);
  if (s.m.family == Family::rwkv6) size_rwkv6_time_mix(s, b);
}

void add_rwkv4_handlers(Table& t) {
  add_entries(t, {
      // RWKV-4 time mix (by_family: the steps RWKV-6 names alike) and the RWKV channel mix
      {step_key(ops::layernorm, tensors::embed_norm), {embed_norm_fwd, embed_norm_bwd}},
      {step_key(ops::all_reduce, tensors::tm_mu_grads), {nullptr, tm_mu_grads_bwd}},
      {step_key(ops::all_reduce, tensors::cm_mu_grads), {nullptr, cm_mu_grads_bwd}},
      {step_key(ops::token_shift, tensors::tm_shift), {by_family<tm_shift_fwd, r6_shift_fwd>, by_family<tm_shift_bwd, r6_shift_bwd>}},
      {step_key(ops::linear, tensors::tm_wr), {by_family<tm_proj_fwd<0>, r6_proj_fwd<3>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wr), {nullptr, by_family<tm_proj_dx<0>, r6_proj_dx<3>>}}, {step_key(ops::linear_dw, tensors::tm_wr), {nullptr, by_family<tm_proj_dw<0>, r6_proj_dw<3>>}},
      {step_key(ops::linear, tensors::tm_wk), {by_family<tm_proj_fwd<1>, r6_proj_fwd<1>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wk), {nullptr, by_family<tm_proj_dx<1>, r6_proj_dx<1>>}}, {step_key(ops::linear_dw, tensors::tm_wk), {nullptr, by_family<tm_proj_dw<1>, r6_proj_dw<1>>}},
      {step_key(ops::linear, tensors::tm_wv), {by_family<tm_proj_fwd<2>, r6_proj_fwd<2>>, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wv), {nullptr, by_family<tm_proj_dx<2>, r6_proj_dx<2>>}}, {step_key(ops::linear_dw, tensors::tm_wv), {nullptr, by_family<tm_proj_dw<2>, r6_proj_dw<2>>}},
      {step_key(ops::wkv4_scan, tensors::tm_wkv), {wkv4_fwd, wkv4_bwd}},
      {step_key(ops::scan_carry_fix, tensors::tm_wkv), {wkv_carry_fix_fwd, wkv_carry_fix_bwd}},  // both generations
      {step_key(ops::send_recv, tensors::tm_shift_halo), {shift_halo_fwd<false>, shift_halo_bwd<false>}},
      {step_key(ops::send_recv, tensors::cm_shift_halo), {shift_halo_fwd<true>, shift_halo_bwd<true>}},
      {step_key(ops::sigmoid_mul, tensors::tm_gated), {tm_gated_fwd, tm_gated_bwd}},
      {step_key(ops::linear, tensors::tm_wo), {tm_wo_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::tm_wo), {nullptr, tm_wo_dx}}, {step_key(ops::linear_dw, tensors::tm_wo), {nullptr, tm_wo_dw}},
      {step_key(ops::token_shift, tensors::cm_shift), {cm_shift_fwd, cm_shift_bwd}},
      {step_key(ops::linear, tensors::cm_wk), {cm_wk_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wk), {nullptr, cm_wk_dx}}, {step_key(ops::linear_dw, tensors::cm_wk), {nullptr, cm_wk_dw}},
      {step_key(ops::relu_sq, tensors::cm_act), {cm_act_fwd, cm_act_bwd}},
      {step_key(ops::linear, tensors::cm_wv), {cm_wv_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wv), {nullptr, cm_wv_dx}}, {step_key(ops::linear_dw, tensors::cm_wv), {nullptr, cm_wv_dw}},
      {step_key(ops::all_reduce, tensors::cm_value), {cm_value_fwd, nullptr}},
      {step_key(ops::linear, tensors::cm_wr), {cm_wr_fwd, nullptr}}, {step_key(ops::linear_dx, tensors::cm_wr), {nullptr, cm_wr_dx}}, {step_key(ops::linear_dw, tensors::cm_wr), {nullptr, cm_wr_dw}},
      {step_key(ops::sigmoid_mul, tensors::cm_gate), {cm_gate_fwd, cm_gate_bwd}},
      {step_key(ops::all_gather, tensors::cm_value_grad), {nullptr, cm_value_grad_bwd}},
      {step_key(ops::all_gather, tensors::cm_out), {cm_out_fwd, nullptr}},
      {step_key(ops::add, tensors::cm_residual), {cm_residual_fwd, mlp_residual_bwd}},
  });
}

}  // namespace scanshard::train::exec
