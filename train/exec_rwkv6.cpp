// train/exec_rwkv6.cpp — the Executor's handlers of the RWKV-6 time mix (data-dependent token shift,
// LoRAs, decay, WKV-6 heads, GroupNorm, the SiLU gate).
// See executor.hpp for what the Executor does and executor_state.hpp for the State.

#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train::exec {

namespace {
// ---- RWKV-6 time mix (DESIGN §3.3) ---------------------------------------------------------------
// Under tensor: the shift, the LoRAs and the five mixes are whole on every rank (replicated
// parameters, tm.mu_grads); decay_b, the decay, r, k, v, g, the WKV heads, GroupNorm and the gate
// hold this rank's Dl = D/t channels (Dl/N heads); W_o is row-split. Under sequence: the shift's
// previous token comes from the left shard (tm.shift_halo), the WKV state through scan.carry.

i64 rank_mix(const State& s) { return s.m.lora_rank_mix; }
i64 rank_decay(const State& s) { return s.m.lora_rank_decay; }
float* x5(State& s, Vec& v, int j) { return v.data() + j * s.rows * s.D; }  // j: 0 w, 1 k, 2 v, 3 r, 4 g
}  // namespace
void r6_shift_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_shift_forward(b.shift_delta.data(), b.lora_in.data(), b.n1.data(), s.sp > 1 ? b.tm_shift_prev.data() : nullptr,
                          s.par(st.layer, Param::tm_mu_x), s.B, s.T, s.D);
}
void r6_shift_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_shift_backward(b.dn1.data(), s.sp > 1 ? b.dtm_shift_prev.data() : nullptr, s.grad(st.layer, Param::tm_mu_x),
                           b.dshift_delta.data(), b.dlora_in.data(), b.n1.data(), s.sp > 1 ? b.tm_shift_prev.data() : nullptr,
                           s.par(st.layer, Param::tm_mu_x), s.B, s.T, s.D);
}
namespace {
void r6_lora_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.lora_z.data(), b.lora_in.data(), s.par(st.layer, Param::tm_lora_a), nullptr, s.rows, s.D, 5 * rank_mix(s));
}
void r6_lora_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dlora_in.data(), nul(), nul(), b.dlora_z.data(), b.lora_in.data(), s.par(st.layer, Param::tm_lora_a),
                     s.rows, s.D, 5 * rank_mix(s));
}
void r6_lora_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::tm_lora_a), nul(), b.dlora_z.data(), b.lora_in.data(),
                     s.par(st.layer, Param::tm_lora_a), s.rows, s.D, 5 * rank_mix(s));
}
void r6_lora_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_forward(b.lora_tanh.data(), b.lora_z.data(), s.rows * 5 * rank_mix(s));
}
void r6_lora_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_backward(b.dlora_z.data(), b.dlora_tanh.data(), b.lora_tanh.data(), s.rows * 5 * rank_mix(s));
}
// LoRA B: five rank-r maps; map j reads columns [j·r, (j+1)·r) of tanh(z) and writes x5 block j
// (kernels::grouped_linear: strided GEMMs, no copies of the column blocks).
void r6_lora_b_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_forward(b.lora_mix.data(), b.lora_tanh.data(), s.par(st.layer, Param::tm_lora_b), s.rows, 5, rank_mix(s),
                            s.D);
}
void r6_lora_b_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_backward(b.dlora_tanh.data(), nul(), b.dlora_mix.data(), b.lora_tanh.data(),
                             s.par(st.layer, Param::tm_lora_b), s.rows, 5, rank_mix(s), s.D);
}
void r6_lora_b_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::grouped_linear_backward(nul(), s.grad(st.layer, Param::tm_lora_b), b.dlora_mix.data(), b.lora_tanh.data(),
                             s.par(st.layer, Param::tm_lora_b), s.rows, 5, rank_mix(s), s.D);
}
void r6_mix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_mix_forward(b.mix5.data(), b.n1.data(), b.shift_delta.data(), s.par(st.layer, Param::tm_mu), b.lora_mix.data(), 5,
                        s.rows, s.D);
}
void r6_mix_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::ddlerp_mix_backward(b.dn1.data(), b.dshift_delta.data(), s.grad(st.layer, Param::tm_mu), b.dlora_mix.data(), b.dmix5.data(),
                         b.shift_delta.data(), s.par(st.layer, Param::tm_mu), b.lora_mix.data(), 5, s.rows, s.D);
}
void r6_decay_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.decay_z.data(), x5(s, b.mix5, 0), s.par(st.layer, Param::tm_decay_a), nullptr, s.rows, s.D, rank_decay(s));
}
void r6_decay_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(x5(s, b.dmix5, 0), nul(), nul(), b.ddecay_z.data(), x5(s, b.mix5, 0), s.par(st.layer, Param::tm_decay_a),
                     s.rows, s.D, rank_decay(s));
}
void r6_decay_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::tm_decay_a), nul(), b.ddecay_z.data(), x5(s, b.mix5, 0),
                     s.par(st.layer, Param::tm_decay_a), s.rows, s.D, rank_decay(s));
}
void r6_decay_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_forward(b.decay_tanh.data(), b.decay_z.data(), s.rows * rank_decay(s));
}
void r6_decay_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::tanh_backward(b.ddecay_z.data(), b.ddecay_tanh.data(), b.decay_tanh.data(), s.rows * rank_decay(s));
}
void r6_decay_b_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.decay_delta.data(), b.decay_tanh.data(), s.par(st.layer, Param::tm_decay_b), nullptr, s.rows, rank_decay(s),
                    s.width_local);
}
void r6_decay_b_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.ddecay_tanh.data(), nul(), nul(), b.ddecay_delta.data(), b.decay_tanh.data(),
                     s.par(st.layer, Param::tm_decay_b), s.rows, rank_decay(s), s.width_local);
}
void r6_decay_b_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::tm_decay_b), nul(), b.ddecay_delta.data(), b.decay_tanh.data(),
                     s.par(st.layer, Param::tm_decay_b), s.rows, rank_decay(s), s.width_local);
}
void r6_decay_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::decay_forward(b.logw.data(), s.par(st.layer, Param::tm_decay), b.decay_delta.data(), s.rows, s.width_local);
}
void r6_decay_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::decay_backward(s.grad(st.layer, Param::tm_decay), b.ddecay_delta.data(), b.dlogw.data(), b.logw.data(), s.rows,
                    s.width_local);
}
template <int J>  // 1 k, 2 v, 3 r, 4 g
float* r6_out(LayerBufs& b, bool grad) {
  if (J == 1) return (grad ? b.dk : b.k).data();
  if (J == 2) return (grad ? b.dv : b.v).data();
  if (J == 3) return (grad ? b.dr : b.r).data();
  return (grad ? b.dgate_g : b.gate_g).data();
}
// J: 1 k, 2 v, 3 r, 4 g (0, w, has the decay LoRA instead)
constexpr Param kR6W[5] = {Param::tm_wk, Param::tm_wk, Param::tm_wv, Param::tm_wr, Param::tm_wg};
}  // namespace
template <int J>
void r6_proj_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(r6_out<J>(b, false), x5(s, b.mix5, J), s.par(st.layer, kR6W[J]), nullptr, s.rows, s.D, s.width_local);
}
template <int J>
void r6_proj_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(x5(s, b.dmix5, J), nul(), nul(), r6_out<J>(b, true), x5(s, b.mix5, J), s.par(st.layer, kR6W[J]), s.rows, s.D,
                     s.width_local);
}
template <int J>
void r6_proj_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, kR6W[J]), nul(), r6_out<J>(b, true), x5(s, b.mix5, J), s.par(st.layer, kR6W[J]),
                     s.rows, s.D, s.width_local);
}
namespace {
void wkv6_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {  // chunk-local from the zero state; its state and decay summary for the carry
    kernels::wkv6_chunk_forward(b.wkv_loc.data(), b.st_loc.data(), b.logdec.data(), b.r.data(), b.k.data(), b.v.data(),
                                b.logw.data(), s.par(st.layer, Param::tm_bonus), nullptr, s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  K::wkv6_forward(b.wkv.data(), nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, Param::tm_bonus),
                  nullptr, s.B, s.T, heads6(s), s.m.head_size);
}
void wkv6_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  if (s.sp > 1) {
    kernels::wkv6_chunk_backward(b.dr.data(), b.dk.data(), b.dv.data(), b.dlogw.data(), s.grad(st.layer, Param::tm_bonus),
                                 nullptr, b.dwkv.data(), s.sp_rank + 1 < s.sp ? b.dst_out.data() : nullptr, b.r.data(),
                                 b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, Param::tm_bonus),
                                 s.sp_rank > 0 ? b.st_in.data() : nullptr, s.B, s.T, heads6(s), s.m.head_size);
    return;
  }
  K::wkv6_backward(b.dr.data(), b.dk.data(), b.dv.data(), b.dlogw.data(), s.grad(st.layer, Param::tm_bonus), nullptr,
                   b.dwkv.data(), nullptr, b.r.data(), b.k.data(), b.v.data(), b.logw.data(), s.par(st.layer, Param::tm_bonus),
                   nullptr, s.B, s.T, heads6(s), s.m.head_size);
}
void r6_gn_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::group_norm_forward(b.gn_out.data(), b.gn_mean.data(), b.gn_rstd.data(), b.wkv.data(), s.par(st.layer, Param::tm_gn_scale),
                        s.par(st.layer, Param::tm_gn_bias), s.rows, heads6(s), s.m.head_size,
                        static_cast<float>(s.m.group_norm_eps));
}
void r6_gn_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::group_norm_backward(b.dwkv.data(), s.grad(st.layer, Param::tm_gn_scale), s.grad(st.layer, Param::tm_gn_bias),
                         b.dgn_out.data(), b.gn_mean.data(), b.gn_rstd.data(), b.wkv.data(), s.par(st.layer, Param::tm_gn_scale),
                         s.rows, heads6(s), s.m.head_size);
}
void r6_gated_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_forward(b.o.data(), b.gn_out.data(), b.gate_g.data(), s.rows * s.width_local);
}
void r6_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::silu_mul_backward(b.dgn_out.data(), b.dgate_g.data(), b.do_.data(), b.gn_out.data(), b.gate_g.data(),
                       s.rows * s.width_local);
}

}  // namespace

