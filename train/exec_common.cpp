// train/exec_common.cpp — the Executor's handlers every family shares: communication helpers, the
// embedding and the head (tied or untied, RMSNorm or LayerNorm), the blocks' norms, reductions and
// residuals, the gated MLP, ZeRO-3 parameter gathers, pipeline transfers and tensor_comm rs_ag.
// See executor.hpp for what the Executor does and executor_state.hpp for the State.

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/embedding.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rmsnorm.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train::exec {

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
// Sends `send` to the right neighbour and receives `recv` from the left one (zeros on shard 0).
void shift_right(const State& s, const Step& st, const Vec& send, Vec& recv) {
  if (s.sp_rank == 0) zero(recv);
  need(s, Axis::sequence, st).sendrecv(std::span<const float>(send), right(s), std::span<float>(recv), left(s));
}
// The gradient of a halo goes back: send `send` left, receive `recv` from the right (zeros on the last shard).
void shift_left(const State& s, const Step& st, const Vec& send, Vec& recv) {
  if (s.sp_rank + 1 == s.sp) zero(recv);
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

namespace {
// ---- embedding and head -------------------------------------------------------------------------

void embed_fwd(State& s, const Step&) {  // a partial sum over vocab shards when tensor > 1
  K::embedding_shard_forward(s.tp > 1 ? s.embed_partial.data() : s.emb_out, s.tokens.data(), s.par(-1, Param::embed_table),
                             s.vocab_begin, s.vocab_local, s.rows, s.D, s.embed_scale);
}
void embed_reduce_fwd(State& s, const Step& st) { allreduce_into(s, st, s.embed_partial.data(), s.emb_out, s.rows * s.D); }
void embed_bwd(State& s, const Step&) {
  K::embedding_shard_backward(s.grad(-1, Param::embed_table), s.m.is_rwkv() || s.rs_ag ? s.demb.data() : s.dxs[0].data(),
                              s.tokens.data(), s.vocab_begin, s.vocab_local, s.rows, s.D, s.embed_scale);
}
void final_norm_fwd(State& s, const Step&) {
  K::rmsnorm_forward(s.rs_ag ? s.final_norm_out_loc.data() : s.final_norm_out.data(), s.final_rstd.data(), s.xs.back().data(),
                     s.par(-2, Param::final_norm_scale), s.res_rows, s.D, eps_of(s));
}
void final_norm_bwd(State& s, const Step&) {
  K::rmsnorm_backward(s.dxs.back().data(), s.grad(-2, Param::final_norm_scale),
                      s.rs_ag ? s.dfinal_norm_out_loc.data() : s.dfinal_norm_out.data(), s.xs.back().data(), s.final_rstd.data(),
                      s.par(-2, Param::final_norm_scale), s.res_rows, s.D);
}
void logits_fwd(State& s, const Step&) {  // local vocab columns, and their (max, Σ exp) per token
  K::logits_tied_forward(s.logits.data(), s.final_norm_out.data(), s.par(-1, Param::embed_table), s.rows, s.D, s.vocab_local);
  K::softmax_stats(s.stats.data(), s.logits.data(), s.rows, s.vocab_local);
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
  K::softmax_ce_shard_finish(s.losses.data(), s.logits.data(), s.logits.data(), s.stats.data(), s.targets.data(), s.vocab_begin,
                             s.rows, s.vocab_local);
}
// A train metric (Plan::logit_metrics): the cross-entropy again from the merged statistics, into
// its own buffers (no gradient; the result is discarded, as the runner logs only the loss).
void metric_xent_fwd(State& s, const Step&) {
  K::softmax_ce_shard_finish(s.metric_losses.data(), s.metric_probs.data(), s.logits.data(), s.stats.data(), s.targets.data(),
                             s.vocab_begin, s.rows, s.vocab_local);
}
void softmax_xent_bwd(State& s, const Step&) {
  K::softmax_ce_shard_backward(s.dlogits.data(), s.dlosses.data(), s.logits.data(), s.targets.data(), s.vocab_begin, s.rows,
                               s.vocab_local);
}
void head_dx_bwd(State& s, const Step&) {
  zero(s.dfinal_norm_out);
  K::logits_tied_backward(s.dfinal_norm_out.data(), nul(), s.dlogits.data(), s.final_norm_out.data(),
                          s.par(-1, Param::embed_table), s.rows, s.D, s.vocab_local);
}
void head_dw_bwd(State& s, const Step&) {
  K::logits_tied_backward(nul(), s.grad(-1, Param::embed_table), s.dlogits.data(), s.final_norm_out.data(),
                          s.par(-1, Param::embed_table), s.rows, s.D, s.vocab_local);
}
void head_in_grad_bwd(State& s, const Step& st) { allreduce_inplace(s, st, s.dfinal_norm_out.data(), s.rows * s.D); }

// ---- shared block pieces ------------------------------------------------------------------------

void norm1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_forward(n1_out(s, b), b.rstd1.data(), x_in(s, st), s.par(st.layer, Param::norm1_scale), s.res_rows, s.D, eps_of(s));
}
void norm1_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_backward(s.dxs[static_cast<std::size_t>(st.layer)].data(), s.grad(st.layer, Param::norm1_scale), dn1_in(s, b),
                      x_in(s, st), b.rstd1.data(), s.par(st.layer, Param::norm1_scale), s.res_rows, s.D);
}
void norm2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_forward(n2_out(s, b), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, Param::norm2_scale), s.res_rows, s.D,
                     eps_of(s));
}
void norm2_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::rmsnorm_backward(b.dx_mid.data(), s.grad(st.layer, Param::norm2_scale), dn2_in(s, b), b.x_mid.data(), b.rstd2.data(),
                      s.par(st.layer, Param::norm2_scale), s.res_rows, s.D);
}
void in_grad1_bwd(State& s, const Step& st) { allreduce_inplace(s, st, lb(s, st).dn1.data(), s.rows * s.D); }
void in_grad2_bwd(State& s, const Step& st) { allreduce_inplace(s, st, lb(s, st).dn2.data(), s.rows * s.D); }
void temporal_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.temporal_partial.data(), b.temporal_out, s.rows * s.D);
}
void temporal_residual_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  add(b.x_mid.data(), x_in(s, st), b.temporal_res, s.res_rows * s.D);
}
void temporal_residual_bwd(State& s, const Step& st) {  // dtemporal_out = d x_in (so far) = d x_mid
  auto& b = lb(s, st);
  (s.rs_ag ? b.dtemporal_out_loc : b.dtemporal_out) = b.dx_mid;  // rs_ag: the exit's all-gather makes dtemporal_out
  s.dxs[static_cast<std::size_t>(st.layer)] = b.dx_mid;
}

