// train/executor_state.hpp — private to train/: the Executor's State (every buffer of one
// micro-batch), the helpers the handler files share, and the handler table they register into
// (each file also sizes its family's layer buffers).
// For: executor.cpp (sizing, binding, running) and the handler files exec_common.cpp (embedding,
// head, norms, residuals, gated MLP, ZeRO-3 gathers, pipeline transfers, rs_ag),
// exec_recurrent.cpp (Griffin/Hawk RG-LRU block), exec_attention.cpp (attention, MQA, the
// transformer's MLP variants, positions and dropout), exec_rwkv4.cpp (RWKV-4 time mix, the RWKV
// channel mix, the WKV carry of both generations), exec_rwkv6.cpp (RWKV-6 time mix).
// Not for: anything outside train/ (the public interface is executor.hpp).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"
#include "train/executor.hpp"
#include "train/wire.hpp"

// each kernels/*.hpp adds its kernels to fast::; the handler files include those they call
namespace scanshard::kernels::fast {}

namespace scanshard::train {

namespace K = scanshard::kernels::fast;
using Vec = kernels::AlignedVec;  // whole cache lines: see kernels.hpp

// ---- parameters, resolved once ---------------------------------------------------------------

// Every parameter tensor a handler reads, by its name inside its block (program/model.cpp's
// parameter_tensors names them; tests/unit/test_steps.cpp checks both lists agree).
// clang-format off
#define SCANSHARD_EXEC_PARAMS(X) \
  X(embed_table, "embed.table") X(embed_positions, "embed.positions") X(embed_norm_scale, "embed_norm.scale") \
  X(embed_norm_bias, "embed_norm.bias") X(final_norm_scale, "final_norm.scale") \
  X(final_norm_bias, "final_norm.bias") X(head_w, "head.w") \
  X(norm1_scale, "norm1.scale") X(norm1_bias, "norm1.bias") X(norm2_scale, "norm2.scale") \
  X(norm2_bias, "norm2.bias") \
  X(mlp_w1, "mlp.w1") X(mlp_b1, "mlp.b1") X(mlp_w2, "mlp.w2") X(mlp_b2, "mlp.b2") X(mlp_w3, "mlp.w3") \
  X(mlp_b3, "mlp.b3") \
  X(rec_wy, "rec.wy") X(rec_by, "rec.by") X(rec_wx, "rec.wx") X(rec_bx, "rec.bx") X(rec_conv_w, "rec.conv_w") \
  X(rec_conv_b, "rec.conv_b") X(rec_gate_a_w, "rec.gate_a_w") X(rec_gate_a_b, "rec.gate_a_b") \
  X(rec_gate_x_w, "rec.gate_x_w") X(rec_gate_x_b, "rec.gate_x_b") X(rec_lambda, "rec.lambda") \
  X(rec_wo, "rec.wo") X(rec_bo, "rec.bo") \
  X(attn_wq, "attn.wq") X(attn_bq, "attn.bq") X(attn_wk, "attn.wk") X(attn_bk, "attn.bk") X(attn_wv, "attn.wv") \
  X(attn_bv, "attn.bv") X(attn_wo, "attn.wo") X(attn_bo, "attn.bo") \
  X(tm_mu_r, "tm.mu_r") X(tm_mu_k, "tm.mu_k") X(tm_mu_v, "tm.mu_v") X(tm_mu_x, "tm.mu_x") X(tm_mu, "tm.mu") \
  X(tm_lora_a, "tm.lora_a") X(tm_lora_b, "tm.lora_b") X(tm_decay, "tm.decay") X(tm_decay_a, "tm.decay_a") \
  X(tm_decay_b, "tm.decay_b") X(tm_bonus, "tm.bonus") X(tm_wr, "tm.wr") X(tm_wk, "tm.wk") X(tm_wv, "tm.wv") \
  X(tm_wg, "tm.wg") X(tm_wo, "tm.wo") X(tm_gn_scale, "tm.gn_scale") X(tm_gn_bias, "tm.gn_bias") \
  X(cm_mu_k, "cm.mu_k") X(cm_mu_r, "cm.mu_r") X(cm_wk, "cm.wk") X(cm_wv, "cm.wv") X(cm_wr, "cm.wr")
// clang-format on
enum class Param : std::uint8_t {
#define SCANSHARD_EXEC_PARAM_ENUM(id, name) id,
  SCANSHARD_EXEC_PARAMS(SCANSHARD_EXEC_PARAM_ENUM)
#undef SCANSHARD_EXEC_PARAM_ENUM
};
inline constexpr const char* kParamNames[] = {
#define SCANSHARD_EXEC_PARAM_NAME(id, name) name,
    SCANSHARD_EXEC_PARAMS(SCANSHARD_EXEC_PARAM_NAME)
#undef SCANSHARD_EXEC_PARAM_NAME
};
inline constexpr std::size_t kParamCount = sizeof(kParamNames) / sizeof(kParamNames[0]);

// Where each block's parameters sit in this rank's flat buffer (ShardLayout order), looked up by
// name once when the Executor binds its step lists; a handler's parameter is then an array
// access. Blocks: layer l ≥ 0, −1 embed, −2 final, −3 head.
class ParamIndex {
 public:
  ParamIndex(const ShardLayout& lay, i64 depth);
  static std::string block(i64 layer);
  // The tensor's position in the layout, or −1 when the model has none (transformer `bias: false`).
  std::int32_t tensor(i64 layer, Param p) const { return tensor_[row(layer)][static_cast<std::size_t>(p)]; }
  // Its offset in the flat buffer; a parameter the model lacks is a logic_error naming it.
  i64 offset(i64 layer, Param p) const;
  i64 count(i64 layer, Param p) const;  // elements of this rank's shard
  // The span of the flat buffer that holds block `layer`'s parameters (ZeRO-3's gathers).
  Range block_range(i64 layer) const { return block_range_[row(layer)]; }

