// train/wire.hpp — cross-rank messages in the plan's element type. The runner computes in fp32;
// a message the lowering prices at 2 bytes per element travels as bf16 (kernels/bf16.hpp: packed
// before the call, widened after it, sums rounded after each addition), so the bytes the runner
// moves are the bytes program/lower.cpp puts in the step's comm_bytes (tests/mpi/test_bf16.cpp
// counts them with mpi::traffic()).
//
// For: the executor's and the runner's collectives and point-to-point messages on fp32 buffers.
// Not for: deciding what to send (the StepProgram) or MPI error handling (comm.hpp).
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "program/lower.hpp"
#include "program/trace.hpp"
#include "train/comm.hpp"

namespace scanshard::train {

// The element type a step's message travels in, as the lowering prices it (lower.cpp): the scan
// carry in the scan-state dtype; ZeRO parameter gathers in the parameter dtype; the data/fsdp/
// sequence gradient reductions (grads, ZeRO-2/3's embed.grads and head.grads, the tied table,
// rs_ag's token-partial tensors) in the
// plan's gradient dtype (Plan::grad_bytes); the tensor-parallel all-reduces of replicated
// weights' gradients (attn.kv_grads, the RWKV μ/LoRA gradients: lower.cpp's c.g) and the softmax
// statistics in fp32; every other message — activations and their gradients: tensor-parallel
// all-reduces, rs_ag gathers and scatters, halos, ring K/V, pipeline transfers — in the
// activation dtype.
DType message_dtype(const Plan& p, const Step& st);

// Copies of non-blocking sends' data, alive until their requests complete.
using SendCopies = std::list<std::vector<unsigned char>>;

// `comm` with every message's elements in `dtype` (fp32 passes the buffers through).
class Wire {
 public:
  Wire(const mpi::Comm& c, DType dtype) : comm(c), dtype_(dtype) {}
  const mpi::Comm& comm;

  void allreduce_sum(std::span<float> data) const;
  void allgather(std::span<const float> in, std::span<float> out) const;
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out) const;
  void reduce_scatter_sum_v(std::span<const float> in, std::span<float> out, const std::vector<int>& counts) const;
  void allgather_v_inplace(std::span<float> buf, const std::vector<int>& counts) const;
  void sendrecv(std::span<const float> send, int dest, std::span<float> recv, int source, int tag = 0) const;
  void recv(std::span<float> data, int source, int tag) const;
  // Sends from a copy appended to `keep` (which must outlive the request).
  MPI_Request isend(std::span<const float> data, int dest, int tag, SendCopies& keep) const;

 private:
  DType dtype_;
};

// Adds the payload mpi::traffic() counted since `before` (Traffic::step_bytes_since) to the
// trace cell of `st`, for a communication step; nothing for compute steps or without a trace.
void trace_step_bytes(Trace* tr, const Step& st, const mpi::Traffic& before);

}  // namespace scanshard::train