// Gated MLP, Megatron split: W1, W2 by columns (F/t), W3 by rows, all-reduce after W3.
// A parallel block (transformer `block: parallel`) feeds the MLP norm1's output, its input
// gradient joins norm1's, and W3 adds the attention branch's output before the one exit.
const float* mlp_in(const State& s, const LayerBufs& b) { return s.m.parallel_block ? b.n1.data() : b.n2.data(); }
float* dmlp_in(const State& s, LayerBufs& b) { return s.m.parallel_block ? b.dn1.data() : b.dn2.data(); }
void mlp_w1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.h1.data(), mlp_in(s, b), s.par(st.layer, Param::mlp_w1), s.opt_par(st.layer, Param::mlp_b1), s.rows, s.D,
                    s.mlp_local);
}
void mlp_w2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.h2.data(), mlp_in(s, b), s.par(st.layer, Param::mlp_w2), s.opt_par(st.layer, Param::mlp_b2), s.rows, s.D,
                    s.mlp_local);
}
void mlp_act_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_forward(b.mlp_act.data(), b.h1.data(), b.h2.data(), s.rows * s.mlp_local);
}
void mlp_w3_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_forward(b.mlp_partial.data(), b.mlp_act.data(), s.par(st.layer, Param::mlp_w3),
                    s.bias_after_reduce(st.layer, Param::mlp_b3), s.rows, s.mlp_local, s.D);
  if (s.m.parallel_block) add(b.mlp_partial.data(), b.mlp_partial.data(), b.temporal_partial.data(), s.rows * s.D);
}
void mlp_out_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  allreduce_into(s, st, b.mlp_partial.data(), b.mlp_out, s.rows * s.D);
}
void mlp_residual_fwd(State& s, const Step& st) {  // a parallel block adds both branches to the layer's input
  auto& b = lb(s, st);
  add(s.xs[static_cast<std::size_t>(st.layer) + 1].data(), s.m.parallel_block ? x_in(s, st) : b.x_mid.data(), b.mlp_res,
      s.res_rows * s.D);
}
}  // namespace
void mlp_residual_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  const Vec& dy = s.dxs[static_cast<std::size_t>(st.layer) + 1];
  (s.rs_ag ? b.dmlp_out_loc : b.dmlp_out) = dy;  // rs_ag: the exit's all-gather makes dmlp_out
  if (s.m.parallel_block) s.dxs[static_cast<std::size_t>(st.layer)] = dy;  // norm1's backward adds to it
  else b.dx_mid = dy;
}
namespace {
void mlp_w3_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(b.dmlp_act.data(), nul(), nul(), b.dmlp_out.data(), b.mlp_act.data(), s.par(st.layer, Param::mlp_w3), s.rows,
                     s.mlp_local, s.D);
}
void mlp_w3_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::mlp_w3), s.opt_grad(st.layer, Param::mlp_b3), b.dmlp_out.data(),
                     b.mlp_act.data(), s.par(st.layer, Param::mlp_w3), s.rows, s.mlp_local, s.D);
}
void mlp_act_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::gelu_mul_backward(b.dh1.data(), b.dh2.data(), b.dmlp_act.data(), b.h1.data(), b.h2.data(), s.rows * s.mlp_local);
}
void mlp_w2_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(dmlp_in(s, b), nul(), nul(), b.dh2.data(), mlp_in(s, b), s.par(st.layer, Param::mlp_w2), s.rows, s.D,
                     s.mlp_local);
}
void mlp_w2_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::mlp_w2), s.opt_grad(st.layer, Param::mlp_b2), b.dh2.data(), mlp_in(s, b),
                     s.par(st.layer, Param::mlp_w2), s.rows, s.D, s.mlp_local);
}
void mlp_w1_dx(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(dmlp_in(s, b), nul(), nul(), b.dh1.data(), mlp_in(s, b), s.par(st.layer, Param::mlp_w1), s.rows, s.D,
                     s.mlp_local);
}
void mlp_w1_dw(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::linear_backward(nul(), s.grad(st.layer, Param::mlp_w1), s.opt_grad(st.layer, Param::mlp_b1), b.dh1.data(), mlp_in(s, b),
                     s.par(st.layer, Param::mlp_w1), s.rows, s.D, s.mlp_local);
}

