// program/inference.hpp — what a rank computes to serve a model (DESIGN §8): the prefill of P
// prompt tokens and one decode step at context position n, per pipeline stage under the serving
// axes (tensor, pipeline, data = replicas), with the closed forms of what decoding keeps between
// steps — the KV cache of each attention layer and the fixed state of each recurrent layer — and
// memory per device.
//
// Notation (STYLE habit 3): B sequences per replica, P prompt tokens, S sampled tokens, n context
// position (tokens already in the cache / state), D width, R recurrent width, H heads, N head
// size, K conv width, W window, F MLP width, V vocab, t tensor-parallel size, p pipeline stages.
//
// Conventions (one source of truth with the training lowering: the steps come from lower.cpp's
// emitters through forward_steps):
//   * prefill = the training forward of B·P tokens without dropout and saved activations; the head
//     runs on each sequence's last token only (generation needs the next token's logits);
//   * decode step at n = the training forward of one token at position n — attention reads the
//     n cached K/V rows plus the new one (global) or min(n, W) plus the new one (local); the new
//     row is the K/V linear's output, written into the cache — plus every recurrent state read
//     and written once (it lives in HBM between steps): RG-LRU h and the Conv1D window, the WKV
//     state, the token-shift vector (written; its read is the shift's second input); its attention
//     steps carry the decode kernel's tag (kernel attention.decode: priced with its own efficiency
//     when the chip has one), its recurrences theirs (rglru.decode on the RG-LRU's decay and scan,
//     wkv4.decode, wkv6.decode: one token per call; the training kernel's value without one), and every step's reuse_bytes is what one token streams (the stage's
//     weights, caches and states: where its data comes from between tokens);
//   * prefill's head keeps the training head's (max, Σexp) all-reduce and softmax (standing for
//     vocab-parallel sampling); a decode step's head is the decoder's: the logits all-gathered
//     over tensor, each sequence's next token picked on one rank (argmax over its logits) and the
//     tokens broadcast to the tensor group (steps sample.token and sample.broadcast).
// Not for: seconds (sim/inference.hpp), running the decode (train/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "program/lower.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"

