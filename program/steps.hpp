// program/steps.hpp — the step vocabulary, typed: every op a StepProgram step can carry (with its
// op class and a display name) and every step name (the tensor a step concerns), as named
// constants. lower() emits only these; the executor's handler table (train/exec_*.cpp), the
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

// Ops: the kernel or collective a step runs ("linear", "rglru.scan", "all_reduce"), each once:
// X(identifier, trace key, op class, display name). The constants ops::<identifier> and the
// registry kOpKinds are both generated from this one list.
#define SCANSHARD_OPS(X) \
  X(adamw, "adamw", optimizer, "AdamW update of the owned parameters") \
  X(add, "add", elementwise, "residual add") \
  X(add_positions, "add_positions", embedding, "learned position embeddings added (transformer)") \
  X(all_gather, "all_gather", comm, "all-gather over a mesh axis") \
  X(all_reduce, "all_reduce", comm, "all-reduce (sum) over a mesh axis") \
  X(argmax, "argmax", elementwise, "the next token of each sequence: argmax over its logits (greedy sampling)") \
  X(attention_context, "attention.context", attention, "attention probabilities times values (materialized kernel)") \
  X(attention_decode, "attention.decode", attention, \
    "one query per sequence against its KV cache (the decode kernel; a kernel tag on decode attention steps, never an op)") \
  X(attention_global, "attention.global", attention, "causal attention over the whole sequence (fused kernel)") \
  X(attention_local, "attention.local", attention, "causal attention within a window (fused kernel)") \
  X(attention_scores, "attention.scores", attention, \
    "attention scores and softmax (materialized kernel; recomputed in the fused backward)") \
  X(broadcast, "broadcast", comm, "broadcast from one rank to the others of a group (a binomial tree)") \
  X(checkpoint, "checkpoint", optimizer, "checkpoint write (the runner's trace only; never lowered)") \
  X(conv1d, "conv1d", elementwise, "causal depthwise Conv1D of the recurrent block") \
  X(ddlerp, "ddlerp", elementwise, "RWKV-6 data-dependent token mix") \
  X(dropout, "dropout", elementwise, "dropout mask and scale") \
  X(embedding, "embedding", embedding, "token embedding lookup") \
  X(exp_exp, "exp_exp", elementwise, "RWKV-6 decay w = exp(-exp(d))") \
  X(gelu, "gelu", elementwise, "GeLU") \
  X(gelu_mul, "gelu_mul", elementwise, "gelu(a) * b, fused") \
  X(grad_accumulate, "grad_accumulate", elementwise, "the runner's gradient accumulation over micro-batches") \
  X(groupnorm, "groupnorm", norm, "GroupNorm (RWKV-6 heads)") \
  X(layernorm, "layernorm", norm, "LayerNorm") \
  X(linear, "linear", gemm, "GEMM forward, y = x W") \
  X(linear_dw, "linear.dw", gemm, "GEMM weight gradient, dW = x^T dy") \
  X(linear_dx, "linear.dx", gemm, "GEMM input gradient, dx = dy W^T") \
  X(logits, "logits", gemm, "the head's logits GEMM with the per-token softmax statistics") \
  X(metric_xent, "metric_xent", elementwise, "a train metric: one more cross-entropy over the logits, no gradient") \
  X(mul, "mul", elementwise, "elementwise product") \
  X(reduce_scatter, "reduce_scatter", comm, "reduce-scatter (sum) over a mesh axis") \
  X(relu_sq, "relu_sq", elementwise, "squared ReLU (RWKV channel mix)") \
  X(rglru_decay, "rglru.decay", scan, "RG-LRU decay a = sigma(-Lambda)^(c r) (fused into the scan)") \
  X(rglru_decode, "rglru.decode", scan, \
    "the RG-LRU's decay and scan at one token per call (a kernel tag on decode steps, never an op)") \
  X(rglru_scan, "rglru.scan", scan, "RG-LRU linear recurrence") \
  X(rmsnorm, "rmsnorm", norm, "RMSNorm") \
  X(rope, "rope", elementwise, "rotary position embedding") \
  X(scan_carry_fix, "scan.carry_fix", elementwise, "sequence-parallel scan: the incoming carry applied to a shard") \
  X(send_recv, "send_recv", comm, "point-to-point send/receive") \
  X(sigmoid_mul, "sigmoid_mul", elementwise, "sigmoid(a) * b") \
  X(silu_mul, "silu_mul", elementwise, "silu(a) * b (SwiGLU)") \
  X(softmax_xent, "softmax_xent", elementwise, "softmax cross-entropy loss") \
  X(tanh, "tanh", elementwise, "tanh (RWKV-6 LoRA)") \
  X(token_shift, "token_shift", elementwise, "RWKV token shift (previous token's features)") \
  X(wkv4_decode, "wkv4.decode", scan, "RWKV-4 WKV state update at one token per call (a kernel tag on decode steps, never an op)") \
  X(wkv4_scan, "wkv4.scan", scan, "RWKV-4 WKV recurrence") \
  X(wkv6_chunked, "wkv6.chunked", gemm, "RWKV-6 WKV, chunked form (matrix products per chunk)") \
  X(wkv6_decode, "wkv6.decode", scan, "RWKV-6 WKV state update at one token per call (a kernel tag on decode steps, never an op)") \
  X(wkv6_scan, "wkv6.scan", scan, "RWKV-6 WKV recurrence, sequential form") \
  X(zero, "zero", elementwise, "clear of gradient buffers") \
  X(blockdiag, "blockdiag", gemm, "block-diagonal GEMM (RG-LRU gates; a kernel tag on linear steps, never an op)")

