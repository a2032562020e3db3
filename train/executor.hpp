// train/executor.hpp — runs one rank's StepProgram (program/lower.hpp) for real: every compute
// step calls a kernel, every collective or send calls MPI on the mesh axis the step names, and
// every step is timed into the Trace under its own (phase, op, name). There is no second
// description of the model here: the step list decides what runs and in which order; this file
// only knows what each (op, name) means.
//
// For: the runner (train/runner.cpp). Griffin / Hawk / MQA, RWKV-4/6 and the transformer family
// (RMSNorm or LayerNorm, SwiGLU or GeLU MLP, rotary or learned positions, linear biases) under
// data, fsdp (ZeRO 0–3), tensor (Megatron column/row splits, vocab-parallel embedding and loss,
// replicated K/V heads when kv_heads < tensor: each rank computes the one its query heads share)
// and sequence parallelism (chunk-local scans with the ring or all-gather carry, Conv1D halo,
// local-attention K/V halo, ring attention). A step the executor has no meaning for is an error
// naming it. Pipeline stages: the program's p2p steps move activations and their gradients
// between stages (non-blocking sends); the runner orders micro-batches by the schedule (GPipe, 1F1B,
// interleaved 1F1B). Not for: the training loop, data, optimizer state (runner.cpp), telling legal
// plans from illegal ones (program/plan.hpp check_plan, which runner::check_supported applies).
// tensor_comm rs_ag (Megatron sequence parallelism): the residual stream holds this rank's n/t
// tokens (State::rs_ag).
//
// Dtypes (plan `dtypes`): every message travels in the dtype the lowering prices for its step
// (train/wire.hpp message_dtype); with `activations: bf16` the residual stream and its gradient
// are rounded to bf16 at each layer boundary (executor.cpp LayerBoundaries); kernels compute in
// fp32 on the parameters they are given (the runner's bf16 working copy under `params: bf16`).
//
// Forward handlers are idempotent (outputs never alias inputs), so a remat policy's recompute
// steps simply run the forward handler again.
//
// Dropout (transformer `dropout` > 0): each mask element is kernels/dropout.hpp's hash of (seed,
// training step, layer, site, the sequence's index in the global batch, the token's global
// position, the global channel), so every plan draws the masks one rank would; the 1-byte masks
// are kept for backward (what lower.cpp's Emit::dropout prices) and recomputed identically.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "program/lower.hpp"
#include "program/param_layout.hpp"
#include "train/comm.hpp"
#include "program/trace.hpp"