// ---- LayerNorm (RWKV, transformer `norm: layernorm`) and the untied head ------------------------

void ln_final_fwd(State& s, const Step&) {
  K::layer_norm_forward(s.rs_ag ? s.final_norm_out_loc.data() : s.final_norm_out.data(), s.final_mean.data(), s.final_rstd.data(),
                        s.xs.back().data(), s.par(-2, Param::final_norm_scale), s.par(-2, Param::final_norm_bias), s.res_rows,
                        s.D, eps_of(s));
}
void ln_final_bwd(State& s, const Step&) {
  K::layer_norm_backward(s.dxs.back().data(), s.grad(-2, Param::final_norm_scale), s.grad(-2, Param::final_norm_bias),
                         s.rs_ag ? s.dfinal_norm_out_loc.data() : s.dfinal_norm_out.data(), s.final_mean.data(),
                         s.final_rstd.data(), s.xs.back().data(), s.par(-2, Param::final_norm_scale), s.res_rows, s.D);
}
// The untied head [D, V]: this rank's vocab columns.
void head_w_fwd(State& s, const Step&) {
  K::linear_forward(s.logits.data(), s.final_norm_out.data(), s.par(-3, Param::head_w), nullptr, s.rows, s.D, s.vocab_local);
  K::softmax_stats(s.stats.data(), s.logits.data(), s.rows, s.vocab_local);
}
void head_w_dx(State& s, const Step&) {
  zero(s.dfinal_norm_out);
  K::linear_backward(s.dfinal_norm_out.data(), nul(), nul(), s.dlogits.data(), s.final_norm_out.data(), s.par(-3, Param::head_w),
                     s.rows, s.D, s.vocab_local);
}
void head_w_dw(State& s, const Step&) {
  K::linear_backward(nul(), s.grad(-3, Param::head_w), nul(), s.dlogits.data(), s.final_norm_out.data(), s.par(-3, Param::head_w),
                     s.rows, s.D, s.vocab_local);
}
void ln1_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_forward(n1_out(s, b), b.mean1.data(), b.rstd1.data(), x_in(s, st), s.par(st.layer, Param::norm1_scale),
                        s.par(st.layer, Param::norm1_bias), s.res_rows, s.D, eps_of(s));
}
void ln1_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_backward(s.dxs[static_cast<std::size_t>(st.layer)].data(), s.grad(st.layer, Param::norm1_scale),
                         s.grad(st.layer, Param::norm1_bias), dn1_in(s, b), b.mean1.data(), b.rstd1.data(), x_in(s, st),
                         s.par(st.layer, Param::norm1_scale), s.res_rows, s.D);
}
void ln2_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_forward(n2_out(s, b), b.mean2.data(), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, Param::norm2_scale),
                        s.par(st.layer, Param::norm2_bias), s.res_rows, s.D, eps_of(s));
}
void ln2_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  K::layer_norm_backward(b.dx_mid.data(), s.grad(st.layer, Param::norm2_scale), s.grad(st.layer, Param::norm2_bias), dn2_in(s, b),
                         b.mean2.data(), b.rstd2.data(), b.x_mid.data(), s.par(st.layer, Param::norm2_scale), s.res_rows, s.D);
}