// Step names: the tensor or buffer a step concerns ("mlp.w1", "rec.scan", "grads"), each once:
// X(identifier, name); the constants tensors::<identifier> and kStepNames come from this list.
#define SCANSHARD_STEP_NAMES(X) \
  X(attn_core, "attn.core") \
  X(attn_dropout, "attn.dropout") \
  X(attn_in_grad, "attn.in_grad") \
  X(attn_kv_grads, "attn.kv_grads") \
  X(attn_kv_halo, "attn.kv_halo") \
  X(attn_out, "attn.out") \
  X(attn_residual, "attn.residual") \
  X(attn_ring_kv, "attn.ring_kv") \
  X(attn_rope, "attn.rope") \
  X(attn_scores_recompute, "attn.scores_recompute") \
  X(attn_wk, "attn.wk") \
  X(attn_wo, "attn.wo") \
  X(attn_wq, "attn.wq") \
  X(attn_wv, "attn.wv") \
  X(cm_act, "cm.act") \
  X(cm_gate, "cm.gate") \
  X(cm_in_grad, "cm.in_grad") \
  X(cm_mu_grads, "cm.mu_grads") \
  X(cm_out, "cm.out") \
  X(cm_out_grad, "cm.out_grad") \
  X(cm_residual, "cm.residual") \
  X(cm_shift, "cm.shift") \
  X(cm_shift_halo, "cm.shift_halo") \
  X(cm_value, "cm.value") \
  X(cm_value_grad, "cm.value_grad") \
  X(cm_wk, "cm.wk") \
  X(cm_wr, "cm.wr") \
  X(cm_wv, "cm.wv") \
  X(embed_dropout, "embed.dropout") \
  X(embed_grads, "embed.grads") \
  X(embed_out, "embed.out") \
  X(embed_params, "embed.params") \
  X(embed_positions, "embed.positions") \
  X(embed_table, "embed.table") \
  X(embed_norm, "embed_norm") \
  X(final_norm, "final_norm") \
  X(grad_buffers, "grad_buffers") \
  X(grads, "grads") \
  X(head_grads, "head.grads") \
  X(head_in_grad, "head.in_grad") \
  X(head_params, "head.params") \
  X(head_w, "head.w") \
  X(loss, "loss") \
  X(loss_stats, "loss.stats") \
  X(mlp_act, "mlp.act") \
  X(mlp_dropout, "mlp.dropout") \
  X(mlp_in_grad, "mlp.in_grad") \
  X(mlp_out, "mlp.out") \
  X(mlp_residual, "mlp.residual") \
  X(mlp_w1, "mlp.w1") \
  X(mlp_w2, "mlp.w2") \
  X(mlp_w3, "mlp.w3") \
  X(norm1, "norm1") \
  X(norm2, "norm2") \
  X(params, "params") \
  X(pipeline_activations, "pipeline.activations") \
  X(pipeline_gradients, "pipeline.gradients") \
  X(pipeline_recv_activations, "pipeline.recv_activations") \
  X(pipeline_recv_gradients, "pipeline.recv_gradients") \
  X(pipeline_send_activations, "pipeline.send_activations") \
  X(pipeline_send_gradients, "pipeline.send_gradients") \
  X(rec_conv, "rec.conv") \
  X(rec_conv_halo, "rec.conv_halo") \
  X(rec_decay, "rec.decay") \
  X(rec_gate, "rec.gate") \
  X(rec_gate_a, "rec.gate_a") \
  X(rec_gate_x, "rec.gate_x") \
  X(rec_gated, "rec.gated") \
  X(rec_in_grad, "rec.in_grad") \
  X(rec_out, "rec.out") \
  X(rec_residual, "rec.residual") \
  X(rec_scan, "rec.scan") \
  X(rec_wo, "rec.wo") \
  X(rec_wx, "rec.wx") \
  X(rec_wy, "rec.wy") \
  X(sample_broadcast, "sample.broadcast") \
  X(sample_token, "sample.token") \
  X(scan_carry, "scan.carry") \
  X(step_metrics, "step.metrics") \
  X(tied_embedding_grads, "tied_embedding.grads") \
  X(tm_decay, "tm.decay") \
  X(tm_decay_a, "tm.decay_a") \
  X(tm_decay_act, "tm.decay_act") \
  X(tm_decay_b, "tm.decay_b") \
  X(tm_gated, "tm.gated") \
  X(tm_gn, "tm.gn") \
  X(tm_in_grad, "tm.in_grad") \
  X(tm_lora_a, "tm.lora_a") \
  X(tm_lora_act, "tm.lora_act") \
  X(tm_lora_b, "tm.lora_b") \
  X(tm_mix, "tm.mix") \
  X(tm_mu_grads, "tm.mu_grads") \
  X(tm_out, "tm.out") \
  X(tm_residual, "tm.residual") \
  X(tm_shift, "tm.shift") \
  X(tm_shift_halo, "tm.shift_halo") \
  X(tm_wg, "tm.wg") \
  X(tm_wk, "tm.wk") \
  X(tm_wkv, "tm.wkv") \
  X(tm_wo, "tm.wo") \
  X(tm_wr, "tm.wr") \
  X(tm_wv, "tm.wv") \
  X(tp_regather_input, "tp.regather_input") \
  X(tp_replicated_grads, "tp.replicated_grads")

