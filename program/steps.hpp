// program/steps.hpp — the step vocabulary, typed: every op a StepProgram step can carry (with its
// op class and a display name) and every step name (the tensor a step concerns), as named
// constants. lower() emits only these; the executor's handler table (train/executor.cpp), the
// comparison's op groups (reports/compare.cpp) and calibrate's kernel benchmarks name steps
// through them, so a renamed step is a compile error in every layer, and a unit test
// (tests/unit/test_steps.cpp) walks every family's programs and checks that every step's op is
// registered with the class the lowering gave it and that the executor has a handler for it.
//
// Strings, not an enum, because the same words are the trace file's vocabulary (program/trace.hpp,
// `scanshard train --trace`) and keys of a cluster file's efficiency.ops.
// For: naming steps. Not for: what a step costs (lower.cpp computes it, sim/ prices it).
#pragma once
#include <array>
#include <string>
#include <cstdint>
#include <string_view>

namespace scanshard {

// What prices a compute step (sim/cost.cpp: the class's efficiency), and comm for communication.
enum class OpClass : std::uint8_t { gemm, attention, scan, elementwise, norm, embedding, optimizer, comm };
constexpr int kOpClassCount = 8;
const char* to_string(OpClass c);  // program/lower.cpp

// Ops: the kernel or collective a step runs ("linear", "rglru.scan", "all_reduce").
namespace ops {
inline constexpr char adamw[] = "adamw";
inline constexpr char add[] = "add";
inline constexpr char add_positions[] = "add_positions";
inline constexpr char all_gather[] = "all_gather";
inline constexpr char all_reduce[] = "all_reduce";
inline constexpr char attention_context[] = "attention.context";
inline constexpr char attention_global[] = "attention.global";
inline constexpr char attention_local[] = "attention.local";
inline constexpr char attention_scores[] = "attention.scores";
inline constexpr char checkpoint[] = "checkpoint";
inline constexpr char conv1d[] = "conv1d";
inline constexpr char ddlerp[] = "ddlerp";
inline constexpr char dropout[] = "dropout";
inline constexpr char embedding[] = "embedding";
inline constexpr char exp_exp[] = "exp_exp";
inline constexpr char gelu[] = "gelu";
inline constexpr char gelu_mul[] = "gelu_mul";
inline constexpr char grad_accumulate[] = "grad_accumulate";
inline constexpr char groupnorm[] = "groupnorm";
inline constexpr char layernorm[] = "layernorm";
inline constexpr char linear[] = "linear";
inline constexpr char linear_dw[] = "linear.dw";
inline constexpr char linear_dx[] = "linear.dx";
inline constexpr char logits[] = "logits";
inline constexpr char mul[] = "mul";
inline constexpr char reduce_scatter[] = "reduce_scatter";
inline constexpr char relu_sq[] = "relu_sq";
inline constexpr char rglru_decay[] = "rglru.decay";
inline constexpr char rglru_scan[] = "rglru.scan";
inline constexpr char rmsnorm[] = "rmsnorm";
inline constexpr char rope[] = "rope";
inline constexpr char scan_carry_fix[] = "scan.carry_fix";
inline constexpr char send_recv[] = "send_recv";
inline constexpr char sigmoid_mul[] = "sigmoid_mul";
inline constexpr char silu_mul[] = "silu_mul";
inline constexpr char softmax_xent[] = "softmax_xent";
inline constexpr char tanh[] = "tanh";
inline constexpr char token_shift[] = "token_shift";
inline constexpr char wkv4_scan[] = "wkv4.scan";
inline constexpr char wkv6_chunked[] = "wkv6.chunked";
inline constexpr char wkv6_scan[] = "wkv6.scan";
inline constexpr char zero[] = "zero";
inline constexpr char blockdiag[] = "blockdiag";
}  // namespace ops

// Step names: the tensor or buffer a step concerns ("mlp.w1", "rec.scan", "grads").
namespace tensors {
inline constexpr char attn_core[] = "attn.core";
inline constexpr char attn_dropout[] = "attn.dropout";
inline constexpr char attn_in_grad[] = "attn.in_grad";
inline constexpr char attn_kv_grads[] = "attn.kv_grads";
inline constexpr char attn_kv_halo[] = "attn.kv_halo";
inline constexpr char attn_out[] = "attn.out";
inline constexpr char attn_residual[] = "attn.residual";
inline constexpr char attn_ring_kv[] = "attn.ring_kv";
inline constexpr char attn_rope[] = "attn.rope";
inline constexpr char attn_scores_recompute[] = "attn.scores_recompute";
inline constexpr char attn_wk[] = "attn.wk";
inline constexpr char attn_wo[] = "attn.wo";
inline constexpr char attn_wq[] = "attn.wq";
inline constexpr char attn_wv[] = "attn.wv";
inline constexpr char cm_act[] = "cm.act";
inline constexpr char cm_gate[] = "cm.gate";
inline constexpr char cm_in_grad[] = "cm.in_grad";
inline constexpr char cm_mu_grads[] = "cm.mu_grads";
inline constexpr char cm_out[] = "cm.out";
inline constexpr char cm_out_grad[] = "cm.out_grad";
inline constexpr char cm_residual[] = "cm.residual";
inline constexpr char cm_shift[] = "cm.shift";
inline constexpr char cm_shift_halo[] = "cm.shift_halo";
inline constexpr char cm_value[] = "cm.value";
inline constexpr char cm_value_grad[] = "cm.value_grad";
inline constexpr char cm_wk[] = "cm.wk";
inline constexpr char cm_wr[] = "cm.wr";
inline constexpr char cm_wv[] = "cm.wv";
inline constexpr char embed_dropout[] = "embed.dropout";
inline constexpr char embed_out[] = "embed.out";
inline constexpr char embed_params[] = "embed.params";
inline constexpr char embed_positions[] = "embed.positions";
inline constexpr char embed_table[] = "embed.table";
inline constexpr char embed_norm[] = "embed_norm";
inline constexpr char final_norm[] = "final_norm";
inline constexpr char grad_buffers[] = "grad_buffers";
inline constexpr char grads[] = "grads";
inline constexpr char head_in_grad[] = "head.in_grad";
inline constexpr char head_params[] = "head.params";
inline constexpr char head_w[] = "head.w";
inline constexpr char loss[] = "loss";
inline constexpr char loss_stats[] = "loss.stats";
inline constexpr char mlp_act[] = "mlp.act";
inline constexpr char mlp_dropout[] = "mlp.dropout";
inline constexpr char mlp_in_grad[] = "mlp.in_grad";
inline constexpr char mlp_out[] = "mlp.out";
inline constexpr char mlp_residual[] = "mlp.residual";
inline constexpr char mlp_w1[] = "mlp.w1";
inline constexpr char mlp_w2[] = "mlp.w2";
inline constexpr char mlp_w3[] = "mlp.w3";
inline constexpr char norm1[] = "norm1";
inline constexpr char norm2[] = "norm2";
inline constexpr char params[] = "params";
inline constexpr char pipeline_activations[] = "pipeline.activations";
inline constexpr char pipeline_gradients[] = "pipeline.gradients";
inline constexpr char pipeline_recv_activations[] = "pipeline.recv_activations";
inline constexpr char pipeline_recv_gradients[] = "pipeline.recv_gradients";
inline constexpr char pipeline_send_activations[] = "pipeline.send_activations";
inline constexpr char pipeline_send_gradients[] = "pipeline.send_gradients";
inline constexpr char rec_conv[] = "rec.conv";
inline constexpr char rec_conv_halo[] = "rec.conv_halo";
inline constexpr char rec_decay[] = "rec.decay";
inline constexpr char rec_gate[] = "rec.gate";
inline constexpr char rec_gate_a[] = "rec.gate_a";
inline constexpr char rec_gate_x[] = "rec.gate_x";
inline constexpr char rec_gated[] = "rec.gated";
inline constexpr char rec_in_grad[] = "rec.in_grad";
inline constexpr char rec_out[] = "rec.out";
inline constexpr char rec_residual[] = "rec.residual";
inline constexpr char rec_scan[] = "rec.scan";
inline constexpr char rec_wo[] = "rec.wo";
inline constexpr char rec_wx[] = "rec.wx";
inline constexpr char rec_wy[] = "rec.wy";
inline constexpr char scan_carry[] = "scan.carry";
inline constexpr char tied_embedding_grads[] = "tied_embedding.grads";
inline constexpr char tm_decay[] = "tm.decay";
inline constexpr char tm_decay_a[] = "tm.decay_a";
inline constexpr char tm_decay_act[] = "tm.decay_act";
inline constexpr char tm_decay_b[] = "tm.decay_b";
inline constexpr char tm_gated[] = "tm.gated";
inline constexpr char tm_gn[] = "tm.gn";
inline constexpr char tm_in_grad[] = "tm.in_grad";
inline constexpr char tm_lora_a[] = "tm.lora_a";
inline constexpr char tm_lora_act[] = "tm.lora_act";
inline constexpr char tm_lora_b[] = "tm.lora_b";
inline constexpr char tm_mix[] = "tm.mix";
inline constexpr char tm_mu_grads[] = "tm.mu_grads";
inline constexpr char tm_out[] = "tm.out";
inline constexpr char tm_residual[] = "tm.residual";
inline constexpr char tm_shift[] = "tm.shift";
inline constexpr char tm_shift_halo[] = "tm.shift_halo";
inline constexpr char tm_wg[] = "tm.wg";
inline constexpr char tm_wk[] = "tm.wk";
inline constexpr char tm_wkv[] = "tm.wkv";
inline constexpr char tm_wo[] = "tm.wo";
inline constexpr char tm_wr[] = "tm.wr";
inline constexpr char tm_wv[] = "tm.wv";
inline constexpr char tp_regather_input[] = "tp.regather_input";
inline constexpr char tp_replicated_grads[] = "tp.replicated_grads";
}  // namespace tensors

// One registered op: its trace key, the op class that prices it (sim/cost.cpp picks the class's
// efficiency unless efficiency.ops has the kernel tag), and a display name.
struct OpKind {
  std::string_view key;
  OpClass cls;
  std::string_view display;
};

inline constexpr std::array<OpKind, 43> kOpKinds = {{
    {ops::adamw, OpClass::optimizer, "AdamW update of the owned parameters"},
    {ops::add, OpClass::elementwise, "residual add"},
    {ops::add_positions, OpClass::embedding, "learned position embeddings added (transformer)"},
    {ops::all_gather, OpClass::comm, "all-gather over a mesh axis"},
    {ops::all_reduce, OpClass::comm, "all-reduce (sum) over a mesh axis"},
    {ops::attention_context, OpClass::attention, "attention probabilities times values (materialized kernel)"},
    {ops::attention_global, OpClass::attention, "causal attention over the whole sequence (fused kernel)"},
    {ops::attention_local, OpClass::attention, "causal attention within a window (fused kernel)"},
    {ops::attention_scores, OpClass::attention, "attention scores and softmax (materialized kernel; recomputed in the fused backward)"},
    {ops::checkpoint, OpClass::optimizer, "checkpoint write (the runner's trace only; never lowered)"},
    {ops::conv1d, OpClass::elementwise, "causal depthwise Conv1D of the recurrent block"},
    {ops::ddlerp, OpClass::elementwise, "RWKV-6 data-dependent token mix"},
    {ops::dropout, OpClass::elementwise, "dropout mask and scale"},
    {ops::embedding, OpClass::embedding, "token embedding lookup"},
    {ops::exp_exp, OpClass::elementwise, "RWKV-6 decay w = exp(-exp(d))"},
    {ops::gelu, OpClass::elementwise, "GeLU"},
    {ops::gelu_mul, OpClass::elementwise, "gelu(a) * b, fused"},
    {ops::grad_accumulate, OpClass::elementwise, "the runner's gradient accumulation over micro-batches"},
    {ops::groupnorm, OpClass::norm, "GroupNorm (RWKV-6 heads)"},
    {ops::layernorm, OpClass::norm, "LayerNorm"},
    {ops::linear, OpClass::gemm, "GEMM forward, y = x W"},
    {ops::linear_dw, OpClass::gemm, "GEMM weight gradient, dW = x^T dy"},
    {ops::linear_dx, OpClass::gemm, "GEMM input gradient, dx = dy W^T"},
    {ops::logits, OpClass::gemm, "the head's logits GEMM with the per-token softmax statistics"},
    {ops::mul, OpClass::elementwise, "elementwise product"},
    {ops::reduce_scatter, OpClass::comm, "reduce-scatter (sum) over a mesh axis"},
    {ops::relu_sq, OpClass::elementwise, "squared ReLU (RWKV channel mix)"},
    {ops::rglru_decay, OpClass::scan, "RG-LRU decay a = sigma(-Lambda)^(c r) (fused into the scan)"},
    {ops::rglru_scan, OpClass::scan, "RG-LRU linear recurrence"},
    {ops::rmsnorm, OpClass::norm, "RMSNorm"},
    {ops::rope, OpClass::elementwise, "rotary position embedding"},
    {ops::scan_carry_fix, OpClass::elementwise, "sequence-parallel scan: the incoming carry applied to a shard"},
    {ops::send_recv, OpClass::comm, "point-to-point send/receive"},
    {ops::sigmoid_mul, OpClass::elementwise, "sigmoid(a) * b"},
    {ops::silu_mul, OpClass::elementwise, "silu(a) * b (SwiGLU)"},
    {ops::softmax_xent, OpClass::elementwise, "softmax cross-entropy loss"},
    {ops::tanh, OpClass::elementwise, "tanh (RWKV-6 LoRA)"},
    {ops::token_shift, OpClass::elementwise, "RWKV token shift (previous token's features)"},
    {ops::wkv4_scan, OpClass::scan, "RWKV-4 WKV recurrence"},
    {ops::wkv6_chunked, OpClass::gemm, "RWKV-6 WKV, chunked form (matrix products per chunk)"},
    {ops::wkv6_scan, OpClass::scan, "RWKV-6 WKV recurrence, sequential form"},
    {ops::zero, OpClass::elementwise, "clear of gradient buffers"},
    {ops::blockdiag, OpClass::gemm, "block-diagonal GEMM (RG-LRU gates; a kernel tag on linear steps, never an op)"},
}};

inline constexpr std::array<std::string_view, 99> kStepNames = {{
    tensors::attn_core, tensors::attn_dropout, tensors::attn_in_grad, tensors::attn_kv_grads, tensors::attn_kv_halo,
    tensors::attn_out, tensors::attn_residual, tensors::attn_ring_kv, tensors::attn_rope,
    tensors::attn_scores_recompute, tensors::attn_wk, tensors::attn_wo, tensors::attn_wq, tensors::attn_wv,
    tensors::cm_act, tensors::cm_gate, tensors::cm_in_grad, tensors::cm_mu_grads, tensors::cm_out,
    tensors::cm_out_grad, tensors::cm_residual, tensors::cm_shift, tensors::cm_shift_halo, tensors::cm_value,
    tensors::cm_value_grad, tensors::cm_wk, tensors::cm_wr, tensors::cm_wv, tensors::embed_dropout,
    tensors::embed_out, tensors::embed_params, tensors::embed_positions, tensors::embed_table, tensors::embed_norm,
    tensors::final_norm, tensors::grad_buffers, tensors::grads, tensors::head_in_grad, tensors::head_params,
    tensors::head_w, tensors::loss, tensors::loss_stats, tensors::mlp_act, tensors::mlp_dropout, tensors::mlp_in_grad,
    tensors::mlp_out, tensors::mlp_residual, tensors::mlp_w1, tensors::mlp_w2, tensors::mlp_w3, tensors::norm1,
    tensors::norm2, tensors::params, tensors::pipeline_activations, tensors::pipeline_gradients,
    tensors::pipeline_recv_activations, tensors::pipeline_recv_gradients, tensors::pipeline_send_activations,
    tensors::pipeline_send_gradients, tensors::rec_conv, tensors::rec_conv_halo, tensors::rec_decay,
    tensors::rec_gate, tensors::rec_gate_a, tensors::rec_gate_x, tensors::rec_gated, tensors::rec_in_grad,
    tensors::rec_out, tensors::rec_residual, tensors::rec_scan, tensors::rec_wo, tensors::rec_wx, tensors::rec_wy,
    tensors::scan_carry, tensors::tied_embedding_grads, tensors::tm_decay, tensors::tm_decay_a, tensors::tm_decay_act,
    tensors::tm_decay_b, tensors::tm_gated, tensors::tm_gn, tensors::tm_in_grad, tensors::tm_lora_a,
    tensors::tm_lora_act, tensors::tm_lora_b, tensors::tm_mix, tensors::tm_mu_grads, tensors::tm_out,
    tensors::tm_residual, tensors::tm_shift, tensors::tm_shift_halo, tensors::tm_wg, tensors::tm_wk, tensors::tm_wkv,
    tensors::tm_wo, tensors::tm_wr, tensors::tm_wv, tensors::tp_regather_input, tensors::tp_replicated_grads,
}};

// The registered op `key`, or nullptr.
[[nodiscard]] constexpr const OpKind* find_op_kind(std::string_view key) {
  for (const auto& k : kOpKinds)
    if (k.key == key) return &k;
  return nullptr;
}
[[nodiscard]] constexpr bool is_step_name(std::string_view name) {
  for (const auto n : kStepNames)
    if (n == name) return true;
  return false;
}

// The key the executor's handler table and the trace's cells use for a step: "op|name".
[[nodiscard]] inline std::string step_key(std::string_view op, std::string_view name) {
  std::string k(op);
  k += '|';
  k += name;
  return k;
}

}  // namespace scanshard
