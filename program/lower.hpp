// program/lower.hpp — lowering a (model, plan, rank) to the StepProgram that rank executes in one
// training step: compute steps with FLOPs and bytes, collectives with axis and bytes, p2p sends
// (pipeline activations, scan carries, conv/token-shift/attention halos), recompute under remat,
// gradient synchronisation and the optimizer.
//
// THE ONLY PLACE where FLOPs, bytes and communication volumes are computed (DESIGN §1): sim/
// prices these numbers, train/ executes the same steps. Conventions:
//   * matmul_flops: multiply-adds ×2 of GEMMs and attention score/value products (matrix unit);
//   * vector_flops: elementwise work, softmax, norms, scans (vector unit);
//   * bytes_read / bytes_written: HBM traffic assuming each op streams its inputs once;
//   * saved_bytes (forward steps): activation bytes kept for backward under this remat policy.
// Notation: B batch (micro-batch sequences), T tokens (local), D width, R recurrent width,
// H heads, N head size, K conv width, W window, F MLP width, V vocab; t = tensor-parallel size.
// Not for: seconds (sim/), running kernels (train/).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "program/model.hpp"
#include "program/param_layout.hpp"
#include "program/plan.hpp"
#include "program/steps.hpp"

namespace scanshard {

enum class Phase : std::uint8_t { forward, backward, recompute, optimizer };
enum class StepKind : std::uint8_t { compute, collective, p2p };
enum class CommKind : std::uint8_t { none, all_reduce, all_gather, reduce_scatter, send_recv };
const char* to_string(Phase p);
const char* to_string(CommKind k);

struct Step {
  StepKind kind = StepKind::compute;
  Phase phase = Phase::forward;
  OpClass cls = OpClass::elementwise;
  CommKind comm = CommKind::none;
  Axis axis = Axis::data;
  const char* op = "";    // kernel / collective vocabulary shared with traces: "linear", "rglru.scan"
  const char* name = "";  // the tensor it concerns: "mlp.w1", "rec.conv", "grads"
  const char* kernel = nullptr;  // the kernel it runs when that is not `op` (a carry fix re-running a WKV scan):
                                 // keys efficiency.ops
  std::int32_t layer = -1;           // -1: embedding, head, optimizer, gradient sync
  double matmul_flops = 0;
  double vector_flops = 0;
  double bytes_read = 0;
  double bytes_written = 0;
  // Of bytes_read + bytes_written, those moved by memory-bound kernels that run one after another
  // after the step's matrix product instead of overlapping it (a materialized attention core's
  // softmax and dropout passes over the T×T square: separate kernels in Megatron-LM and XLA).
  double unfused_bytes = 0;
  double saved_bytes = 0;            // forward only: kept for backward
  double state_bytes = 0;            // scans: recurrent state that should stay on chip
  double spill_bytes = 0;            // scans: extra traffic if the state does not fit on chip
  // Bytes the program touches between two runs of this step (0: its own bytes). Its memory traffic
  // runs at the rate of a working set that large (efficiency.memory_curve): a decode step's weights
  // were last read one token ago, with every other weight, cache and state of the stage read since.
  double reuse_bytes = 0;
  std::int64_t m = 0, n = 0, k = 0;  // GEMM shape on this rank (for tile padding)
  double comm_bytes = 0;             // collective: bytes of the full buffer per rank; p2p: per hop
  std::int32_t hops = 0;             // p2p: sequential hops (ring carry: P−1)
  bool overlappable = false;         // may hide behind compute (DP reduction, ring attention)
  double weight_grad_elems = 0;      // linear.dw: the weight elements whose gradient it writes (grad_accumulation fused)
  double calls = 1;                  // compute: kernel calls it makes (each pays the launch overhead)
};

struct StepProgram {
  std::int64_t rank = 0;
  std::array<std::int64_t, kAxisCount> coord{};  // this rank's index on each mesh axis
  std::int64_t first_layer = 0, end_layer = 0;   // the layers [first, end) of the stage's first model chunk
  // Every model chunk of the stage (one without interleaving; chunk_layers[0] = [first, end)) and,
  // per chunk j, its steps forward[forward_chunk[j]) (its input received or embedded, its layers,
  // its output sent or the head) and backward[backward_chunk[j]) (the mirror). `forward` holds
  // the chunks in order 0..v−1, `backward` in order v−1..0 — one micro-batch's whole stage.
  std::vector<Range> chunk_layers;
  std::vector<Range> forward_chunk, backward_chunk;
  std::int64_t micro_batches = 1;
  std::int64_t in_flight_micro_batches = 1;      // activations held at once (schedule)
  std::vector<Step> forward;    // one micro-batch, in execution order
  std::vector<Step> backward;   // one micro-batch, in execution order (recompute included)
  std::vector<Step> step_end;   // once per step: gradient sync, optimizer, parameter gather
  // Memory inputs (elements, not bytes; sim/ applies dtypes and ZeRO):
  std::int64_t local_params = 0;        // parameters on this rank after tensor and pipeline split
  double saved_activation_bytes = 0;    // per micro-batch, this stage, under the remat policy
  double tokens_per_step = 0;           // global tokens per step (for tokens/s)
  double model_flops_per_step = 0;      // 6·N·tokens-style useful FLOPs of the whole model (MFU)
};

// The steps of one layer of a given kind on a rank (layer index set to the representative).
struct LayerLowering {
  std::vector<Step> forward;   // in execution order
  std::vector<Step> backward;  // in execution order: ZeRO-3 gather, recompute, then backward
  double saved_bytes = 0;      // activation bytes kept per micro-batch under the remat policy
  std::int64_t params = 0;     // parameters of the layer on this rank
  std::int64_t tensors = 0;    // its parameter tensors
};
struct LayerGroup {
  Temporal kind;
  std::int64_t count = 0;  // layers of this kind in the stage
  std::shared_ptr<const LayerLowering> lowered;
  std::vector<std::int64_t> chunk_count;  // of them in each model chunk of the stage (Σ = count)
};

// One pipeline stage's program in compressed form: identical layers appear once with a count.
// lower() expands it; sim/ prices each group once.
struct StageSummary {
  std::int64_t stage = 0, seq_coord = 0;
  std::int64_t first_layer = 0, end_layer = 0;  // the stage's first model chunk
  // Interleaved 1F1B: `chunks` model chunks, chunk j holding layers chunk_layers[j] (stage s holds
  // the model's chunks s, s + p, s + 2p, ...; pipeline_chunk_layers). chunk_layers[0] is
  // [first_layer, end_layer).
  std::int64_t chunks = 1;
  std::vector<Range> chunk_layers;
  std::int64_t micro_batches = 1, in_flight_micro_batches = 1;
  std::vector<Step> pre_forward, pre_backward;    // embedding or pipeline receive (pre_backward runs last)
  std::vector<Step> post_forward, post_backward;  // head and loss or pipeline send (post_backward runs first)
  // Chunk j's part of each of the four lists above: [at[j], at[j + 1]) (chunks + 1 entries): before
  // its layers the embedding (the model's first chunk) or the receive of its input (one hop), after
  // them the head (the model's last chunk) or the send of its output. sim/ prices the lists whole.
  struct ChunkAt { std::vector<std::size_t> pre_forward, pre_backward, post_forward, post_backward; } chunk_at;
  std::vector<LayerGroup> groups;
  std::vector<Step> step_end;
  std::int64_t local_params = 0;
  double saved_activation_bytes = 0;
  // Of it, per model chunk j of the stage (Σ = saved_activation_bytes): chunk j's layers, and the
  // logits on the model's last chunk. A schedule holds different numbers of micro-batches of each
  // chunk at once (peak_held_bytes), and the chunks need not be equal (pipeline_chunk_layers).
  std::vector<double> chunk_saved_bytes;
  double tokens_per_step = 0;
  double model_flops_per_step = 0;
  double max_state_bytes = 0;  // largest scan state any step keeps on device
  // Largest communication buffer of any step of the forward and backward passes (memory_of's
  // buffers, held beside the activations). Under ZeRO-3 a layer's gathered parameters stay until
  // its backward is done, beside its gradient waiting for the reduce-scatter: the two at once.
  double max_comm_bytes = 0;
  // Of it, the part that does not depend on the micro-batch: the fsdp collectives of the layers,
  // embedding and head (ZeRO gathers and gradient reduce-scatters). The planner's memory bound
  // starts from it.
  double zero_comm_bytes = 0;
  // Largest buffer of the step end's collectives (gradient reductions, the ZeRO-1 reduce-scatter
  // of the whole gradient under gradient_sync last_microbatch). They run after the stage's last
  // backward pass or beside it, when one micro-batch's activations at most are left, so memory_of
  // does not add them to the activation peak.
  // Collectives that work in place on a buffer the state bytes count — the ZeRO-1/2 parameter
  // all-gather into the whole parameter copy — add none.
  double step_end_comm_bytes = 0;
};

// Memoises layer lowerings across plans that share what a layer depends on (the planner).
struct LowerCache {
  std::map<std::array<double, 19>, std::shared_ptr<const LayerLowering>> layers;
  std::map<std::pair<int, std::int64_t>, std::int64_t> layer_params;  // (layer kind, tensor) -> parameters on a rank
  // rs_ag: parameters whose gradient each tensor rank forms from its own tokens only, per layer
  // kind (key (kind, tensor)) and for the embedding (kind −1) and final norm / head (kind −2).
  std::map<std::pair<int, std::int64_t>, std::int64_t> token_partial;
  double model_flops = 0;
  std::int64_t model_flops_seq_len = -1, model_flops_batch = -1;
};

// The summary for pipeline stage `stage` and sequence shard `seq_coord`. The plan must be legal.
StageSummary lower_stage(const ModelSpec& m, const Plan& p, std::int64_t stage, std::int64_t seq_coord,
                         LowerCache* cache = nullptr);
// The stage's full step list in execution order (layer indices filled in).
StepProgram expand(const StageSummary& st, const ModelSpec& m);

// Layers [begin, end) of pipeline chunk `chunk` of `chunks` (pipeline × virtual_stages; stage s
// holds chunks s, s + p, ...): ceil(depth / chunks) layers each, the shortfall taken one layer at a
// time from the first and the last chunk inward, which also hold the embedding and the head — as
// Llama 3 trains 126 layers on 16 stages, the first and last with one layer fewer (Dubey et al.
// 2024 §3.3.2). Equal chunks when chunks divides depth. Needs chunks ≤ depth.
Range pipeline_chunk_layers(std::int64_t depth, std::int64_t chunks, std::int64_t chunk);

// Whether pipeline transfers use Megatron's scatter/gather (Plan::scatter_gather): each tensor rank
// sends 1/t of a replicated activation and the receiver all-gathers the slices over the tensor
// axis. Only with tensor > 1, pipeline > 1 and tensor_comm allreduce (under rs_ag the activation is
// already token-sharded). The lowering and the runner both ask this.
bool pipeline_scatter_gather(const Plan& p);

// The ZeRO stage whose sharding holds through the step's micro-batches (0 without fsdp). With
// `gradient_sync: last_microbatch` ZeRO-2/3 keep the unsharded gradient (and ZeRO-3 the gathered
// parameters) from the first micro-batch to the step end, so during the step they are ZeRO-1:
// PyTorch's pipeline stages (torch/distributed/pipelining/stage.py, backward_maybe_with_nosync)
// call set_requires_gradient_sync(False) and set_reshard_after_backward(False) on an FSDPModule
// for every backward but the last, which runs the reduce-scatter; with reshard_after_forward off
// (Llama 3, Dubey et al. 2024 §3.3.2: "we do not reshard after forward computation") each block
// is all-gathered once per step and stays gathered. Memory (sim/ state_bytes), the lowering and
// the runner all ask this.
int zero_stage_during_step(const Plan& p);

// Whether gradients are reduce-scattered block by block in every micro-batch's backward (ZeRO-2/3
// with fsdp > 1 and gradient_sync every_microbatch: a layer's, the embedding's, the final norm's
// and head's, as PyTorch FSDP and DeepSpeed ZeRO-2/3 do), each rank accumulating only its 1/fsdp
// shard; otherwise (ZeRO-0/1, or gradient_sync last_microbatch) the whole local gradient is
// accumulated and reduced once at the step end. The lowering and the runner both ask this.
bool zero_sharded_gradients(const Plan& p);

// What gradient accumulation (plan `grad_accumulation`, plan.hpp) moves, in bytes per element.
// `handed` is the gradient a micro-batch's backward hands over: separate, the runner's fp32
// buffer; hook, autograd and fused, the .grad in the parameters' dtype (Megatron-LM's and
// PyTorch's weight-gradient GEMMs write it), or under ZeRO-2/3's per-block reduce-scatter the
// arriving shard in the gradient dtype. `acc` is the accumulator: separate, fp32 (fp64 when the
// gradients are); otherwise the gradient dtype (Megatron's main_grad is the reduction buffer;
// autograd's .grad is reduced as it is), or fp32 under the per-block reduce-scatter (FSDP casts
// the arriving shard to the sharded parameter's dtype before adding: _cast_grad_to_param_dtype).
// Per accumulated element and micro-batch that adds: `add_read`, `add_written` (separate: the
// buffer and the sum read, the sum written and the buffer cleared; hook and autograd: the .grad
// and main_grad read, main_grad written). autograd keeps the first micro-batch's gradient as the
// accumulator (`first_kept`; a cast when handed ≠ acc). Once per step the accumulator is zeroed:
// `clear_local` bytes per local parameter and `clear_acc` per accumulated element. fused: each
// weight-gradient GEMM writes `dw_written` bytes per weight element and reads its C
// (`dw_c_read`); the other parameters pay the hook's add. The lowering and the tests use this.
struct GradAccumulationBytes {
  double handed = 4, acc = 4;
  double add_read = 8, add_written = 8;
  bool first_kept = false;
  double clear_local = 4, clear_acc = 0;
  double dw_written = 4, dw_c_read = 0;
};
GradAccumulationBytes grad_accumulation_bytes(const Plan& p);

// The stage's gradient accumulation (the step_end's ops::grad_accumulate step) split into what
// each micro-batch's add moves — `adds` of them: m, or m − 1 when autograd keeps the first — and
// what the step moves once (the accumulator zeroed, autograd's first gradient widened). The
// accumulated elements are the stage's local parameters, or under ZeRO-2/3's per-block
// reduce-scatter this rank's 1/fsdp shard of them; under `fused` the weight-gradient GEMMs' own
// elements (stage_weight_grad_elems) are left to the GEMMs. The lowering prices the sum; the
// planner's bound takes one add per micro-batch.
struct GradAccumulateParts {
  double adds = 0;
  double add_read = 0, add_written = 0, add_flops = 0;     // one add
  double once_read = 0, once_written = 0, once_flops = 0;  // once per step
};
GradAccumulateParts grad_accumulate_parts(const Plan& p, const StageSummary& st);
// The weight elements the stage's weight-gradient GEMMs write per micro-batch (Step::weight_grad_elems).
double stage_weight_grad_elems(const StageSummary& st);

// One pass of a pipeline schedule: the forward or the backward of model chunk `chunk` (0 .. v−1
// of the stage) for micro-batch `micro`.
struct PipelinePass {
  bool forward = true;
  std::int64_t micro = 0, chunk = 0;
  bool operator==(const PipelinePass&) const = default;
};
// The order in which pipeline stage `stage` of `pp` runs its passes over m micro-batches with v
// model chunks per stage. GPipe: every forward, then every backward. 1F1B (v = 1): pp − stage − 1
// warm-up forwards, then one forward and one backward alternately, then the cool-down backwards.
// Interleaved 1F1B (v > 1; Narayanan et al. 2021 §2.2, Megatron-LM's schedule table): forward
// passes in groups of pp micro-batches — chunk 0 of micro-batches 0..pp−1, chunk 1 of the same,
// …, chunk v−1, then the next group (the last group holds the m mod pp left over) — and the
// backward passes in the same order with the chunks reversed; (pp − stage − 1)·2 + (v − 1)·pp
// warm-up forwards (at most all m·v), then one forward and one backward alternately, then the
// cool-down backwards.
std::vector<PipelinePass> pipeline_schedule(Schedule kind, std::int64_t m, std::int64_t pp, std::int64_t v, std::int64_t stage);
// The most micro-batches an order keeps alive at once (first forward run, last backward not yet).
std::int64_t live_micro_batches(const std::vector<PipelinePass>& order);

// The most bytes an order keeps alive at once when a pass of model chunk j keeps chunk_bytes[j]
// from its forward to its backward: the activation peak of a stage whose chunks differ (the
// shorter first and last chunks, the logits on the model's last chunk). Interleaved 1F1B on the
// last stage holds p micro-batches of chunks 0..v−2 but one of chunk v−1, whose backward follows
// its forward at once; with equal chunks it is in_flight_micro_batches × the stage's bytes.
double peak_held_bytes(const std::vector<PipelinePass>& order, const std::vector<double>& chunk_bytes);

// Micro-batches' worth of activations a pipeline stage holds at once under the plan's schedule:
// GPipe all m; 1F1B min(m, p − stage); interleaved 1F1B (v chunks) the Megatron-LM warm-up of
// (p − stage − 1)·2 + (v − 1)·p chunk passes plus the one in flight, each 1/v of the stage.
double in_flight_micro_batches(const Plan& p, std::int64_t stage);

// Coordinates of `rank` (pipeline outermost, then data, fsdp, sequence; tensor innermost).
std::array<std::int64_t, kAxisCount> rank_coords(const Mesh& mesh, std::int64_t rank);
std::int64_t rank_of(const Mesh& mesh, const std::array<std::int64_t, kAxisCount>& coord);

// The rank that bounds the step time: last pipeline stage's last sequence shard (it sees the
// most attention keys and holds the head).
std::int64_t critical_rank(const Mesh& mesh);

// Exact number of (query, key) pairs for queries [q0, q1) under causal attention with window W
// (W = 0: global): query q sees keys max(0, q − W) .. q.
std::int64_t visible_keys(std::int64_t q0, std::int64_t q1, std::int64_t window);
// (query, key) pairs a blocked attention kernel multiplies for queries [q0, q1): tiles of `tile`
// queries from q0, each against every key any of its queries sees, so the diagonal tile's masked
// pairs are computed too (1.24x the causal pairs at 128 tokens with 32-query tiles, 1.06x at
// 512). tile = 1 gives visible_keys.
std::int64_t tiled_attention_pairs(std::int64_t q0, std::int64_t q1, std::int64_t window, std::int64_t tile);
// Local attention under `sequence` (window W, shards of T tokens): shard s needs the K/V rows of
// global positions [s·T − W, s·T), held by up to ⌈W/T⌉ shards to its left. From the shard h hops
// to its left (h ≥ 1) it receives that shard's last kv_halo_rows(W, T, h) = clamp(W − (h−1)·T,
// 0, T) rows: whole shards, then the remainder from the farthest. The runner exchanges them
// point to point with every such peer at once; the lowering prices the same rows.
[[nodiscard]] std::int64_t kv_halo_rows(std::int64_t window, std::int64_t T, std::int64_t hop);
[[nodiscard]] std::int64_t kv_halo_hops(std::int64_t window, std::int64_t T);  // ⌈W/T⌉ peers on each side
// Rows shard s of sp receives (min(W, s·T): the K/V rows before its own that it holds) and sends
// (to shards s+1 .. s+⌈W/T⌉ that exist), summed over its peers.
struct KvHalo { std::int64_t received = 0, sent = 0; };
[[nodiscard]] KvHalo kv_halo(std::int64_t window, std::int64_t T, std::int64_t s, std::int64_t sp);
// The WKV state carry of a sequence-sharded RWKV time mix (DESIGN §4), in elements per shard for a
// micro-batch of B sequences and Dl = D/t channels (N head size). Every shard scans its chunk from
// the zero state; the carry composes chunk states (state_out = decay summary ⊙ state_in + local).
//   RWKV-4: a state is the kernel's scaled (a, b, p) [3,B,Dl] — numerator, denominator, running
//     maximum exponent (kernels/rwkv4.hpp); its gradient (da, db) [2,B,Dl] (p held fixed); the
//     summary −T·exp(decay) [Dl] is a parameter times the shard length, the same on every shard,
//     so it is never sent.
//   RWKV-6: a state is S [B,Hl,N,N]; its gradient the same; the summary log Π w [B,Hl,N] depends
//     on the data, so the all-gather carries it.
// Messages: ring forward passes a state, backward a gradient (P−1 hops); all-gather forward
// gathers every shard's state (and summary if sent), backward every shard's local gradient only —
// each rank keeps what its forward fold learnt about the later shards (their states' exponents,
// their summaries) to compose the gradients.
struct WkvCarryElems {
  std::int64_t state = 0, grad = 0, summary = 0;
  bool summary_sent = false;
  [[nodiscard]] std::int64_t ring_forward() const { return state; }
  [[nodiscard]] std::int64_t ring_backward() const { return grad; }
  [[nodiscard]] std::int64_t gather_forward() const { return state + (summary_sent ? summary : 0); }
  [[nodiscard]] std::int64_t gather_backward() const { return grad; }
};
[[nodiscard]] WkvCarryElems wkv_carry_elems(Family family, std::int64_t B, std::int64_t Dl, std::int64_t N);
// RWKV-4 forward checkpoints: the state (a, b, p) [3,B,Dl] before every kWkv4CheckpointTokens-th
// token of the T local ones (not before token 0: that is the incoming state), written by the
// forward and saved for the backward, which then streams k, v once instead of recomputing them.
// The stride is kernels/rwkv4.hpp's (the executor static_asserts the two counts agree).
inline constexpr std::int64_t kWkv4CheckpointTokens = 16;
[[nodiscard]] constexpr std::int64_t wkv4_checkpoint_elems(std::int64_t B, std::int64_t T, std::int64_t Dl) {
  return T > 0 ? 3 * B * Dl * ((T - 1) / kWkv4CheckpointTokens) : 0;
}
// The query tile of the runner's blocked kernel (kernels/attention.hpp kAttentionQueryBlock; a
// unit test keeps them equal). Accelerator kernels use 64–128; at their sequence lengths (≥ 2K)
// that moves the count by under 3 %.
inline constexpr std::int64_t kAttentionQueryTile = 32;

// Lowers the plan for one rank. The plan must be legal (check_plan).
StepProgram lower(const ModelSpec& m, const Plan& p, std::int64_t rank);

// K/V heads an attention layer computes on a tensor rank: kv_heads / t when kv_heads ≥ t, else the
// K/V weights are replicated and each rank computes the one head its query heads share (MQA).
[[nodiscard]] std::int64_t kv_heads_per_rank(const ModelSpec& m, std::int64_t t);

// The forward steps of one part of the model on a rank of the plan's tensor group — layer `part`
// (≥ 0), the embedding (kEmbeddingPart) or the final norm, logits and softmax (kHeadPart) — for
// `batch` sequences of `tokens` tokens whose first sits at position `first_position` (a multiple
// of `tokens`): attention also reads the K/V rows of the positions before it, as a sequence shard
// reads its halo — for a decode step (tokens 1) the KV cache. The emitters training lowers with;
// program/inference.cpp builds prefill and decode on it. The plan may have no sequence axis; its
// micro_batch and seq_len are replaced by batch and tokens.
inline constexpr std::int64_t kEmbeddingPart = -1, kHeadPart = -2;
std::vector<Step> forward_steps(const ModelSpec& m, const Plan& p, std::int64_t part, std::int64_t batch, std::int64_t tokens,
                                std::int64_t first_position);

}  // namespace scanshard