// ---- ZeRO-3: gather a block's parameters from their owners before use --------------------------

void gather_range(State& s, const Step& st, const Range r) {
  const std::vector<int> counts = overlap_counts(r, s.zero3);
  need(s, Axis::fsdp, st)
      .allgather_v_inplace(std::span<float>(s.params_writable + r.begin, static_cast<std::size_t>(r.size())), counts);
}
// block: a layer, or −1 embed, −2 final, −3 head (ParamIndex)
void gather_block(State& s, const Step& st, i64 block) { gather_range(s, st, s.param_index->block_range(block)); }
void layer_params_gather(State& s, const Step& st) { gather_block(s, st, st.layer); }
void embed_params_gather(State& s, const Step& st) { gather_block(s, st, -1); }
// The final norm and the head: an untied head's block, or a tied head's table on a last stage
// that is not also the first (whose embedding steps gathered it) — lower.cpp's head_params.
std::vector<Range> head_ranges(const State& s) {
  std::vector<Range> r{s.param_index->block_range(-2)};
  if (!s.m.tied_embeddings) {
    r.push_back(s.param_index->block_range(-3));
  } else if (s.stage != 0) {
    const i64 table = s.param_index->offset(-1, Param::embed_table);
    r.push_back({table, table + s.param_index->count(-1, Param::embed_table)});
  }
  return r;
}
void head_params_gather(State& s, const Step& st) {
  for (const Range& r : head_ranges(s)) gather_range(s, st, r);
}

