// train/exec_recurrent.cpp — the Executor's handlers of the Griffin / Hawk recurrent block: the x and
// y branches, the Conv1D (and its halo under sequence sharding), the RG-LRU gates and scan, the
// chunk-state carry (ring or all-gather) and the output projection.
// See executor.hpp for what the Executor does and executor_state.hpp for the State.

#include <algorithm>

#include "kernels/conv1d.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train::exec {

namespace {
// ---- recurrent block (R/t channels per tensor rank; channel-local conv, gates, scan) -----------

void rec_wy_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.y_branch.data(), b.n1.data(), s.par(st.layer, Param::rec_wy), s.par(st.layer, Param::rec_by), s.rows, s.D,
                    s.rec_local);
}
void rec_wx_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.x_branch.data(), b.n1.data(), s.par(st.layer, Param::rec_wx), s.par(st.layer, Param::rec_bx), s.rows, s.D,
                    s.rec_local);
}
void conv_halo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  shift_right(s, st, last_rows(s, b.x_branch.data(), s.conv_width - 1, s.rec_local, true), b.conv_state);
}
void conv_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::conv1d_forward(b.conv_out.data(), nul(), b.x_branch.data(), s.sp > 1 ? b.conv_state.data() : nullptr, s.reset.data(),
                    s.par(st.layer, Param::rec_conv_w), s.par(st.layer, Param::rec_conv_b), s.B, s.T, s.rec_local, s.conv_width);
}
void gate_a_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_forward(b.gate_a.data(), b.conv_out.data(), s.par(st.layer, Param::rec_gate_a_w),
                       s.par(st.layer, Param::rec_gate_a_b), s.rows, s.rec_local, s.gate_blocks_local);
}
void gate_x_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_forward(b.gate_x.data(), b.conv_out.data(), s.par(st.layer, Param::rec_gate_x_w),
                       s.par(st.layer, Param::rec_gate_x_b), s.rows, s.rec_local, s.gate_blocks_local);
}
void scan_fwd(State& s, const Step& st) {  // chunk-local: from h = 0 when the sequence is sharded
  auto& b = lb(s, st);
  K::rglru_scan_forward(b.scan_local.data(), s.sp > 1 ? b.h_out.data() : nullptr, s.sp > 1 ? b.decay.data() : nullptr,
                        b.conv_out.data(), b.gate_a.data(), b.gate_x.data(), nullptr, s.reset.data(),
                        s.par(st.layer, Param::rec_lambda), s.B, s.T, s.rec_local);
}
// Ring: shard s waits for h_in from s−1, passes h_out + decay ⊙ h_in to s+1 (P−1 sequential hops).
void carry_ring_fwd(State& s, const Step& st);
void carry_gather_fwd(State& s, const Step& st);
void carry_ring_bwd(State& s, const Step& st);
void carry_gather_bwd(State& s, const Step& st);
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
  const i64 n = s.B * s.rec_local;
  zero(b.h_in);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.h_in), left(s));
  Vec h_fin(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) h_fin[i] = b.h_out[i] + b.decay[i] * b.h_in[i];
  c.sendrecv(std::span<const float>(h_fin), right(s), std::span<float>(), MPI_PROC_NULL);
}
// All-gather: every shard's (h_out, decay); shard s folds shards 0..s−1 into its h_in and keeps
// every decay for the backward (which then sends its dh_loc only).
void carry_gather_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 n = s.B * s.rec_local;
  Vec mine(static_cast<std::size_t>(2 * n)), all(static_cast<std::size_t>(2 * n * s.sp));
  std::copy(b.h_out.begin(), b.h_out.end(), mine.begin());
  std::copy(b.decay.begin(), b.decay.end(), mine.begin() + n);
  need(s, Axis::sequence, st).allgather(std::span<const float>(mine), std::span<float>(all));
  for (i64 r = 0; r < s.sp; ++r) std::copy_n(all.begin() + (2 * r + 1) * n, n, b.decay_all.begin() + r * n);
  zero(b.h_in);
  for (i64 r = 0; r < s.sp_rank; ++r)
    for (i64 i = 0; i < n; ++i) b.h_in[i] = all[(2 * r) * n + i] + b.decay_all[r * n + i] * b.h_in[i];
}
void carry_fix_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  b.scan_fixed = b.scan_local;
  K::rglru_carry(b.scan_fixed.data(), nullptr, b.h_in.data(), b.decay.data(), b.gate_a.data(), s.reset.data(),
                 s.par(st.layer, Param::rec_lambda), s.B, s.T, s.rec_local);
}
void rec_gated_fwd(State& s, const Step& st) {  // gelu(gy) ⊙ h (the "gelu rec.gate" step is fused here)
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.gated.data(), b.y_branch.data(), b.scan_out, s.rows * s.rec_local);
}
void rec_wo_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.temporal_partial.data(), b.gated.data(), s.par(st.layer, Param::rec_wo),
                    s.bias_after_reduce(st.layer, Param::rec_bo), s.rows, s.rec_local, s.D);
}