 private:
  std::size_t row(i64 layer) const { return static_cast<std::size_t>(layer + 3); }
  std::size_t present(i64 layer, Param p) const;  // tensor(layer, p), or a logic_error naming it
  const ShardLayout& lay_;
  std::vector<std::array<std::int32_t, kParamCount>> tensor_;  // [block row][Param]
  std::vector<Range> block_range_;
};

// ---- state --------------------------------------------------------------------------------------

// Buffers of one layer. Forward values are kept for backward (the runner's models are small).
// Shapes: rows = B·T token rows of this rank; widths as in State (D, width_local, rec_local, ...).
// A gradient buffer is its forward buffer's name with a leading d. *_loc: under rs_ag, this
// rank's res_rows rows of a residual-region buffer (State::rs_ag).
struct LayerBufs {
  Temporal kind = Temporal::recurrent;
  // ---- shared by every block: the two norms, the temporal block's and the MLP's outputs
  Vec n1, rstd1, x_mid, n2, rstd2;  // norm1 output and 1/rms; the residual after the temporal block; norm2's
  // [rows, D] the temporal block's (recurrent, attention, time mix) output projection: a partial sum when tensor > 1
  Vec temporal_partial;
  Vec temporal_sum;               // its all-reduced sum when tensor > 1
  float* temporal_out = nullptr;  // the all-reduced temporal output (aliases temporal_partial when tensor = 1)
  Vec h1, h2, mlp_act;       // [rows, mlp_local] gated MLP: h1 = n2·W1, h2 = n2·W2, mlp_act = gelu(h1) ⊙ h2 (or SwiGLU, GeLU)
  Vec mlp_partial;           // [rows, D] mlp_act·W3: a partial sum when tensor > 1 (also the RWKV channel mix's value)
  Vec mlp_sum;               // its all-reduced sum when tensor > 1
  float* mlp_out = nullptr;  // the all-reduced MLP output (aliases mlp_partial when tensor = 1)
  // ---- recurrent (Griffin / Hawk RG-LRU block), [rows, rec_local] unless noted
  Vec y_branch;               // n1·Wy + by: the gate branch, GeLU'd inside rec.gated
  Vec x_branch;               // n1·Wx + bx: the Conv1D's input
  Vec conv_state;             // [B, conv_width − 1, rec_local] the left shard's last rows (sequence > 1)
  Vec conv_out;               // the Conv1D's output: the scan's input x and the gates' input
  Vec gate_a, gate_x;         // the recurrence and input gates' pre-activations (block-diagonal)
  Vec scan_local;             // the chunk-local scan output (from h = 0 when the sequence is sharded)
  Vec scan_fixed;             // scan_local after the carry fix (sequence > 1)
  Vec h_out, decay, h_in;     // [B, rec_local] the chunk's final state from 0, Π a over the chunk, the true incoming state
  Vec decay_all;              // [sp, B, rec_local] every shard's Π a, kept from the forward all-gather for the backward's fold
  Vec gated;                  // gelu(y_branch) ⊙ scan_out: the output projection's input
  float* scan_out = nullptr;  // the scan output after the carry fix (aliases scan_local when sequence = 1)
  // ---- attention (ext: `halo` rows from the left shards, then the local T rows, per sequence)
  Vec q_proj, k_proj, v;                      // [rows, heads·N] the projections before rope (v: also RWKV's value)
  Vec q_ext, k_ext, v_ext, ctx_ext, lse_ext;  // [B, halo + T, ...] queries after rope, keys, values, context, log Σ exp
  Vec ctx;                                    // [rows, heads_local·N] this rank's rows of the context: W_o's input
  Vec probs, dprobs;                          // materialized attention: probabilities [B, H, T, halo + T] and their gradient
  // dropout: the dropped block outputs the residual adds read (temporal_res / mlp_res alias
  // temporal_out / mlp_out without dropout), their 1-byte masks, and a materialized core's
  // dropped probabilities P' and mask
  Vec temporal_dropped, mlp_dropped, probs_dropped;
  std::vector<std::uint8_t> temporal_mask, mlp_mask, probs_mask;
  const float* temporal_res = nullptr;
  const float* mlp_res = nullptr;
  std::vector<std::uint8_t> reset_ext;  // [B, halo + T] a document starts at this ext row
  // ---- RWKV-4 time mix ([rows, width_local] unless noted) and the RWKV channel mix
  Vec mean1, mean2;           // the LayerNorms' means (rstd1, rstd2 above)
  Vec mix3;                   // [3, rows, D] the token-shift mixes fed to W_r, W_k, W_v
  Vec r, k, wkv, o;           // receptance, key, the WKV output, σ(r) ⊙ wkv (W_o's input)
  Vec wkv_ck;                 // RWKV-4: the WKV forward's checkpoints for its backward (program/lower.hpp)
  Vec cm_mix_k, cm_mix_r;     // [rows, D] the channel mix's token-shift mixes fed to W_k and W_r
  Vec cm_key;                 // [rows, mlp_local] cm_mix_k·W_k
  Vec cm_hidden;              // [rows, mlp_local] relu(cm_key)²: W_v's input (its output is mlp_partial)
  Vec cm_value_sum;           // [rows, D] the all-reduced value when tensor > 1
  Vec cm_recept;              // [rows, width_local] cm_mix_r·W_r
  Vec cm_value_local;         // [rows, width_local] this rank's columns of the value
  Vec cm_gated;               // [rows, width_local] σ(cm_recept) ⊙ cm_value_local
  Vec cm_gathered;            // [rows, D] every rank's cm_gated columns when tensor > 1
  float* cm_value = nullptr;  // the all-reduced value (aliases mlp_partial when tensor = 1)
  float* cm_out = nullptr;    // the gathered gated output (aliases cm_gated when tensor = 1)
  Vec dmix3, dr, dk, dwkv, do_, dcm_mix_k, dcm_mix_r, dcm_key, dcm_hidden, dcm_value, dcm_recept;
  Vec dcm_value_slice;               // the gate's value-gradient columns when tensor > 1
  float* dcm_value_local = nullptr;  // the gate's value-gradient slice (aliases dcm_value when tensor = 1)
  // RWKV under sequence sharding: token-shift halos [B, D] of the time and channel mix, WKV-4 chunk
  // states [3,B,Dl], their gradients [2,B,Dl] (exec_rwkv4.cpp's WkvCarry); fold: the all-gather
  // carry's final state and summary of every shard, kept for backward
  Vec tm_shift_prev, dtm_shift_prev, cm_shift_prev, dcm_shift_prev, wkv_loc, st_loc, st_in, st_fin, logdec, dloc, dst_out, fold;
  // ---- RWKV-6 time mix (DESIGN §3.3)
  Vec shift_delta;               // [rows, D] x_{t−1} − x_t
  Vec lora_in;                   // [rows, D] x + shift_delta ⊙ μ_x: the shared LoRA's input
  Vec lora_z, lora_tanh;         // [rows, 5·lora_rank_mix] LoRA A's output and its tanh
  Vec lora_mix;                  // [5, rows, D] LoRA B's five outputs
  Vec mix5;                      // [5, rows, D] the five data-dependent mixes (w k v r g)
  Vec decay_z, decay_tanh;       // [rows, lora_rank_decay] the decay LoRA A's output and its tanh
  Vec decay_delta;               // [rows, width_local] the decay LoRA B's output z
  Vec logw;                      // [rows, width_local] log w = −exp(λ + z): the per-token decay's log
  Vec gate_g;                    // [rows, width_local] mix5[g]·W_g: the SiLU gate
  Vec gn_out, gn_mean, gn_rstd;  // the GroupNorm's output and per-head statistics [rows, heads]
  Vec dshift_delta, dlora_in, dlora_z, dlora_tanh, dlora_mix, dmix5, ddecay_z, ddecay_tanh, ddecay_delta, dlogw, dgate_g, dgn_out;
  // ---- backward
  Vec n1_loc, n2_loc, dn1_loc, dn2_loc, dtemporal_out_loc, dmlp_out_loc;  // rs_ag: this rank's tokens (see State::rs_ag)
  int regathers = 0;  // rs_ag: "tp.regather_input" steps seen in this backward (MLP's first, then the mixer's)
  Vec dmlp_out, dmlp_act, dh1, dh2, dn2, dx_mid, dtemporal_out, dgated, dy_branch, dscan_out, dconv_out, dgate_a, dgate_x,
      dx_branch, dconv_state, dh_out, dh_loc, dn1;
  Vec dctx_ext, dq_ext, dk_ext, dv_ext, dq_proj, dk_proj, dv;
};

struct Executor::State {
  const ModelSpec& m;
  const Plan& p;
  const ShardLayout& lay;
  MeshComms comms;
  // Dimensions (STYLE.md's vocabulary where it has a letter; *_local: this tensor rank's share)
  i64 B;                                // sequences in the micro-batch
  i64 T;                                // this rank's tokens of each sequence (seq_len / sequence)
  i64 rows;                             // B·T: the token rows every tensor-parallel block computes
  i64 D;                                // model width
  i64 width_local;                      // D / tensor: RWKV's channels on this rank
  i64 vocab, vocab_begin, vocab_local;  // V; this rank's vocab shard [vocab_begin, vocab_begin + vocab_local)
  i64 rec_local;                        // recurrent width R / tensor
  i64 mlp_local;                        // MLP width F / tensor
  i64 heads_local;                      // query heads H / tensor
  i64 kv_heads_local;                   // K/V heads on this rank: kv_heads / tensor, or the 1 replicated head its queries share
  i64 N;                                // head dimension
  i64 rope_dims;                        // rotary dimensions of each head (rope_fraction · N)
  i64 conv_width;                       // Conv1D taps K
  i64 window;                           // local attention window W (0: global)
  i64 gate_blocks_local;                // the RG-LRU gates' diagonal blocks / tensor
  // Mesh coordinates: tensor-parallel size and rank, sequence-parallel size and rank (the shard
  // index), and the K/V rows before the local ones (local attention's halo or, ring, every earlier shard)
  i64 tp = 1, tp_rank = 0, sp = 1, sp_rank = 0, halo = 0;
  // tensor_comm rs_ag (Megatron sequence parallelism): the residual region (norms, residual adds,
  // positions, pipeline transfers) holds this rank's res_rows = rows / tensor token rows, rows
  // res_row0 .. res_row0 + res_rows of the micro-batch (all rows, from 0, without rs_ag); norms
  // write their res_rows-row outputs to the *_loc buffers, which the entry all-gathers turn into
  // the full inputs of the tensor-parallel blocks.
  bool rs_ag = false;
  i64 res_rows = 0, res_row0 = 0;
  i64 stage = 0;
  std::vector<Range> chunks;  // the layers of each model chunk of this stage (one without interleaving)
  i64 chunk = 0;              // the chunk being run (its pipeline transfers)
  std::vector<MPI_Request> pending;  // pipeline sends of this slot, from copies in send_bufs
  SendCopies send_bufs;
  float embed_scale = 1;
  // dropout: probability, this micro-batch's BatchIndex, and per residual-region row (res_rows rows)
  // its sequence's index in the global batch and its global position; the embedding's mask
  double pdrop = 0;
  BatchIndex ix;
  std::vector<std::int64_t> row_seq, row_pos;
  std::vector<std::uint8_t> emask;
  const float* params = nullptr;     // parameters of this rank (ShardLayout order)
  float* params_writable = nullptr;  // the same, for ZeRO-3's gathers
  std::vector<Range> zero3;          // ZeRO-3: the part of the flat buffer each fsdp rank owns
  float* grads = nullptr;            // gradients (ShardLayout order)
  const GradientSink* reduce_grads = nullptr;  // ZeRO-2/3: the runner's per-block reduce-scatter (Executor::backward)
  std::vector<std::int32_t> tokens, targets, pos;
  std::vector<std::uint8_t> reset;
  std::vector<Vec> xs;  // residual stream: xs[l] enters layer l, xs[L] leaves the last
  std::vector<Vec> dxs;
  Vec emb, demb;  // RWKV: the embedding before its LayerNorm (and its gradient; also the gathered one under rs_ag)
  Vec embed_norm_mean, embed_norm_rstd;         // RWKV: the embedding LayerNorm's statistics
  Vec demb_loc;                                 // RWKV under rs_ag: the LayerNorm's input gradient, this rank's tokens
  float* emb_out = nullptr;                     // where the (reduced) lookup lands: xs[0], or emb (RWKV)
  Vec embed_partial;                            // [rows, D] this vocab shard's lookup: a partial sum when tensor > 1
  Vec final_norm_out, final_mean, final_rstd;   // the final norm's output [rows, D] and statistics
  Vec final_norm_out_loc, dfinal_norm_out_loc;  // rs_ag: this rank's rows of the final norm's output and gradient
  Vec logits;  // [rows, vocab_local] this rank's vocab columns (softmax probabilities after the loss step)
  Vec stats;   // (max, Σ exp) of each row's logits (2 per row), merged over the tensor group
  Vec losses, dlosses, dlogits, dfinal_norm_out;
  Vec metric_probs, metric_losses;  // Plan::logit_metrics: each train metric's own softmax and per-token losses (discarded)
  std::vector<LayerBufs> layers;
  Vec fix_scratch;  // the WKV carry fix's discarded gradients: kept, so no step pays its page faults