namespace ops {
#define SCANSHARD_OP_CONSTANT(id, key, cls, display) inline constexpr char id[] = key;
SCANSHARD_OPS(SCANSHARD_OP_CONSTANT)
#undef SCANSHARD_OP_CONSTANT
}  // namespace ops

namespace tensors {
#define SCANSHARD_STEP_NAME_CONSTANT(id, name) inline constexpr char id[] = name;
SCANSHARD_STEP_NAMES(SCANSHARD_STEP_NAME_CONSTANT)
#undef SCANSHARD_STEP_NAME_CONSTANT
}  // namespace tensors

// One registered op: its trace key, the op class that prices it (sim/cost.cpp picks the class's
// efficiency unless efficiency.ops has the kernel tag), and a display name.
struct OpKind {
  std::string_view key;
  OpClass cls;
  std::string_view display;
};

#define SCANSHARD_OP_KIND(id, key, cls, display) OpKind{ops::id, OpClass::cls, display},
inline constexpr auto kOpKinds = std::to_array<OpKind>({SCANSHARD_OPS(SCANSHARD_OP_KIND)});
#undef SCANSHARD_OP_KIND

#define SCANSHARD_STEP_NAME(id, name) std::string_view(tensors::id),
inline constexpr auto kStepNames = std::to_array<std::string_view>({SCANSHARD_STEP_NAMES(SCANSHARD_STEP_NAME)});
#undef SCANSHARD_STEP_NAME

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