void rec_wo_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dgated.data(), nul(), nul(), b.dtemporal_out.data(), b.gated.data(), s.par(st.layer, Param::rec_wo),
                     s.rows, s.rec_local, s.D);
}
void rec_wo_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::rec_wo), s.grad(st.layer, Param::rec_bo), b.dtemporal_out.data(),
                     b.gated.data(), s.par(st.layer, Param::rec_wo), s.rows, s.rec_local, s.D);
}
void rec_gated_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dy_branch.data(), b.dscan_out.data(), b.dgated.data(), b.y_branch.data(), b.scan_out,
                       s.rows * s.rec_local);
}
void carry_fix_bwd(State& s, const Step& st) {  // this chunk's own contribution to dh_in
  auto& b = lb(s, st);
  K::rglru_carry_backward(b.dh_loc.data(), b.dscan_out.data(), b.gate_a.data(), s.reset.data(),
                          s.par(st.layer, Param::rec_lambda), s.B, s.T, s.rec_local);
}
// Mirrored ring: shard s waits for dh_out from s+1, passes dh_loc + decay ⊙ dh_out to s−1.
void carry_ring_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const auto& c = need(s, Axis::sequence, st);
  const i64 n = s.B * s.rec_local;
  zero(b.dh_out);
  c.sendrecv(std::span<const float>(), MPI_PROC_NULL, std::span<float>(b.dh_out), right(s));
  Vec d_fin(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) d_fin[i] = b.dh_loc[i] + b.decay[i] * b.dh_out[i];
  c.sendrecv(std::span<const float>(d_fin), left(s), std::span<float>(), MPI_PROC_NULL);
}
// Every shard's dh_loc; the decays are the forward's (decay_all).
void carry_gather_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const i64 n = s.B * s.rec_local;
  Vec all(static_cast<std::size_t>(n * s.sp));
  need(s, Axis::sequence, st).allgather(std::span<const float>(b.dh_loc), std::span<float>(all));
  zero(b.dh_out);
  for (i64 r = s.sp - 1; r > s.sp_rank; --r)
    for (i64 i = 0; i < n; ++i) b.dh_out[i] = all[r * n + i] + b.decay_all[r * n + i] * b.dh_out[i];
}
void scan_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const bool sh = s.sp > 1;
  K::rglru_scan_backward(b.dconv_out.data(), b.dgate_a.data(), b.dgate_x.data(), nullptr, s.grad(st.layer, Param::rec_lambda),
                         b.dscan_out.data(), sh ? b.dh_out.data() : nullptr, b.scan_out, b.conv_out.data(), b.gate_a.data(),
                         b.gate_x.data(), sh ? b.h_in.data() : nullptr, s.reset.data(), s.par(st.layer, Param::rec_lambda), s.B,
                         s.T, s.rec_local);
}
void gate_x_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(b.dconv_out.data(), nul(), nul(), b.dgate_x.data(), b.conv_out.data(),
                        s.par(st.layer, Param::rec_gate_x_w), s.rows, s.rec_local, s.gate_blocks_local);
}
void gate_x_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(nul(), s.grad(st.layer, Param::rec_gate_x_w), s.grad(st.layer, Param::rec_gate_x_b), b.dgate_x.data(),
                        b.conv_out.data(), s.par(st.layer, Param::rec_gate_x_w), s.rows, s.rec_local, s.gate_blocks_local);
}
void gate_a_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(b.dconv_out.data(), nul(), nul(), b.dgate_a.data(), b.conv_out.data(),
                        s.par(st.layer, Param::rec_gate_a_w), s.rows, s.rec_local, s.gate_blocks_local);
}
void gate_a_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::blockdiag_backward(nul(), s.grad(st.layer, Param::rec_gate_a_w), s.grad(st.layer, Param::rec_gate_a_b), b.dgate_a.data(),
                        b.conv_out.data(), s.par(st.layer, Param::rec_gate_a_w), s.rows, s.rec_local, s.gate_blocks_local);
}
void conv_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const bool sh = s.sp > 1;
  K::conv1d_backward(b.dx_branch.data(), sh ? b.dconv_state.data() : nullptr, s.grad(st.layer, Param::rec_conv_w),
                     s.grad(st.layer, Param::rec_conv_b), b.dconv_out.data(), nullptr, b.x_branch.data(),
                     sh ? b.conv_state.data() : nullptr, s.reset.data(), s.par(st.layer, Param::rec_conv_w), s.B, s.T,
                     s.rec_local, s.conv_width);
}
void conv_halo_bwd(State& s, const Step& st) {  // the halo's gradient returns to its owner's last K−1 rows
  auto& b = lb(s, st);
  Vec back(b.dconv_state.size());
  shift_left(s, st, b.dconv_state, back);
  // entries the owner masked (a later document start) were zeros there: their gradient is dropped
  const Vec mask = last_rows(s, std::vector<float>(static_cast<std::size_t>(s.rows * s.rec_local), 1.0f).data(), s.conv_width - 1,
                             s.rec_local, true);
  for (std::size_t i = 0; i < back.size(); ++i) back[i] *= mask[i];
  add_last_rows(s, b.dx_branch.data(), back, s.conv_width - 1, s.rec_local);
}
void rec_wx_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn1.data(), nul(), nul(), b.dx_branch.data(), b.n1.data(), s.par(st.layer, Param::rec_wx), s.rows, s.D,
                     s.rec_local);
}
void rec_wx_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::rec_wx), s.grad(st.layer, Param::rec_bx), b.dx_branch.data(), b.n1.data(),
                     s.par(st.layer, Param::rec_wx), s.rows, s.D, s.rec_local);
}
void rec_wy_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dn1.data(), nul(), nul(), b.dy_branch.data(), b.n1.data(), s.par(st.layer, Param::rec_wy), s.rows, s.D,
                     s.rec_local);
}
void rec_wy_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::rec_wy), s.grad(st.layer, Param::rec_by), b.dy_branch.data(), b.n1.data(),
                     s.par(st.layer, Param::rec_wy), s.rows, s.D, s.rec_local);
}

}  // namespace