namespace scanshard::train {

using i64 = std::int64_t;

// This rank's tensor-parallel shard of every parameter tensor, in Layout order, each at the same
// offset on every tensor rank (a shard smaller than the largest is followed by zero padding).
struct ShardLayout {
  ShardLayout(const ModelSpec& m, const Layout& full, i64 t, i64 tcoord);
  const Layout& full;
  std::vector<int> dim;                     // split dimension, −1 = whole tensor on every rank
  std::vector<Range> range;                 // this rank's range on `dim`
  std::vector<std::vector<i64>> shape;      // local shape
  std::vector<i64> offset;
  i64 total = 0;
  i64 off(const std::string& block, const std::string& name) const;
  i64 count(std::size_t i) const;
  // Copies this rank's shards out of / into a full Layout-ordered buffer.
  void extract(const float* full_buf, float* local) const;
  void insert(const float* local, float* full_buf) const;
};

// One communicator per mesh axis (nullptr when the axis has size 1).
struct MeshComms {
  std::array<const mpi::Comm*, kAxisCount> axis{};
  const mpi::Comm* operator[](Axis a) const { return axis[static_cast<int>(a)]; }
};

// Names the sequences of one micro-batch for the dropout masks: the run's seed, the training step
// and the index in the global batch of the micro-batch's first sequence (its b-th is first + b).
struct BatchIndex {
  std::uint64_t seed = 0;
  std::int64_t step = 0, first_sequence = 0;
};

// ZeRO-2/3 (program/lower.hpp zero_sharded_gradients): called by a block's gradient
// reduce-scatter step (reduce_scatter of grads, embed.grads or head.grads) with the ranges of the
// flat gradient buffer the block's backward has finished — a layer's block; the embedding's; the
// final norm and the head (a tied head's table on a last stage that is not also the first). The
// runner reduce-scatters them over fsdp into its shard of the accumulator and clears them.
using GradientSink = std::function<void(const Step&, std::span<const Range>)>;

class Executor {
 public:
  // zero3_parts: under ZeRO-3, the range of the flat parameter buffer each fsdp rank owns (the
  // parameter all-gather steps fill the rest before use); empty otherwise.
  Executor(const ModelSpec& m, const Plan& p, const StepProgram& prog, const ShardLayout& lay, MeshComms comms,
           std::vector<Range> zero3_parts = {});
  ~Executor();
  // Forward of micro-batch `micro` (its activations live in slot micro mod the number of
  // micro-batches the stage's pipeline_schedule keeps alive, until its backward): tokens/targets
  // [B, T] of this rank's sequence shard (ignored by stages after the first / before the last).
  // Returns the sum of the token losses whose target falls in this rank's vocab shard (0 unless
  // the pass ran the head; summing over the tensor group gives every token's loss once). `params`
  // is written only by ZeRO-3's parameter all-gathers. `ix` names the sequences for the dropout
  // masks (kept in the slot for the backward). `chunk`: the model chunk to run (interleaved 1F1B,
  // StepProgram::forward_chunk); −1 = the whole stage, which must then be one chunk.
  double forward(std::int64_t micro, float* params, const std::int32_t* tokens, const std::int32_t* targets, Trace* tr,
                 const BatchIndex& ix = {}, std::int64_t chunk = -1);
  // Accumulates d(mean loss over the micro-batch's B·seq_len tokens)/d(params) into grads.
  // `layer_done(l)`, if given, is called as soon as layer l's steps are over: from then on this
  // backward no longer touches layer l's gradients (the runner starts their reduction early).
  // `chunk` as for forward (StepProgram::backward_chunk). `reduce_grads`: the sink of the program's
  // ZeRO-2/3 gradient reduce-scatter steps (required when it has them).
  void backward(std::int64_t micro, float* params, float* grads, Trace* tr,
                const std::function<void(std::int32_t)>& layer_done = {}, std::int64_t chunk = -1,
                const GradientSink* reduce_grads = nullptr);
  // True when every layer's backward steps form one contiguous run (layer_done is then called
  // once per layer of the chunk a backward pass runs, in the order of the pass).
  bool layers_contiguous() const { return layers_contiguous_; }
  // Completes outstanding pipeline sends (before the step's gradient reduction).
  void finish();
  // The head's output of micro-batch `micro`'s last forward pass that ran the head: the softmax
  // probabilities [B·T, this rank's vocab columns] (the logits, normalised in place by the loss
  // step). For the decode tests, which compare token-by-token decoding with the training forward.
  std::span<const float> head_probs(std::int64_t micro);

  struct State;  // activations and buffers (executor_state.hpp)
  using Handler = void (*)(State&, const Step&);

 private:
  struct Bound { Handler fn; const Step* step; };
  std::vector<Bound> bind(const std::vector<Step>& steps, bool backward) const;
  State& slot(std::int64_t micro);
  Range chunk_range(const std::vector<Range>& chunks, std::size_t steps, std::int64_t chunk) const;
  const StepProgram& prog_;
  std::vector<std::unique_ptr<State>> slots_;  // one activation set per micro-batch in flight
  std::vector<Bound> fwd_, bwd_;
  std::vector<char> last_of_layer_;  // bwd_[i] is the last step of its layer (layer ≥ 0)
  bool layers_contiguous_ = true;
};

// Whether the executor has a kernel for `st` when it runs in a forward pass (backward = false) or
// in a backward pass (a backward step's backward handler; recompute steps rerun the forward one):
// what bind() asks. For tests that walk every family's programs (tests/unit/test_steps.cpp).
bool has_handler(const Step& st, bool backward);
// Whether that handler is `fused`: the step's work runs inside a neighbouring step's kernel, so it
// makes no call of its own (the lowering's Step::calls must then be 0: tests/unit/test_steps.cpp).
bool runs_fused(const Step& st, bool backward);

}  // namespace scanshard::train