// ---- ZeRO-2/3: each block's gradient reduce-scattered as its backward ends ----------------------
// (lower.cpp grads_reduce_scatter; the runner's GradientSink does the reduction and clears the ranges)
void reduce_ranges(State& s, const Step& st, const std::vector<Range>& ranges) {
  if (!s.reduce_grads || !*s.reduce_grads)
    throw std::logic_error(std::string("executor: step '") + st.op + " " + st.name +
                           "' reduce-scatters gradients (ZeRO-2/3) but the caller gave no gradient sink");
  (*s.reduce_grads)(st, ranges);
}
void layer_grads_rs(State& s, const Step& st) { reduce_ranges(s, st, {s.param_index->block_range(st.layer)}); }
void embed_grads_rs(State& s, const Step& st) { reduce_ranges(s, st, {s.param_index->block_range(-1)}); }
void head_grads_rs(State& s, const Step& st) { reduce_ranges(s, st, head_ranges(s)); }

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
  const Range r = split_range(static_cast<i64>(v.size()), s.tp, s.tp_rank);
  return {v.data() + r.begin, static_cast<std::size_t>(r.size())};
}
void pp_gather(const State& s, const Step& st, Vec& v) {
  std::vector<int> counts;
  for (i64 i = 0; i < s.tp; ++i) counts.push_back(static_cast<int>(split_range(static_cast<i64>(v.size()), s.tp, i).size()));
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
  for (auto* v : {&b.dn1,
                  &b.dn2,
                  &b.dconv_out,
                  &b.dx_branch,
                  &b.dconv_state,
                  &b.dq_ext,
                  &b.dk_ext,
                  &b.dv_ext,
                  &b.dq_proj,
                  &b.dk_proj,
                  &b.dv,
                  &b.dy_branch,
                  &b.dscan_out,
                  &b.dh1,
                  &b.dh2,
                  &b.dmlp_act,
                  &b.dgated,
                  &b.dmix3,
                  &b.dr,
                  &b.dk,
                  &b.dwkv,
                  &b.do_,
                  &b.dcm_mix_k,
                  &b.dcm_mix_r,
                  &b.dcm_key,
                  &b.dcm_hidden,
                  &b.dcm_recept,
                  &b.dtm_shift_prev,
                  &b.dcm_shift_prev,
                  &b.dshift_delta,
                  &b.dlora_in,
                  &b.ddecay_delta,
                  &b.dlogw,
                  &b.dgate_g,
                  &b.dgn_out,
                  &b.dlora_z,
                  &b.dlora_tanh,
                  &b.dlora_mix,
                  &b.dmix5,
                  &b.ddecay_z,
                  &b.ddecay_tanh})
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
// Tokens are split over the tensor group in contiguous blocks of res_rows rows: a reduce-scatter of an
// [rows, D] buffer leaves rank r the sum of rows r·res_rows .., an all-gather rebuilds the [rows, D] buffer.
void rs_into(const State& s, const Step& st, const float* in, float* out, i64 rows) {
  need(s, st.axis, st)
      .reduce_scatter_sum(std::span<const float>(in, static_cast<std::size_t>(rows * s.D)),
                          std::span<float>(out, static_cast<std::size_t>(rows / s.tp * s.D)));
}
void ag_into(const State& s, const Step& st, const float* in, float* out, i64 rows) {
  need(s, st.axis, st)
      .allgather(std::span<const float>(in, static_cast<std::size_t>(rows / s.tp * s.D)),
                 std::span<float>(out, static_cast<std::size_t>(rows * s.D)));
}
// exits: the block's partial sums → this rank's tokens; backward: their gradient gathered
void embed_rs_fwd(State& s, const Step& st) { rs_into(s, st, s.embed_partial.data(), s.emb_out, s.rows); }
void embed_ag_bwd(State& s, const Step& st) {
  ag_into(s, st, s.m.is_rwkv() ? s.demb_loc.data() : s.dxs[0].data(), s.demb.data(), s.rows);
}
void temporal_rs_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  rs_into(s, st, b.temporal_partial.data(), b.temporal_out, s.rows);
}
void temporal_ag_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  ag_into(s, st, b.dtemporal_out_loc.data(), b.dtemporal_out.data(), s.rows);
}
void mlp_rs_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  rs_into(s, st, b.mlp_partial.data(), b.mlp_out, s.rows);
}
void mlp_ag_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  ag_into(s, st, b.dmlp_out_loc.data(), b.dmlp_out.data(), s.rows);
}
// RWKV's channel mix: the residual's gradient covers this rank's tokens; the gate's backward needs
// every token of this rank's channels, so the token slices are gathered (lower.cpp "cm.out_grad").
void cm_out_grad_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  ag_into(s, st, b.dmlp_out_loc.data(), b.dmlp_out.data(), s.rows);
}
// entries: the norm output gathered to every token; backward: the input gradient reduce-scattered
void in1_ag_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  ag_into(s, st, b.n1_loc.data(), b.n1.data(), s.rows);
}
void in1_rs_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  rs_into(s, st, b.dn1.data(), b.dn1_loc.data(), s.rows);
}
void in2_ag_fwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  ag_into(s, st, b.n2_loc.data(), b.n2.data(), s.rows);
}
void in2_rs_bwd(State& s, const Step& st) {
  auto& b = lb(s, st);
  rs_into(s, st, b.dn2.data(), b.dn2_loc.data(), s.rows);
}
void head_ag_fwd(State& s, const Step& st) { ag_into(s, st, s.final_norm_out_loc.data(), s.final_norm_out.data(), s.rows); }
void head_rs_bwd(State& s, const Step& st) { rs_into(s, st, s.dfinal_norm_out.data(), s.dfinal_norm_out_loc.data(), s.rows); }
// The entry's input is saved sharded in a memory-bound implementation, so backward gathers it again
// for the weight gradients (priced overlapped). The executor keeps the gathered input anyway; it
// performs the gather into the same buffer (same values): the MLP's first, then the mixer's.
void regather_bwd(State& s, const Step& st) {
  if (st.layer < 0) return ag_into(s, st, s.final_norm_out_loc.data(), s.final_norm_out.data(), s.rows);
  auto& b = lb(s, st);
  if (b.regathers++ == 0 && !s.m.parallel_block)  // a parallel block has one entry: norm1's
    ag_into(s, st, b.n2_loc.data(), b.n2.data(), s.rows);
  else
    ag_into(s, st, b.n1_loc.data(), b.n1.data(), s.rows);
}

}  // namespace
void fused(State&, const Step&) {}  // work done inside a neighbouring step's kernel (named in the table)