// Sizes a recurrent layer's buffers.
void size_recurrent_layer(const State& s, LayerBufs& b) {
  const i64 M = s.rows;
  for (auto* v : {&b.y_branch, &b.x_branch, &b.conv_out, &b.gate_a, &b.gate_x, &b.scan_local, &b.scan_fixed, &b.gated, &b.dgated,
                  &b.dy_branch, &b.dscan_out, &b.dconv_out, &b.dgate_a, &b.dgate_x, &b.dx_branch})
    v->assign(sz(M * s.rec_local), 0.0f);
  for (auto* v : {&b.h_out, &b.decay, &b.h_in, &b.dh_out, &b.dh_loc}) v->assign(sz(s.B * s.rec_local), 0.0f);
  if (s.sp > 1 && s.p.carry == CarryScheme::allgather) b.decay_all.assign(sz(s.sp * s.B * s.rec_local), 0.0f);
  for (auto* v : {&b.conv_state, &b.dconv_state}) v->assign(sz(s.B * (s.conv_width - 1) * s.rec_local), 0.0f);
  b.scan_out = s.sp > 1 ? b.scan_fixed.data() : b.scan_local.data();
}

void add_recurrent_handlers(Table& t) {
  add_entries(t, {
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
  });
}

}  // namespace scanshard::train::exec