namespace scanshard {

enum class Workload : std::uint8_t { prefill, decode, generate };
inline constexpr Names<Workload, 3> kWorkloadNames{
    {{"prefill", Workload::prefill}, {"decode", Workload::decode}, {"generate", Workload::generate}}};
const char* to_string(Workload w);

// ---- Per-sequence state closed forms (bytes on one tensor rank, one layer) ----------------------
// The runner's generate allocates its caches and states with these.

// K/V rows an attention layer keeps for one sequence after `context` tokens: all of them (global,
// W = 0) or the last W (local: a query also sees itself, so W cached rows give its W + 1 keys).
[[nodiscard]] std::int64_t kv_cache_rows(std::int64_t context, std::int64_t window);
// One attention layer's K and V cache for one sequence: rows × 2 × kv_heads_per_rank × N × a.
[[nodiscard]] double kv_cache_bytes(const ModelSpec& m, std::int64_t layer, std::int64_t context, std::int64_t t, DType act);
// RG-LRU hidden state h: R/t values in the state dtype (fp32; Griffin §2.4).
[[nodiscard]] double rglru_state_bytes(const ModelSpec& m, std::int64_t t, DType state);
// The Conv1D window: the last K − 1 inputs of R/t channels, in the activation dtype.
[[nodiscard]] double conv_state_bytes(const ModelSpec& m, std::int64_t t, DType act);
// RWKV-4 WKV state per channel: numerator, denominator and running maximum exponent (3·D/t).
[[nodiscard]] double wkv4_state_bytes(const ModelSpec& m, std::int64_t t, DType state);
// RWKV-6 WKV state: an N×N matrix per head, H/t = D/(N·t) heads.
[[nodiscard]] double wkv6_state_bytes(const ModelSpec& m, std::int64_t t, DType state);
// RWKV token shift: the previous token's D features (whole on every tensor rank), one per mix.
[[nodiscard]] double token_shift_state_bytes(const ModelSpec& m, DType act);

// Everything layer `layer` keeps for one sequence after `context` tokens, on one tensor rank.
struct LayerState {
  double kv_cache = 0;   // attention
  double recurrent = 0;  // RG-LRU h + conv window; WKV state + token-shift vectors
  double total() const { return kv_cache + recurrent; }
};
[[nodiscard]] LayerState layer_state_bytes(const ModelSpec& m, std::int64_t layer, std::int64_t context, std::int64_t t,
                                           DType act, DType state);

// ---- The decode attention's GEMMs ---------------------------------------------------------------
// How the executor's decode attention (kernels/kv_cache.hpp fast::attention_decode, called by the
// decoder with this shape) multiplies, and what the lowering records on its step (Step::m, n, k:
// rows G, keys, head size): per (sequence, K/V head on the rank), the G = H/KV query heads sharing
// the K/V head as two GEMMs over the `keys` cache rows, S [G × keys] = Q·Kᵀ in BLAS calls of at
// most key_block keys, and O [G × N] = P·V in one; with one query head per K/V head (G = 1),
// GEMVs instead (2 per pair, whole: sgemm packs the rows first; at G ≥ 2 GEMVs were 1.3–1.6x
// slower).
//
// The blocks: single-threaded OpenBLAS (0.3, Zen 4 VM) runs Q·Kᵀ (row-major, Kᵀ transposed) in its
// small-matrix kernel while G·keys ≤ ~1200 and through its packed path beyond, whose copy of the
// key rows costs ~0.25 ns per element whatever G; P·V has no such step. Measured 2026-12-07 (hot
// loop, one thread) Q·Kᵀ at G = 2 and 4, N = 32 and 64: 42–70 GFLOP/s below, 16–30 above, the
// drop between G·keys = 1184 and 1216 for every G and N; the whole kernel at transformer-tiny's
// D08 shape (G = 2, 1040 keys, 4 layers' caches) 13.6 → 8–12 µs per pair in blocks. Blocks of
// kDecodeAttentionScoreBlock scores keep every Q·Kᵀ call in the small-matrix regime, so one
// per-FLOP value prices every group size (G = 2, 4, 8: 2.7–4.0 ns per key and head, in cache).
inline constexpr std::int64_t kDecodeAttentionScoreBlock = 1152;
struct DecodeAttentionGemms {
  std::int64_t pairs = 0;      // (sequence, K/V head) pairs on the rank: batch · kv_heads_per_rank
  std::int64_t rows = 0;       // G: query heads per K/V head (M of both GEMMs)
  std::int64_t keys = 0;       // cache rows read per pair (N of Q·Kᵀ, K of P·V)
  std::int64_t head_dim = 0;   // N of a head (K of Q·Kᵀ, N of P·V)
  std::int64_t key_block = 0;  // keys per Q·Kᵀ call (= keys with GEMVs)
  bool gemv = false;           // G = 1: GEMVs
  [[nodiscard]] std::int64_t blocks() const { return keys <= 0 ? 0 : (keys + key_block - 1) / key_block; }
  // every pair's: two GEMVs per query head, or blocks() calls of Q·Kᵀ and one of P·V
  [[nodiscard]] std::int64_t blas_calls() const { return keys <= 0 ? 0 : pairs * (gemv ? 2 * rows : blocks() + 1); }
  // the K and V rows the products read: pairs × keys × 2 × N elements
  [[nodiscard]] double cache_elements_read() const {
    return static_cast<double>(pairs) * static_cast<double>(keys) * 2 * static_cast<double>(head_dim);
  }
};
// For `heads` query heads and `kv_heads` K/V heads on a rank (heads a multiple of kv_heads),
// `batch` sequences each reading `keys` cache rows.
[[nodiscard]] DecodeAttentionGemms decode_attention_gemms(std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                                                          std::int64_t batch, std::int64_t keys);
// The same for one attention layer of model `m` on a rank of tensor size t, the new token at
// `position` (keys: every earlier position and its own, or the last W + 1 of them in a local layer).
[[nodiscard]] DecodeAttentionGemms decode_attention_gemms(const ModelSpec& m, std::int64_t layer, std::int64_t t, std::int64_t batch,
                                                          std::int64_t position);

// ---- Serving plans ------------------------------------------------------------------------------

struct ServingShape {
  std::int64_t batch = 1;        // B sequences per replica (data axis)
  std::int64_t prompt_len = 1;   // P
  std::int64_t sample_len = 1;   // S tokens sampled after the prompt
  std::int64_t context() const { return prompt_len + sample_len; }
};

// Sequences per micro-batch of a serving plan: with p > 1 pipeline stages the replica's batch
// runs as p micro-batches of B/p (every stage busy in steady state), else one of B.
[[nodiscard]] std::int64_t serving_micro_batch(const Plan& p, std::int64_t batch);
// Prompt tokens one prefill pass takes at most: serving engines prefill a batch in passes of a
// token budget (vLLM's max_num_batched_tokens, JetStream's prefill buckets) so the working set
// stays bounded. An assumption, not a measurement.
inline constexpr std::int64_t kPrefillTokensPerPass = 8192;
// Sequences per prefill pass: as many of a replica's batch as the token budget holds (at least
// one); the last pass takes what is left.
[[nodiscard]] std::int64_t prefill_pass_batch(std::int64_t batch, std::int64_t prompt_len);
// The training plan whose legality rules a serving plan must also pass (global batch B × data,
// seq_len P + S for a learned position table).
[[nodiscard]] Plan serving_plan(const Plan& p, const ServingShape& s);
// Every rule a serving plan breaks (empty: legal): the training rules of serving_plan, plus
// "serving axes are data, tensor and pipeline" (fsdp and sequence shard training state) and
// "pipeline divides the batch". `devices`: the cluster's (0 = do not check).
[[nodiscard]] std::vector<RuleFailure> serving_violations(const ModelSpec& m, const Plan& p, const ServingShape& s,
                                                          std::int64_t devices);

// One pass of one micro-batch through a pipeline stage. Layers of one temporal kind lower alike
// (their steps differ only in the layer index): each kind appears once with its count.
struct InferencePass {
  std::int64_t stage = 0;
  Range layers;
  std::vector<Step> pre;   // the embedding (stage 0) or the receive of the previous stage's output
  struct Group {
    Temporal kind;
    std::int64_t count = 0;
    std::vector<Step> steps;
  };
  std::vector<Group> groups;
  std::vector<Step> post;  // the head (last stage) or the send to the next stage
  // f(step list, times it runs) for pre, each group (times: its count), post, in order.
  template <class F>
  void for_each_list(F&& f) const {
    f(pre, std::int64_t{1});
    for (const auto& g : groups) f(g.steps, g.count);
    f(post, std::int64_t{1});
  }
  // Σ over every step (groups times their count) of f(step).
  template <class F>
  double sum(F&& f) const {
    double s = 0;
    for_each_list([&](const std::vector<Step>& list, std::int64_t times) {
      for (const auto& x : list) s += static_cast<double>(times) * f(x);
    });
    return s;
  }
};

// Stage `stage`'s prefill of `batch` sequences of P tokens (one micro-batch).
InferencePass lower_prefill(const ModelSpec& m, const Plan& p, std::int64_t stage, std::int64_t batch, std::int64_t prompt_len);
// Stage `stage`'s decode step for `batch` sequences whose new token sits at position n.
InferencePass lower_decode(const ModelSpec& m, const Plan& p, std::int64_t stage, std::int64_t batch, std::int64_t position);

// ---- Memory per device ------------------------------------------------------------------------

struct InferenceMemory {
  double weights_bytes = 0;      // the stage's parameters on this tensor rank, in the param dtype
  double kv_cache_bytes = 0;     // every sequence the stage holds (B per replica), at context P + S
  double state_bytes = 0;        // recurrent states of those sequences
  double activations_bytes = 0;  // the largest pass's working set (a prefill pass, or a decode step)
  double total_bytes() const { return weights_bytes + kv_cache_bytes + state_bytes + activations_bytes; }
};
// Parameters of pipeline stage `stage` on one tensor rank (every tensor of parameter_tensors on it,
// split by tensor_split_dim; a tied embedding also on the last stage, where the head uses it).
[[nodiscard]] std::int64_t stage_parameters(const ModelSpec& m, std::int64_t tensor, std::int64_t pipeline, std::int64_t stage);
// Memory of stage `stage` serving `s` (B sequences per replica, caches sized for P + S tokens).
[[nodiscard]] InferenceMemory inference_memory(const ModelSpec& m, const Plan& p, std::int64_t stage, const ServingShape& s);

}  // namespace scanshard