void add_common_handlers(Table& t) {
  add_entries(t, {
      // pipeline transfers, ZeRO-3 gathers, embedding and head
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
      {step_key(ops::reduce_scatter, tensors::grads), {nullptr, layer_grads_rs}},
      {step_key(ops::reduce_scatter, tensors::embed_grads), {nullptr, embed_grads_rs}},
      {step_key(ops::reduce_scatter, tensors::head_grads), {nullptr, head_grads_rs}},
      {step_key(ops::embedding, tensors::embed_table), {embed_fwd, embed_bwd}},
      {step_key(ops::layernorm, tensors::final_norm), {ln_final_fwd, ln_final_bwd}},
      {step_key(ops::logits, tensors::head_w), {head_w_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::head_w), {nullptr, head_w_dx}}, {step_key(ops::linear_dw, tensors::head_w), {nullptr, head_w_dw}},
      // LayerNorm blocks (RWKV, transformer `norm: layernorm`); the RWKV mixers' reductions and residual
      {step_key(ops::layernorm, tensors::norm1), {ln1_fwd, ln1_bwd}},
      {step_key(ops::layernorm, tensors::norm2), {ln2_fwd, ln2_bwd}},
      {step_key(ops::all_reduce, tensors::tm_in_grad), {nullptr, in_grad1_bwd}},
      {step_key(ops::all_reduce, tensors::cm_in_grad), {nullptr, in_grad2_bwd}},
      {step_key(ops::all_reduce, tensors::tm_out), {temporal_out_fwd, nullptr}},
      {step_key(ops::add, tensors::tm_residual), {temporal_residual_fwd, temporal_residual_bwd}},
      {step_key(ops::all_gather, tensors::cm_out_grad), {nullptr, cm_out_grad_bwd}},
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
      {step_key(ops::rmsnorm, tensors::final_norm), {final_norm_fwd, final_norm_bwd}},
      {step_key(ops::all_reduce, tensors::head_in_grad), {nullptr, head_in_grad_bwd}},
      {step_key(ops::logits, tensors::embed_table), {logits_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::embed_table), {nullptr, head_dx_bwd}},
      {step_key(ops::linear_dw, tensors::embed_table), {nullptr, head_dw_bwd}},
      {step_key(ops::all_reduce, tensors::loss_stats), {loss_stats_fwd, nullptr}},
      {step_key(ops::softmax_xent, tensors::loss), {softmax_xent_fwd, softmax_xent_bwd}},
      {step_key(ops::metric_xent, tensors::loss), {metric_xent_fwd, nullptr}},
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
      {step_key(ops::linear, tensors::mlp_w3), {mlp_w3_fwd, nullptr}},
      {step_key(ops::linear_dx, tensors::mlp_w3), {nullptr, mlp_w3_dx}}, {step_key(ops::linear_dw, tensors::mlp_w3), {nullptr, mlp_w3_dw}},
      {step_key(ops::linear_dx, tensors::mlp_w2), {nullptr, mlp_w2_dx}}, {step_key(ops::linear_dw, tensors::mlp_w2), {nullptr, mlp_w2_dw}},
      {step_key(ops::linear_dx, tensors::mlp_w1), {nullptr, mlp_w1_dx}}, {step_key(ops::linear_dw, tensors::mlp_w1), {nullptr, mlp_w1_dw}},
      {step_key(ops::all_reduce, tensors::mlp_out), {mlp_out_fwd, nullptr}},
      {step_key(ops::add, tensors::mlp_residual), {mlp_residual_fwd, mlp_residual_bwd}},
  });
}

}  // namespace scanshard::train::exec