// the RWKV-4 file's by_family entries take these
template void r6_proj_fwd<1>(State&, const Step&);
template void r6_proj_fwd<2>(State&, const Step&);
template void r6_proj_fwd<3>(State&, const Step&);
template void r6_proj_dx<1>(State&, const Step&);
template void r6_proj_dx<2>(State&, const Step&);
template void r6_proj_dx<3>(State&, const Step&);
template void r6_proj_dw<1>(State&, const Step&);
template void r6_proj_dw<2>(State&, const Step&);
template void r6_proj_dw<3>(State&, const Step&);

// Sizes the RWKV-6 time mix's own buffers (size_rwkv_layer sized the rest).
void size_rwkv6_time_mix(const State& s, LayerBufs& b) {
  const ModelSpec& m = s.m;
  const i64 M = s.rows, D = s.D, Dl = s.width_local;
  const i64 r5 = 5 * m.lora_rank_mix, rw = m.lora_rank_decay, Hh = Dl / m.head_size;
  for (auto* v : {&b.shift_delta, &b.lora_in, &b.dshift_delta, &b.dlora_in}) v->assign(sz(M * D), 0.0f);
  for (auto* v : {&b.decay_delta, &b.logw, &b.gate_g, &b.gn_out, &b.ddecay_delta, &b.dlogw, &b.dgate_g, &b.dgn_out})
    v->assign(sz(M * Dl), 0.0f);
  for (auto* v : {&b.lora_z, &b.lora_tanh, &b.dlora_z, &b.dlora_tanh}) v->assign(sz(M * r5), 0.0f);
  for (auto* v : {&b.lora_mix, &b.mix5, &b.dlora_mix, &b.dmix5}) v->assign(sz(5 * M * D), 0.0f);
  for (auto* v : {&b.decay_z, &b.decay_tanh, &b.ddecay_z, &b.ddecay_tanh}) v->assign(sz(M * rw), 0.0f);
  for (auto* v : {&b.gn_mean, &b.gn_rstd}) v->assign(sz(M * Hh), 0.0f);
}

void add_rwkv6_handlers(Table& t) {
  add_entries(t, {
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
  });
}

}  // namespace scanshard::train::exec