  std::shared_ptr<const ParamIndex> param_index;  // shared by the Executor's slots, built when it binds

  State(const ModelSpec& m_, const Plan& p_, const ShardLayout& l_, MeshComms c) : m(m_), p(p_), lay(l_), comms(c) {}
  const float* par(i64 layer, Param p) const { return params + param_index->offset(layer, p); }
  float* grad(i64 layer, Param p) const { return grads + param_index->offset(layer, p); }
  // Biases the model may not have (transformer `bias: false`): nullptr when absent.
  bool has(i64 layer, Param p) const { return param_index->tensor(layer, p) >= 0; }
  const float* opt_par(i64 layer, Param p) const { return has(layer, p) ? par(layer, p) : nullptr; }
  float* opt_grad(i64 layer, Param p) const { return has(layer, p) ? grad(layer, p) : nullptr; }
  const float* bias_after_reduce(i64 layer, Param p) const { return tp_rank == 0 ? opt_par(layer, p) : nullptr; }
};

namespace exec {

using State = Executor::State;
inline float* nul() { return nullptr; }
inline void zero(Vec& v) { std::fill(v.begin(), v.end(), 0.0f); }
inline void add(float* out, const float* a, const float* b, i64 n) { for (i64 i = 0; i < n; ++i) out[i] = a[i] + b[i]; }

inline int left(const State& s) { return s.sp_rank > 0 ? static_cast<int>(s.sp_rank - 1) : MPI_PROC_NULL; }
inline int right(const State& s) { return s.sp_rank + 1 < s.sp ? static_cast<int>(s.sp_rank + 1) : MPI_PROC_NULL; }

// The model's norm epsilon (RMSNorm and LayerNorm alike).
inline float eps_of(const State& s) { return static_cast<float>(s.m.norm_eps); }
inline LayerBufs& lb(State& s, const Step& st) { return s.layers[static_cast<std::size_t>(st.layer)]; }
inline const float* x_in(const State& s, const Step& st) { return s.xs[static_cast<std::size_t>(st.layer)].data(); }
// A norm's output and the gradient its backward reads: this rank's tokens under rs_ag.
inline float* n1_out(State& s, LayerBufs& b) { return s.rs_ag ? b.n1_loc.data() : b.n1.data(); }
inline float* n2_out(State& s, LayerBufs& b) { return s.rs_ag ? b.n2_loc.data() : b.n2.data(); }
inline const float* dn1_in(State& s, LayerBufs& b) { return s.rs_ag ? b.dn1_loc.data() : b.dn1.data(); }
inline const float* dn2_in(State& s, LayerBufs& b) { return s.rs_ag ? b.dn2_loc.data() : b.dn2.data(); }

namespace KD = scanshard::kernels;  // the reference-namespace helpers (dropout masks, WKV chunk kernels)
inline i64 heads6(const State& s) { return s.width_local / s.m.head_size; }  // this tensor rank's WKV heads

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

// ---- sizing: executor.cpp's init_state calls these for each layer of the stage ----------------------

inline std::size_t sz(i64 n) { return static_cast<std::size_t>(n); }  // a buffer's element count
void size_rwkv_layer(const State& s, LayerBufs& b);                   // exec_rwkv4.cpp (both generations)
void size_rwkv6_time_mix(const State& s, LayerBufs& b);               // exec_rwkv6.cpp
void size_recurrent_layer(const State& s, LayerBufs& b);              // exec_recurrent.cpp
void size_attention_layer(const State& s, LayerBufs& b);              // exec_attention.cpp

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
