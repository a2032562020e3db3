// train/wire.cpp — see wire.hpp.
#include "train/wire.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "kernels/bf16.hpp"

namespace scanshard::train {

DType message_dtype(const Plan& p, const Step& st) {
  const std::string_view n = st.name;
  if (n == tensors::scan_carry) return p.state_dtype;
  if (n == tensors::params || n == tensors::embed_params || n == tensors::head_params) return p.param_dtype;
  if (n == tensors::grads || n == tensors::embed_grads || n == tensors::head_grads || n == tensors::tied_embedding_grads ||
      n == tensors::tp_replicated_grads)
    return p.grad_bytes() == 2 ? DType::bf16 : DType::fp32;
  if (n == tensors::attn_kv_grads || n == tensors::tm_mu_grads || n == tensors::cm_mu_grads || n == tensors::loss_stats)
    return DType::fp32;
  return p.act_dtype;
}

namespace {
using mpi::Bf16;
namespace K = scanshard::kernels;

// Scratch for packed messages (reused: no page faults inside a timed step). Two, for sendrecv.
std::vector<Bf16>& scratch(int which) {
  static std::vector<Bf16> s[2];
  return s[which];
}
std::span<Bf16> packed(int which, std::span<const float> in) {
  auto& v = scratch(which);
  if (v.size() < in.size()) v.resize(in.size());
  K::pack_bf16(reinterpret_cast<K::bf16_bits*>(v.data()), in.data(), static_cast<K::i64>(in.size()));
  return {v.data(), in.size()};
}
std::span<Bf16> room(int which, std::size_t n) {
  auto& v = scratch(which);
  if (v.size() < n) v.resize(n);
  return {v.data(), n};
}
void widen(std::span<const Bf16> in, std::span<float> out) {
  K::unpack_bf16(out.data(), reinterpret_cast<const K::bf16_bits*>(in.data()), static_cast<K::i64>(out.size()));
}
static_assert(sizeof(Bf16) == 2, "a bf16 element is two bytes on the wire");
// `in` packed to bf16, `call(packed, received)` with room for out.size() elements, widened into `out`.
template <class Call>
void through_bf16(std::span<const float> in, std::span<float> out, Call&& call) {
  auto b = packed(0, in);
  auto r = room(1, out.size());
  call(std::span<const Bf16>(b), r);
  widen(r, out);
}
}  // namespace

void Wire::allreduce_sum(std::span<float> data) const {
  if (dtype_ == DType::fp32) return comm.allreduce_sum(data);
  auto b = packed(0, data);
  comm.allreduce_sum(b);
  widen(b, data);
}

void Wire::allgather(std::span<const float> in, std::span<float> out) const {
  if (dtype_ == DType::fp32) return comm.allgather(in, out);
  through_bf16(in, out, [&](std::span<const Bf16> b, std::span<Bf16> r) { comm.allgather(b, r); });
}

void Wire::reduce_scatter_sum(std::span<const float> in, std::span<float> out) const {
  if (dtype_ == DType::fp32) return comm.reduce_scatter_sum(in, out);
  through_bf16(in, out, [&](std::span<const Bf16> b, std::span<Bf16> r) { comm.reduce_scatter_sum(b, r); });
}

void Wire::reduce_scatter_sum_v(std::span<const float> in, std::span<float> out, const std::vector<int>& counts) const {
  if (dtype_ == DType::fp32) return comm.reduce_scatter_sum_v(in, out, counts);
  through_bf16(in, out, [&](std::span<const Bf16> b, std::span<Bf16> r) { comm.reduce_scatter_sum_v(b, r, counts); });
}

void Wire::allgather_v_inplace(std::span<float> buf, const std::vector<int>& counts) const {
  if (dtype_ == DType::fp32) return comm.allgather_v_inplace(buf, counts);
  auto b = packed(0, buf);
  comm.allgather_v_inplace(b, counts);
  widen(b, buf);
}

void Wire::sendrecv(std::span<const float> send, int dest, std::span<float> recv, int source, int tag) const {
  if (dtype_ == DType::fp32) return comm.sendrecv(send, dest, recv, source, tag);
  auto out = packed(0, send);
  auto in = room(1, recv.size());
  comm.sendrecv(std::span<const Bf16>(out), dest, in, source, tag);
  if (source != MPI_PROC_NULL) widen(in, recv);
}

void Wire::recv(std::span<float> data, int source, int tag) const {
  if (dtype_ == DType::fp32) return comm.recv(data, source, tag);
  auto in = room(1, data.size());
  comm.recv(in, source, tag);
  widen(in, data);
}

MPI_Request Wire::isend(std::span<const float> data, int dest, int tag, SendCopies& keep) const {
  if (dtype_ == DType::fp32) {
    auto& copy = keep.emplace_back(data.size_bytes());
    std::memcpy(copy.data(), data.data(), data.size_bytes());
    return comm.isend(std::span<const float>(reinterpret_cast<const float*>(copy.data()), data.size()), dest, tag);
  }
  auto& copy = keep.emplace_back(data.size() * sizeof(Bf16));
  auto* b = reinterpret_cast<Bf16*>(copy.data());
  K::pack_bf16(reinterpret_cast<K::bf16_bits*>(b), data.data(), static_cast<K::i64>(data.size()));
  return comm.isend(std::span<const Bf16>(b, data.size()), dest, tag);
}

void trace_step_bytes(Trace* tr, const Step& st, const mpi::Traffic& before) {
  if (!tr || st.kind == StepKind::compute) return;
  tr->add_bytes(to_string(st.phase), st.op, st.name, mpi::traffic().step_bytes_since(before));
}

}  // namespace scanshard::train
