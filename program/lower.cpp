// program/lower.cpp — see lower.hpp. Each block emitter below writes its forward steps and, in
// forward order, the backward steps they imply; lower() reverses the backward per layer, adds
// recompute for the remat policy, pipeline p2p, gradient sync and the optimizer.
#include "program/lower.hpp"

#include "program/param_layout.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string_view>

namespace scanshard {

const char* to_string(Phase p) {
  static const char* n[] = {"forward", "backward", "recompute", "optimizer"};
  return n[static_cast<int>(p)];
}
const char* to_string(OpClass c) {
  static const char* n[] = {"gemm", "attention", "scan", "elementwise", "norm", "embedding", "optimizer", "comm"};
  return n[static_cast<int>(c)];
}
const char* to_string(CommKind k) {
  static const char* n[] = {"none", ops::all_reduce, ops::all_gather, ops::reduce_scatter, ops::send_recv};
  return n[static_cast<int>(k)];
}

std::array<std::int64_t, kAxisCount> rank_coords(const Mesh& mesh, std::int64_t rank) {
  std::array<std::int64_t, kAxisCount> c{};
  for (Axis a : {Axis::tensor, Axis::sequence, Axis::fsdp, Axis::data, Axis::pipeline}) {
    c[static_cast<int>(a)] = rank % mesh[a];
    rank /= mesh[a];
  }
  return c;
}

std::int64_t rank_of(const Mesh& mesh, const std::array<std::int64_t, kAxisCount>& c) {
  std::int64_t r = 0;
  for (Axis a : {Axis::pipeline, Axis::data, Axis::fsdp, Axis::sequence, Axis::tensor})
    r = r * mesh[a] + c[static_cast<int>(a)];
  return r;
}

std::int64_t critical_rank(const Mesh& mesh) {
  std::array<std::int64_t, kAxisCount> c{};
  c[static_cast<int>(Axis::pipeline)] = mesh[Axis::pipeline] - 1;
  c[static_cast<int>(Axis::sequence)] = mesh[Axis::sequence] - 1;
  return rank_of(mesh, c);
}

std::int64_t visible_keys(std::int64_t q0, std::int64_t q1, std::int64_t window) {
  // Σ_{q=q0}^{q1−1} (q − max(0, q − W) + 1): q+1 keys while q < W (or always if W = 0), then W+1.
  auto tri = [](std::int64_t a, std::int64_t b) { return (b * (b + 1) - a * (a + 1)) / 2; };  // Σ_{q=a}^{b−1} (q+1)
  if (window <= 0) return tri(q0, q1);
  const std::int64_t split = std::clamp(window, q0, q1);
  return tri(q0, split) + (q1 - split) * (window + 1);
}

std::int64_t tiled_attention_pairs(std::int64_t q0, std::int64_t q1, std::int64_t window, std::int64_t tile) {
  std::int64_t pairs = 0;
  for (std::int64_t t0 = q0; t0 < q1; t0 += tile) {
    const std::int64_t last = std::min(q1, t0 + tile) - 1;                   // the tile's last query
    const std::int64_t first_key = window > 0 ? std::max<std::int64_t>(0, t0 - window) : 0;  // its first query's
    pairs += (last - t0 + 1) * (last - first_key + 1);
  }
  return pairs;
}

std::int64_t kv_halo_rows(std::int64_t window, std::int64_t T, std::int64_t hop) {
  return std::clamp<std::int64_t>(window - (hop - 1) * T, 0, T);
}
std::int64_t kv_halo_hops(std::int64_t window, std::int64_t T) { return window <= 0 ? 0 : (window + T - 1) / T; }

KvHalo kv_halo(std::int64_t window, std::int64_t T, std::int64_t s, std::int64_t sp) {
  KvHalo k;
  for (std::int64_t h = 1; h <= kv_halo_hops(window, T); ++h) {
    if (s - h >= 0) k.received += kv_halo_rows(window, T, h);  // from shard s − h
    if (s + h < sp) k.sent += kv_halo_rows(window, T, h);      // to shard s + h
  }
  return k;
}

std::int64_t kv_heads_per_rank(const ModelSpec& m, std::int64_t t) { return tensor_rank_dims(m, t, 0).kv_heads; }

WkvCarryElems wkv_carry_elems(Family family, std::int64_t B, std::int64_t Dl, std::int64_t N) {
  if (family == Family::rwkv6) return {B * Dl * N, B * Dl * N, B * Dl, true};  // B·Hl·N·N, Hl = Dl/N
  return {3 * B * Dl, 2 * B * Dl, Dl, false};
}

namespace {

// Everything an emitter needs, derived once per lowering.
struct Ctx {
  const ModelSpec& m;
  const Plan& p;
  std::int64_t t = 1;         // tensor-parallel size
  std::int64_t sp = 1;        // sequence-parallel size
  std::int64_t s_coord = 0;   // this rank's sequence shard
  double B = 1;               // micro-batch sequences
  double T = 1;               // local tokens
  double n = 1;               // B·T tokens in one micro-batch on this rank
  double a = 2;               // activation bytes
  double w = 2;               // parameter bytes
  double g = 4;               // gradient bytes (accumulated in fp32 unless params are fp32 anyway)
  double dw = 4;              // bytes per weight element a weight-gradient GEMM writes (grad_accumulation_bytes)
  double dw_c = 0;            // and reads of its C (grad_accumulation fused: β = 1 into the accumulator)
  double st = 4;              // scan state bytes
  double tp_seq = 1;          // rs_ag: t — norm/dropout/residual regions hold n/t tokens (Korthikanti et al. 2022)
  bool rs_ag = false;
};

// Bytes one shard sends in a sequence-parallel scan carry: a ring hop's message, its share of the
// all-gather; forward and backward.
struct CarryBytes {
  double ring_forward, ring_backward, gather_forward, gather_backward;
  static CarryBytes same(double ring, double gather) { return {ring, ring, gather, gather}; }
  static CarryBytes wkv(const Ctx& c, double Dl) {
    const WkvCarryElems e = wkv_carry_elems(c.m.family, static_cast<std::int64_t>(c.B), static_cast<std::int64_t>(Dl), c.m.head_size);
    const auto bytes = [&](std::int64_t elems) { return static_cast<double>(elems) * c.st; };
    return {bytes(e.ring_forward()), bytes(e.ring_backward()), bytes(e.gather_forward()), bytes(e.gather_backward())};
  }
};

struct Emit {
  const Ctx& c;
  std::int32_t layer;
  std::vector<Step>& fwd;
  std::vector<Step>& bwd;  // in forward order; reversed by the caller

  Step base(Phase ph, OpClass cls, const char* op, const char* name) const {
    Step s;
    s.phase = ph; s.cls = cls; s.op = op; s.name = name; s.layer = layer;
    return s;
  }

  // y[n, G·dout] = x[n, G·din] · blockdiag(W_1..W_G), each W_g [din, dout] (+ bias); G = 1 is a
  // plain linear, G > 1 the RG-LRU gates and RWKV-6's LoRA B. Backward: dX = dY·Wᵀ, dW = Xᵀ·dY.
  // `kernel` (optional) names the kernel for a per-kernel efficiency (Efficiency::ops).
  void linear(const char* name, double din, double dout, double groups = 1, const char* kernel = nullptr) {
    const double X = c.n * groups * din * c.a, Y = c.n * groups * dout * c.a, Wb = groups * din * dout;
    Step f = base(Phase::forward, OpClass::gemm, ops::linear, name);
    f.kernel = kernel;
    f.m = static_cast<std::int64_t>(c.n); f.n = static_cast<std::int64_t>(dout); f.k = static_cast<std::int64_t>(din);
    f.matmul_flops = 2 * c.n * groups * din * dout;
    f.bytes_read = X + Wb * c.w;
    f.bytes_written = Y;
    f.saved_bytes = Y;
    fwd.push_back(f);
    Step dx = base(Phase::backward, OpClass::gemm, ops::linear_dx, name);
    dx.kernel = kernel;
    dx.m = f.m; dx.n = f.k; dx.k = f.n;
    dx.matmul_flops = f.matmul_flops;
    dx.bytes_read = Y + Wb * c.w;
    dx.bytes_written = X;
    Step dw = base(Phase::backward, OpClass::gemm, ops::linear_dw, name);
    dw.kernel = kernel;
    dw.m = f.k; dw.n = f.n; dw.k = f.m;
    dw.matmul_flops = f.matmul_flops;
    dw.bytes_read = X + Y + Wb * c.dw_c;
    dw.bytes_written = Wb * c.dw;
    dw.weight_grad_elems = Wb;
    bwd.push_back(dw);
    bwd.push_back(dx);
  }

  // Elementwise op over `elems` elements reading `reads` and writing `writes` tensors of that size.
  // Backward reads the inputs plus dOut and writes one gradient per input, at twice the FLOPs.
  void elementwise(OpClass cls, const char* op, const char* name, double elems, double reads, double writes,
                   double flops_per_elem, bool saved = true, const char* kernel = nullptr) {
    Step f = base(Phase::forward, cls, op, name);
    f.kernel = kernel;
    f.vector_flops = flops_per_elem * elems;
    f.bytes_read = reads * elems * c.a;
    f.bytes_written = writes * elems * c.a;
    f.saved_bytes = saved ? f.bytes_written : 0;
    fwd.push_back(f);
    Step b = base(Phase::backward, cls, op, name);
    b.kernel = kernel;
    b.vector_flops = 2 * f.vector_flops;
    b.bytes_read = (reads + writes) * elems * c.a;
    b.bytes_written = reads * elems * c.a;
    bwd.push_back(b);
  }

  void collective(Phase ph, CommKind kind, Axis axis, const char* name, double bytes, bool overlappable = false) {
    const std::int64_t size = c.p.mesh[axis];
    if (size <= 1 || bytes <= 0) return;
    Step s = base(ph, OpClass::comm, kind == CommKind::all_reduce ? ops::all_reduce : kind == CommKind::all_gather ? ops::all_gather : ops::reduce_scatter, name);
    s.kind = StepKind::collective; s.comm = kind; s.axis = axis; s.comm_bytes = bytes; s.overlappable = overlappable;
    (ph == Phase::forward ? fwd : bwd).push_back(s);
  }

  void p2p(Phase ph, Axis axis, const char* name, double bytes, std::int32_t hops, bool overlappable = false) {
    if (c.p.mesh[axis] <= 1 || bytes <= 0 || hops <= 0) return;
    Step s = base(ph, OpClass::comm, ops::send_recv, name);
    s.kind = StepKind::p2p; s.comm = CommKind::send_recv; s.axis = axis; s.comm_bytes = bytes; s.hops = hops;
    s.overlappable = overlappable;
    (ph == Phase::forward ? fwd : bwd).push_back(s);
  }

  // Megatron: one all-reduce of [n, D] after each row-split linear in forward, one for the input
  // gradient of each column-split block in backward (DESIGN §4). Under rs_ag (sequence
  // parallelism, Korthikanti et al. 2022 §4.2.2) the exit of a block is a reduce-scatter to n/t
  // tokens in forward and an all-gather of the output gradient in backward; the entry is an
  // all-gather of the sequence-sharded norm output in forward and a reduce-scatter of the input
  // gradient in backward — the same bytes as the all-reduce each pair replaces. The entry's
  // input is saved sharded, so backward gathers it again for the weight gradients (overlapped
  // with the input-gradient GEMM, §4.2.2), unless the whole block is recomputed anyway.
  // Plan::async_tensor_comm: the entry's backward all-reduce (rs_ag: reduce-scatter) of the input
  // gradient is overlappable (it runs beside the layer's weight-gradient GEMM); the pass model
  // hides it behind the backward pass's compute (sim Pass::finish).
  void tensor_allreduce_fwd(const char* name) {
    const double bytes = c.n * c.m.width * c.a;
    if (!c.rs_ag) return collective(Phase::forward, CommKind::all_reduce, Axis::tensor, name, bytes);
    collective(Phase::forward, CommKind::reduce_scatter, Axis::tensor, name, bytes);
    collective(Phase::backward, CommKind::all_gather, Axis::tensor, name, bytes);
  }
  void tensor_allreduce_bwd(const char* name) {
    const double bytes = c.n * c.m.width * c.a;
    const bool async = c.p.async_tensor_comm;
    if (!c.rs_ag) return collective(Phase::backward, CommKind::all_reduce, Axis::tensor, name, bytes, async);
    collective(Phase::forward, CommKind::all_gather, Axis::tensor, name, bytes);
    if (c.p.remat != Remat::block) collective(Phase::backward, CommKind::all_gather, Axis::tensor, tensors::tp_regather_input, bytes, true);
    collective(Phase::backward, CommKind::reduce_scatter, Axis::tensor, name, bytes, async);
  }

  // Token-wise regions between tensor-parallel blocks: n·D elements, or n·D/t under rs_ag.
  double seq_elems() const { return c.n * c.m.width / c.tp_seq; }
  void rmsnorm(const char* name) { elementwise(OpClass::norm, ops::rmsnorm, name, seq_elems(), 1, 1, 4); }
  void layernorm(const char* name) { elementwise(OpClass::norm, ops::layernorm, name, seq_elems(), 1, 1, 8); }
  void norm(const char* name) { c.m.norm == NormKind::layernorm ? layernorm(name) : rmsnorm(name); }
  // A residual add is a plain loop in the runner and the decoder (no kernel of its own: no OpenMP
  // region) and fused into its neighbours by XLA: it pays no per-call cost (calls = 0).
  void residual(const char* name, bool saved = false) {
    elementwise(OpClass::elementwise, ops::add, name, seq_elems(), 2, 1, 1, saved);
    fwd.back().calls = bwd.back().calls = 0;
  }
  // Rotary positions on the H query and KV key heads: two kernel calls each way (the executor's
  // and the decoder's handlers rotate q, then k).
  void rope(double H, double KV, double N, bool saved) {
    elementwise(OpClass::elementwise, ops::rope, tensors::attn_rope, c.n * (H + KV) * N * c.m.rope_fraction, 1, 1, 3, saved);
    fwd.back().calls = bwd.back().calls = 2;
  }
  // The last forward and backward steps run inside a neighbouring step's kernel (the executor's
  // handler for them is `fused`, train/exec_*.cpp): their work is priced, their call is not.
  void fused_into_neighbour() { fwd.back().calls = bwd.back().calls = 0; }
  // Dropout (training): reads x, writes y and a one-byte mask; the mask is what backward keeps.
  void dropout(const char* name, double elems) {
    if (c.m.dropout <= 0) return;
    elementwise(OpClass::elementwise, ops::dropout, name, elems, 1, 1, 2);
    fwd.back().bytes_written += elems;
    fwd.back().saved_bytes = elems;  // the mask, 1 byte per element
  }

  // Linear-recurrence scan over `elems` = n·channels. Base accounting (fused, state on chip):
  // reads `reads` tensors, writes `writes`, `flops` per element (Griffin paper §4: RG-LRU reads
  // a, i, x and writes h, 6 FLOPs → bf16: 6 B read + 2 B written → 0.75 FLOP/byte).
  // rerun_fix: the sequence carry's fix re-runs the scan from the true incoming state (WKV: its
  // output is not a linear function of the state the way the RG-LRU's is).
  // saved_state_bytes: states the forward writes and saves for the backward (RWKV-4's checkpoints).
  void scan(const char* op, const char* name, double elems, double reads, double writes, double flops,
            double state_bytes, const CarryBytes& carry, double bwd_reads, double bwd_writes, bool rerun_fix = false,
            double saved_state_bytes = 0) {
    double r = reads, wr = writes, fl = flops;
    switch (c.p.scan) {
      case ScanAlgo::naive:        // each stage materialised: ~5 extra elementwise passes
        r += 6; wr += 4; break;
      case ScanAlgo::sequential: break;
      case ScanAlgo::chunked:      // second pass: read local h and cumulative decay, fix h
        r += 2; wr += 1; fl += 2; break;
      case ScanAlgo::associative:  // log-depth tree: ~2x FLOPs, (A, B) pairs written and re-read
        r += 2; wr += 2; fl *= 2; break;
    }
    Step f = base(Phase::forward, OpClass::scan, op, name);
    f.vector_flops = fl * elems;
    f.bytes_read = r * elems * c.a;
    f.bytes_written = wr * elems * c.a + saved_state_bytes;
    f.saved_bytes = writes * elems * c.a + saved_state_bytes;
    f.state_bytes = state_bytes;
    f.spill_bytes = c.p.scan == ScanAlgo::sequential ? 2 * elems * c.st : 0;  // h round-trips per token
    fwd.push_back(f);
    Step b = base(Phase::backward, OpClass::scan, op, name);  // reverse scan
    b.vector_flops = 2 * f.vector_flops;
    b.bytes_read = (bwd_reads + (r - reads)) * elems * c.a + saved_state_bytes;
    b.bytes_written = (bwd_writes + (wr - writes)) * elems * c.a;
    b.state_bytes = state_bytes;
    b.spill_bytes = f.spill_bytes;
    bwd.push_back(b);
    sequence_carry(name, carry, elems, rerun_fix ? &f : nullptr, rerun_fix ? &b : nullptr);
  }

  // Sequence-sharded scan: exchange chunk summaries, then fix the local output with
  // y_t += (Π_{s≤t} a_s) · h_in (read y and the cumulative decay, write y). Backward mirrors it.
  // ring: each hop passes the combined state (gradient) onward; all-gather: every shard's summary
  // (CarryBytes: what one shard sends, per scheme and direction).
  // The fix is elementwise (h += Π a · h_in), or with rerun_fwd/bwd a copy of the scan's own
  // steps: train/exec_rwkv4.cpp re-runs the WKV chunk forward from its true incoming state (the
  // first shard only copies) and its backward once more for the chunk's own d state_in.
  void sequence_carry(const char* name, const CarryBytes& carry, double elems, const Step* rerun_fwd = nullptr,
                      const Step* rerun_bwd = nullptr) {
    const std::int64_t P = c.p.mesh[Axis::sequence];
    if (P <= 1) return;
    for (Phase ph : {Phase::forward, Phase::backward}) {
      const bool f = ph == Phase::forward;
      if (c.p.carry == CarryScheme::ring)
        p2p(ph, Axis::sequence, tensors::scan_carry, f ? carry.ring_forward : carry.ring_backward, static_cast<std::int32_t>(P - 1));
      else
        collective(ph, CommKind::all_gather, Axis::sequence, tensors::scan_carry,
                   (f ? carry.gather_forward : carry.gather_backward) * static_cast<double>(P));
    }
    Step fix = base(Phase::forward, OpClass::elementwise, ops::scan_carry_fix, name);
    fix.vector_flops = 2 * elems; fix.bytes_read = 2 * elems * c.a; fix.bytes_written = elems * c.a;
    auto rerun = [&](const Step* like, Phase ph) {
      Step r = *like;
      r.phase = ph;
      r.kernel = like->op;
      r.op = ops::scan_carry_fix;
      r.saved_bytes = 0;
      return r;
    };
    fwd.push_back(rerun_fwd && c.s_coord > 0 ? rerun(rerun_fwd, Phase::forward) : fix);
    fix.phase = Phase::backward;
    bwd.push_back(rerun_bwd ? rerun(rerun_bwd, Phase::backward) : fix);
  }

  // Halo of `tokens` tokens of `channels` channels from the left neighbour (forward; every shard
  // sends its last tokens right, the first receives nothing); the gradient goes back in backward.
  void halo(const char* name, double tokens, double channels) {
    const double bytes = c.B * tokens * channels * c.a;
    p2p(Phase::forward, Axis::sequence, name, bytes, 1);
    p2p(Phase::backward, Axis::sequence, name, bytes, 1);
  }
};

// ---- Griffin / Hawk / MQA blocks (DESIGN §3.1) ----------------------------------------------

void gated_mlp(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, F = c.m.mlp_width / c.t;
  e.rmsnorm(tensors::norm2);
  e.tensor_allreduce_bwd(tensors::mlp_in_grad);  // after the norm in forward order: runs before its backward
  e.linear(tensors::mlp_w1, D, F);
  e.linear(tensors::mlp_w2, D, F);
  e.elementwise(OpClass::elementwise, ops::gelu_mul, tensors::mlp_act, c.n * F, 2, 1, 10);  // gelu_tanh(h1) ⊙ h2
  e.linear(tensors::mlp_w3, F, D);
  e.tensor_allreduce_fwd(tensors::mlp_out);
  e.residual(tensors::mlp_residual);
}

void recurrent_block(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, R = c.m.recurrent_width / c.t, K = c.m.conv_width;
  const double Rb = static_cast<double>(c.m.recurrent_width / c.m.gate_blocks);  // block size
  e.rmsnorm(tensors::norm1);
  e.tensor_allreduce_bwd(tensors::rec_in_grad);
  e.linear(tensors::rec_wy, D, R);
  // the runner fuses the gate's gelu with the ⊙ below into one kernel (gelu_mul, as mlp.act): the
  // call is rec.gated's (the executor's handler for this step is `fused`)
  e.elementwise(OpClass::elementwise, ops::gelu, tensors::rec_gate, c.n * R, 1, 1, 8, true, ops::gelu_mul);
  e.fused_into_neighbour();
  e.linear(tensors::rec_wx, D, R);
  e.halo(tensors::rec_conv_halo, K - 1, R);
  e.elementwise(OpClass::elementwise, ops::conv1d, tensors::rec_conv, c.n * R, 1, 1, 2 * K);
  // block-diagonal gate linears: (R/t)/Rb blocks of Rb×Rb on this rank (thin GEMMs: their own
  // efficiency when the cluster file has one, efficiency.ops.blockdiag)
  e.linear(tensors::rec_gate_a, Rb, Rb, R / Rb, ops::blockdiag);
  e.linear(tensors::rec_gate_x, Rb, Rb, R / Rb, ops::blockdiag);
  // log a = −8·r·softplus(Λ), a, sqrt(1 − a²): reads the r gate, writes a. Class scan: the fused
  // scan kernel computes it per token (the runner's, and the paper's fused linear scan), so it runs
  // at the scan's rate, not a standalone elementwise pass's (calibrate fits the scan class on the
  // two together: priced at the elementwise value, the decay alone cost more than both measured).
  e.elementwise(OpClass::scan, ops::rglru_decay, tensors::rec_decay, c.n * R, 1, 1, 6);
  e.fused_into_neighbour();  // no call of its own: the scan kernel's
  // RG-LRU carry: h [B,R] along the ring (dh backward); the forward all-gather adds the decay
  // product Π a [B,R], which every shard keeps, so the backward gathers dh only
  const double carry = c.B * R * c.st;
  e.scan(ops::rglru_scan, tensors::rec_scan, c.n * R, 3, 1, 6, carry, CarryBytes{carry, carry, 2 * carry, carry}, 5, 3);
  e.elementwise(OpClass::elementwise, ops::mul, tensors::rec_gated, c.n * R, 2, 1, 1, true, ops::gelu_mul);
  e.linear(tensors::rec_wo, R, D);
  e.tensor_allreduce_fwd(tensors::rec_out);
  e.residual(tensors::rec_residual);
}

// The attention core on this rank's H query and KV key/value heads of size N: halo or ring
// K/V exchange under `sequence`, then the scores/softmax/P·V products. Flash (blockwise) keeps
// the output and the log-sum-exp and recomputes QKᵀ in backward; materialized (Megatron-LM)
// computes the whole T×T square (the causal mask is applied to it), writes the softmax output
// and, with dropout, its mask and dropped copy — the 5·a·s²·b bytes of Korthikanti et al. 2022
// §4.1 — and keeps them for backward.
void attention_core(Emit& e, bool local, double H, double KV, double N) {
  const Ctx& c = e.c;
  const std::int64_t W = local ? c.m.window : 0;
  const auto q0 = static_cast<std::int64_t>(c.s_coord * c.T), q1 = q0 + static_cast<std::int64_t>(c.T);
  const KvHalo kv = kv_halo(W, static_cast<std::int64_t>(c.T), c.s_coord, c.sp);
  const double halo_tokens = static_cast<double>(local ? kv.received : q0);  // K/V rows before this rank's own
  if (local) {
    // every peer the window reaches at once (one round): the link carries the larger direction
    e.halo(tensors::attn_kv_halo, static_cast<double>(std::max(kv.received, kv.sent)), 2 * KV * N);
  } else if (c.sp > 1) {  // ring attention: K/V blocks travel P−1 hops, hidden behind compute
    const double block = c.B * c.T * 2 * KV * N * c.a;
    e.p2p(Phase::forward, Axis::sequence, tensors::attn_ring_kv, block, static_cast<std::int32_t>(c.sp - 1), true);
    e.p2p(Phase::backward, Axis::sequence, tensors::attn_ring_kv, 2 * block, static_cast<std::int32_t>(c.sp - 1), true);
  }
  const double kv_tokens = c.T + halo_tokens;
  const double q_bytes = c.n * H * N * c.a, kv_bytes = c.B * kv_tokens * 2 * KV * N * c.a;
  if (c.p.attention == AttentionKernel::materialized) {
    const double pairs = c.T * kv_tokens * H * c.B;  // the whole square: every (query, key) pair
    const double drop = c.m.dropout > 0 ? 1 : 0;
    // scores = QKᵀ·N^−½ (written), softmax (read, write P), dropout (read P, write mask + P')
    Step sc = e.base(Phase::forward, OpClass::attention, ops::attention_scores, tensors::attn_core);
    sc.matmul_flops = 2 * N * pairs;
    sc.vector_flops = (5 + 2 * drop) * pairs;
    sc.bytes_read = q_bytes + kv_bytes / 2 + pairs * c.a * (1 + drop);
    sc.bytes_written = pairs * (2 * c.a + drop * (c.a + 1));
    sc.saved_bytes = pairs * (c.a + drop * (c.a + 1));  // P, mask, P' (Korthikanti: 2 + 1 + 2 bytes)
    // softmax (read scores, write P) and dropout (read P, write mask and P') run after QKᵀ
    sc.unfused_bytes = pairs * (2 * c.a + drop * (2 * c.a + 1));
    e.fwd.push_back(sc);
    Step cx = e.base(Phase::forward, OpClass::attention, ops::attention_context, tensors::attn_core);  // P'·V
    cx.matmul_flops = 2 * N * pairs;
    cx.bytes_read = pairs * c.a + kv_bytes / 2;
    cx.bytes_written = q_bytes;
    cx.saved_bytes = q_bytes;
    e.fwd.push_back(cx);
    Step bsc = sc;  // dQ, dK from dS; softmax and dropout backward
    bsc.phase = Phase::backward; bsc.saved_bytes = 0;
    bsc.matmul_flops = 2 * sc.matmul_flops;
    bsc.bytes_read = sc.bytes_written + q_bytes + kv_bytes / 2;
    bsc.bytes_written = pairs * c.a + q_bytes + kv_bytes / 2;
    bsc.unfused_bytes = pairs * (2 * c.a + drop * (c.a + 1));  // dropout and softmax backward, before dS·K and dSᵀ·Q
    Step bcx = cx;  // dP' = dO·Vᵀ, dV = P'ᵀ·dO
    bcx.phase = Phase::backward; bcx.saved_bytes = 0;
    bcx.matmul_flops = 2 * cx.matmul_flops;
    bcx.bytes_read = cx.bytes_read + q_bytes;
    bcx.bytes_written = pairs * c.a + kv_bytes / 2;
    e.bwd.push_back(bsc);
    e.bwd.push_back(bcx);
    return;
  }
  const double keys = static_cast<double>(visible_keys(q0, q1, W));  // per sequence, per head
  const double tiled = static_cast<double>(tiled_attention_pairs(q0, q1, W, kAttentionQueryTile));
  Step f = e.base(Phase::forward, OpClass::attention, local ? ops::attention_local : ops::attention_global, tensors::attn_core);
  // a named kernel (flash_v1, flash_v2, flash_triton): its name tags the steps for its measured
  // rate (efficiency.attention_kernels); the backward and the recomputed scores copy it
  if (c.p.attention != AttentionKernel::flash) f.kernel = to_string(c.p.attention);
  f.matmul_flops = 4 * N * tiled * H * c.B;  // QKᵀ and P·V over whole query tiles
  // scale, max, exp, sum, normalise; with dropout the mask drawn and applied in the kernel (as the
  // materialized core's 2 per pair; regenerated, not stored, so no saved bytes)
  f.vector_flops = (5 + (c.m.dropout > 0 ? 2 : 0)) * keys * H * c.B;
  f.bytes_read = q_bytes + kv_bytes;
  f.bytes_written = q_bytes;
  f.saved_bytes = f.bytes_written + c.n * H * 4;  // output and the softmax log-sum-exp
  e.fwd.push_back(f);
  Step b = f;  // dQ, dK, dV, dP: twice the forward products
  b.phase = Phase::backward; b.saved_bytes = 0;
  b.matmul_flops = 2 * f.matmul_flops;
  b.vector_flops = 2 * f.vector_flops;
  b.bytes_read = f.bytes_read + 2 * f.bytes_written;
  b.bytes_written = f.bytes_read;
  Step scores = f;  // blockwise attention keeps no T×T scores: backward recomputes QKᵀ
  scores.phase = Phase::backward; scores.saved_bytes = 0; scores.op = ops::attention_scores;
  scores.name = tensors::attn_scores_recompute;
  scores.matmul_flops = f.matmul_flops / 2;
  scores.calls = 0;  // inside the attention backward's kernel (the executor's handler: `fused`)
  e.bwd.push_back(b);
  e.bwd.push_back(scores);
}

void attention_block(Emit& e, bool local) {
  const Ctx& c = e.c;
  const double D = c.m.width, N = c.m.head_dim, H = static_cast<double>(c.m.heads / c.t);
  const double KV = static_cast<double>(kv_heads_per_rank(c.m, c.t));
  e.rmsnorm(tensors::norm1);
  e.tensor_allreduce_bwd(tensors::attn_in_grad);
  e.linear(tensors::attn_wq, D, H * N);
  if (c.m.kv_heads < c.t)  // replicated K/V head: each rank's weight gradient covers its query heads only
    e.collective(Phase::backward, CommKind::all_reduce, Axis::tensor, tensors::attn_kv_grads, 2 * D * static_cast<double>(c.m.kv_heads) * N * c.g);
  e.linear(tensors::attn_wk, D, KV * N);
  e.linear(tensors::attn_wv, D, KV * N);
  e.rope(H, KV, N, true);
  attention_core(e, local, H, KV, N);
  e.linear(tensors::attn_wo, H * N, D);
  e.tensor_allreduce_fwd(tensors::attn_out);
  e.residual(tensors::attn_residual);
}

// ---- Transformer (GPT-style pre-LN block) -----------------------------------------------------
// Activation bytes kept follow Korthikanti et al. 2022 §4.1 (per layer, s·b tokens, width h, a
// heads, bf16, dropout masks 1 byte): LayerNorm inputs 2·2sbh, QKV input 2sbh, Q K V 6sbh, core
// output 2sbh, the 5as²b of a materialized core, two dropout masks 2sbh, MLP input 2sbh, the
// 4h-wide GeLU input and output 16sbh — 34sbh + 5as²b. Linears keep their inputs (the previous
// step's output), so a branch's last linear and the residual add after the dropout keep nothing.

void transformer_attention(Emit& e, bool local) {
  const Ctx& c = e.c;
  const double D = c.m.width, N = c.m.head_dim, H = static_cast<double>(c.m.heads / c.t);
  const double KV = static_cast<double>(kv_heads_per_rank(c.m, c.t));
  e.norm(tensors::norm1);
  e.tensor_allreduce_bwd(tensors::attn_in_grad);
  e.linear(tensors::attn_wq, D, H * N);
  if (c.m.kv_heads < c.t)  // replicated K/V heads: each rank's weight (and bias) gradient covers its query heads only
    e.collective(Phase::backward, CommKind::all_reduce, Axis::tensor, tensors::attn_kv_grads,
                 2 * (D + (c.m.linear_bias ? 1 : 0)) * static_cast<double>(c.m.kv_heads) * N * c.g);
  e.linear(tensors::attn_wk, D, KV * N);
  e.linear(tensors::attn_wv, D, KV * N);
  if (c.m.rope_fraction > 0) e.rope(H, KV, N, false);  // rotary positions: backward needs only the angles
  attention_core(e, local, H, KV, N);
  e.linear(tensors::attn_wo, H * N, D);
  e.fwd.back().saved_bytes = 0;
  if (c.m.parallel_block) return;  // the MLP branch adds its output, and one exit follows (transformer_mlp)
  e.tensor_allreduce_fwd(tensors::attn_out);
  e.dropout(tensors::attn_dropout, e.seq_elems());
  e.residual(tensors::attn_residual, true);  // the second norm's input
}

// The MLP branch. Sequential block: its own norm and tensor-parallel entry. Parallel block (after
// transformer_attention's branch, from the same norm1 output): no entry of its own, and W3
// accumulates into the attention branch's output (a GEMM with β = 1: it reads that output too),
// so one exit carries both branches' partial sums.
void transformer_mlp(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, F = c.m.mlp_width / c.t;
  if (!c.m.parallel_block) {
    e.norm(tensors::norm2);
    e.tensor_allreduce_bwd(tensors::mlp_in_grad);
  }
  e.linear(tensors::mlp_w1, D, F);
  if (c.m.mlp == MlpKind::gelu) {
    // the runner's gelu_mul kernel without its second operand (as the recurrent gate's gelu):
    // priced with that kernel's own value when the chip has one, not the class's
    e.elementwise(OpClass::elementwise, ops::gelu, tensors::mlp_act, c.n * F, 1, 1, 8, true, ops::gelu_mul);
  } else {  // swiglu: silu(x W1) ⊙ x W2
    e.linear(tensors::mlp_w2, D, F);
    e.elementwise(OpClass::elementwise, ops::silu_mul, tensors::mlp_act, c.n * F, 2, 1, 6);
  }
  e.linear(tensors::mlp_w3, F, D);
  e.fwd.back().saved_bytes = 0;
  if (c.m.parallel_block) e.fwd.back().bytes_read += c.n * D * c.a;  // β = 1: the attention branch's output
  e.tensor_allreduce_fwd(tensors::mlp_out);
  e.dropout(tensors::mlp_dropout, e.seq_elems());
  e.residual(tensors::mlp_residual);
}

// ---- RWKV blocks (DESIGN §3.2, §3.3) --------------------------------------------------------

// The entry both RWKV mixes share: LayerNorm, the tensor-parallel input gradient, the one-token
// shift halo, the all-reduce of the `mixes` shift weights μ (whole on every tensor rank, partial
// gradients) and the token shift writing `mixes` mixed inputs.
void rwkv_shift_entry(Emit& e, const char* norm, const char* in_grad, const char* halo, const char* mu_grads,
                      const char* shift, double mixes) {
  const Ctx& c = e.c;
  const double D = c.m.width;
  e.layernorm(norm);
  e.tensor_allreduce_bwd(in_grad);
  e.halo(halo, 1, D);
  e.collective(Phase::backward, CommKind::all_reduce, Axis::tensor, mu_grads, mixes * D * c.g);
  e.elementwise(OpClass::elementwise, ops::token_shift, shift, c.n * D, 2, mixes, 2 * mixes);
  // one kernel call per mix each way (the executor's and the decoder's handlers shift once per μ)
  e.fwd.back().calls = e.bwd.back().calls = mixes;
}

void channel_mix(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, F = c.m.mlp_width / c.t, Dl = D / c.t;
  // the shift's mixes μ_k, μ_r are whole on every tensor rank but see partial input gradients
  rwkv_shift_entry(e, tensors::norm2, tensors::cm_in_grad, tensors::cm_shift_halo, tensors::cm_mu_grads, tensors::cm_shift, 2);
  e.linear(tensors::cm_wk, D, F);
  e.elementwise(OpClass::elementwise, ops::relu_sq, tensors::cm_act, c.n * F, 1, 1, 2);
  e.linear(tensors::cm_wv, F, D);
  // stays an all-reduce under rs_ag too: the gate needs every token on this rank's channels
  e.collective(Phase::forward, CommKind::all_reduce, Axis::tensor, tensors::cm_value, c.n * D * c.a);
  e.linear(tensors::cm_wr, D, Dl);  // column split; σ(r) ⊙ value on the local slice, then gathered
  // backward: the value's gradient slices are gathered after the gate's backward (for Wv's dX)
  e.collective(Phase::backward, CommKind::all_gather, Axis::tensor, tensors::cm_value_grad, c.n * D * c.a);
  e.elementwise(OpClass::elementwise, ops::sigmoid_mul, tensors::cm_gate, c.n * Dl, 2, 1, 5);
  e.collective(Phase::forward, CommKind::all_gather, Axis::tensor, tensors::cm_out, c.n * D * c.a);
  // rs_ag: the residual keeps this rank's n/t tokens of the gathered output (a slice, free);
  // backward must turn those tokens' gradient back into all tokens of the channel slice (an
  // all-to-all, priced as the all-gather that bounds it).
  if (c.rs_ag) e.collective(Phase::backward, CommKind::all_gather, Axis::tensor, tensors::cm_out_grad, c.n * D * c.a);
  e.residual(tensors::cm_residual);
}

void rwkv4_time_mix(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, Dl = D / c.t;
  rwkv_shift_entry(e, tensors::norm1, tensors::tm_in_grad, tensors::tm_shift_halo, tensors::tm_mu_grads, tensors::tm_shift, 3);
  e.linear(tensors::tm_wr, D, Dl);
  e.linear(tensors::tm_wk, D, Dl);
  e.linear(tensors::tm_wv, D, Dl);
  // WKV with running maximum exponent: reads k, v, writes wkv; ~14 FLOPs (3 exp, max, 6 mul-add).
  const CarryBytes carry = CarryBytes::wkv(c, Dl);  // the state (a, b, p) [3,B,Dl] is what a ring hop carries
  // The forward also saves its checkpoints (state dtype), which the backward reads.
  const double ckpt_bytes = c.st * static_cast<double>(wkv4_checkpoint_elems(static_cast<std::int64_t>(c.B),
                                                                             static_cast<std::int64_t>(c.T),
                                                                             static_cast<std::int64_t>(Dl)));
  e.scan(ops::wkv4_scan, tensors::tm_wkv, c.n * Dl, 2, 1, 14, carry.ring_forward, carry, 4, 2, true, ckpt_bytes);
  e.elementwise(OpClass::elementwise, ops::sigmoid_mul, tensors::tm_gated, c.n * Dl, 2, 1, 5);
  e.linear(tensors::tm_wo, Dl, D);
  e.tensor_allreduce_fwd(tensors::tm_out);
  e.residual(tensors::tm_residual);
}

void rwkv6_time_mix(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width, Dl = D / c.t, N = c.m.head_size, Hl = Dl / N;
  const double r = c.m.lora_rank_mix, rw = c.m.lora_rank_decay;
  e.layernorm(tensors::norm1);
  e.tensor_allreduce_bwd(tensors::tm_in_grad);
  e.halo(tensors::tm_shift_halo, 1, D);
  // Whole on every tensor rank but fed only this rank's columns of gradient: μ_x [D], μ_□ [5, D],
  // the shared LoRA A [D, 5r] and B [5, r, D] and the decay LoRA A [D, rw] — every path from them
  // to the loss runs through a column-split linear (r, k, v, g: D → D/t; decay_b: rw → D/t).
  e.collective(Phase::backward, CommKind::all_reduce, Axis::tensor, tensors::tm_mu_grads, (6 + 10 * r + rw) * D * c.g);
  e.elementwise(OpClass::elementwise, ops::token_shift, tensors::tm_shift, c.n * D, 2, 2, 3);  // xx, x + xx·μ_x
  e.linear(tensors::tm_lora_a, D, 5 * r);                                                   // replicated
  e.elementwise(OpClass::elementwise, ops::tanh, tensors::tm_lora_act, c.n * 5 * r, 1, 1, 6);
  e.linear(tensors::tm_lora_b, r, D, 5);  // five rank-r maps, stored [5, r, D]
  // x_□ = x + xx·(μ_□ + m_□) for the five targets: reads x, xx and the five m_□, writes five
  // (kernels/rwkv_ops.cpp ddlerp_mix_forward), 3 FLOPs per output
  e.elementwise(OpClass::elementwise, ops::ddlerp, tensors::tm_mix, c.n * D, 7, 5, 15);
  e.linear(tensors::tm_decay_a, D, rw);
  e.elementwise(OpClass::elementwise, ops::tanh, tensors::tm_decay_act, c.n * rw, 1, 1, 6);
  e.linear(tensors::tm_decay_b, rw, Dl);
  e.elementwise(OpClass::elementwise, ops::exp_exp, tensors::tm_decay, c.n * Dl, 1, 1, 4);      // w = exp(−exp(d))
  for (const char* w : {tensors::tm_wr, tensors::tm_wk, tensors::tm_wv, tensors::tm_wg}) e.linear(w, D, Dl);
  // Matrix-state WKV per head: 6·N² FLOPs per token per head (Finch App. E counts 6·D·N per
  // token forward): decay S, kᵀv outer product, accumulate, r·S, bonus term.
  const double elems = c.n * Dl;
  const double state = c.B * Hl * N * N * c.st;
  if (c.p.scan == ScanAlgo::chunked) {  // chunked form: inter/intra-chunk products on the matrix unit
    Step f = e.base(Phase::forward, OpClass::gemm, ops::wkv6_chunked, tensors::tm_wkv);
    const double C = 64;
    f.matmul_flops = (4 * N + 4 * C) * elems;
    f.vector_flops = 4 * elems;
    f.bytes_read = 4 * elems * c.a; f.bytes_written = elems * c.a; f.saved_bytes = f.bytes_written;
    f.m = static_cast<std::int64_t>(C); f.n = static_cast<std::int64_t>(N); f.k = static_cast<std::int64_t>(N);
    e.fwd.push_back(f);
    Step b = f; b.phase = Phase::backward; b.saved_bytes = 0;
    b.matmul_flops *= 2; b.vector_flops *= 2; b.bytes_read = 6 * elems * c.a; b.bytes_written = 4 * elems * c.a;
    e.bwd.push_back(b);
    e.sequence_carry(tensors::tm_wkv, CarryBytes::wkv(c, Dl), elems, &f, &b);
  } else {
    e.scan(ops::wkv6_scan, tensors::tm_wkv, elems, 4, 1, 6 * N, state, CarryBytes::wkv(c, Dl), 5, 4, true);
  }
  e.elementwise(OpClass::norm, ops::groupnorm, tensors::tm_gn, elems, 1, 1, 8);
  e.elementwise(OpClass::elementwise, ops::silu_mul, tensors::tm_gated, elems, 2, 1, 6);
  e.linear(tensors::tm_wo, Dl, D);
  e.tensor_allreduce_fwd(tensors::tm_out);
  e.residual(tensors::tm_residual);
}

void lower_layer(const Ctx& c, std::int32_t layer, std::vector<Step>& fwd, std::vector<Step>& bwd) {
  Emit e{c, layer, fwd, bwd};
  if (c.m.family == Family::transformer) {
    transformer_attention(e, temporal_kind(c.m, layer) == Temporal::local_attention);
    transformer_mlp(e);
    return;
  }
  switch (temporal_kind(c.m, layer)) {
    case Temporal::recurrent: recurrent_block(e); break;
    case Temporal::local_attention: attention_block(e, true); break;
    case Temporal::global_attention: attention_block(e, false); break;
    case Temporal::rwkv4_time_mix: rwkv4_time_mix(e); break;
    case Temporal::rwkv6_time_mix: rwkv6_time_mix(e); break;
  }
  if (c.m.is_rwkv()) channel_mix(e); else gated_mlp(e);
}

// Embedding lookup (vocab-parallel over tensor: each rank holds V/t rows, partial sums all-reduced).
void embedding(Emit& e) {
  const Ctx& c = e.c;
  const double D = c.m.width;
  // Work as well as bytes: the lookup scales every element it copies (by sqrt(D) or 1), the
  // scatter-add multiplies and adds every element into the table's gradient rows — one row at a
  // time, repeated tokens hitting the same row, a rate far from a streaming kernel's that only an
  // efficiency on this work can price (efficiency.ops.embedding). Bytes alone priced the step at
  // the in-cache bandwidth, a third of the runner's time.
  Step f = e.base(Phase::forward, OpClass::embedding, ops::embedding, tensors::embed_table);
  f.vector_flops = c.n * D;
  f.bytes_read = c.n * D * c.w + c.n * 4;
  f.bytes_written = c.n * D * c.a;
  e.fwd.push_back(f);
  Step b = e.base(Phase::backward, OpClass::embedding, ops::embedding, tensors::embed_table);  // scatter-add
  b.vector_flops = 2 * c.n * D;
  b.bytes_read = c.n * D * c.a + c.n * D * c.g;
  b.bytes_written = c.n * D * c.g;
  e.bwd.push_back(b);
  e.tensor_allreduce_fwd(tensors::embed_out);
  if (c.m.max_positions > 0) {  // learned positions: a replicated table, added to this rank's tokens
    e.elementwise(OpClass::embedding, ops::add_positions, tensors::embed_positions, e.seq_elems(), 2, 1, 1, false);
  }
  if (c.m.family == Family::transformer) e.dropout(tensors::embed_dropout, e.seq_elems());
  if (c.m.is_rwkv()) e.layernorm(tensors::embed_norm);
}

// A trainer's train metric (Plan::logit_metrics): one more cross-entropy over this rank's
// `logits`, without gradient and unfused. Composer computes its model's train metrics after every
// micro-batch's backward (composer/trainer/trainer.py, _train_microbatch -> _eval_train_metrics,
// under the run's precision context); each of an MPT model's two (LanguageCrossEntropy,
// LanguagePerplexity: composer/metrics/nlp.py) is a torch.nn.CrossEntropyLoss over the logits.
// Under autocast cross_entropy runs in fp32 (PyTorch AMP docs, "CUDA Ops that can autocast to
// float32"): a 2-byte logit is first copied to fp32 (read 2, write 4 B), then log_softmax reads
// the fp32 copy and writes fp32 log-probabilities (read 4, write 4 B); nll_loss gathers one per
// token. fp32 logits skip the copy. Each tensor is counted read once and written once.
void logit_metric(Emit& e, double logits) {
  const double cast = e.c.a < 4 ? 1 : 0;  // the fp32 copy of narrower logits
  Step s = e.base(Phase::forward, OpClass::elementwise, ops::metric_xent, tensors::loss);
  s.vector_flops = 6 * logits;  // as the loss: max, subtract, exp, sum, log, gather
  s.bytes_read = logits * (cast * e.c.a + 4);
  s.bytes_written = logits * (cast * 4 + 4);
  s.calls = 2 + cast;  // (the copy,) log_softmax, nll_loss
  e.fwd.push_back(s);
}

// Final norm, logits (vocab-parallel column split) and softmax cross-entropy; `metrics` train
// metrics over the logits (training only) before the loss normalises them in place.
void head(Emit& e, std::int64_t metrics = 0) {
  const Ctx& c = e.c;
  const double D = c.m.width;
  const double Vl = std::ceil(static_cast<double>(c.m.vocab) / static_cast<double>(c.t));  // padded
  if (c.m.family == Family::transformer) e.norm(tensors::final_norm);
  else if (c.m.is_rwkv()) e.layernorm(tensors::final_norm); else e.rmsnorm(tensors::final_norm);
  e.tensor_allreduce_bwd(tensors::head_in_grad);
  e.linear(c.m.tied_embeddings ? tensors::embed_table : tensors::head_w, D, Vl);
  e.fwd.back().op = ops::logits;
  // the logits step also takes each token's (max, Σ exp) over this rank's columns (the stats
  // the cross-entropy merges across tensor ranks): max, subtract, exp, add per logit
  e.fwd.back().vector_flops = 4 * c.n * Vl;
  // vocab-parallel cross-entropy: each rank's (max, Σ exp) per token merged across tensor ranks
  // (the logits step computes them), then the softmax and loss are finished locally
  e.collective(Phase::forward, CommKind::all_reduce, Axis::tensor, tensors::loss_stats, 2 * c.n * 4);
  for (std::int64_t i = 0; i < metrics; ++i) logit_metric(e, c.n * Vl);
  e.elementwise(OpClass::elementwise, ops::softmax_xent, tensors::loss, c.n * Vl, 1, 0, 6, false);
}

Ctx make_ctx(const ModelSpec& m, const Plan& p, std::int64_t s_coord) {
  Ctx c{m, p};
  c.t = p.mesh[Axis::tensor];
  c.sp = p.mesh[Axis::sequence];
  c.s_coord = s_coord;
  c.B = static_cast<double>(p.micro_batch);
  c.T = static_cast<double>(p.local_tokens());
  c.n = c.B * c.T;
  c.a = bytes_of(p.act_dtype);
  c.w = bytes_of(p.param_dtype);
  c.g = 4;
  const GradAccumulationBytes acc = grad_accumulation_bytes(p);
  c.dw = acc.dw_written;
  c.dw_c = acc.dw_c_read;
  c.st = bytes_of(p.state_dtype);
  c.rs_ag = p.tensor_comm == TensorComm::rs_ag && c.t > 1;
  c.tp_seq = c.rs_ag ? static_cast<double>(c.t) : 1.0;
  return c;
}

// Copies of the forward steps a remat policy recomputes before a layer's backward.
void add_recompute(Remat policy, const std::vector<Step>& fwd, std::vector<Step>& out) {
  if (policy == Remat::none) return;
  for (Step s : fwd) {
    if (s.kind == StepKind::p2p) continue;  // halos are kept
    const bool elementwise_like = s.cls == OpClass::elementwise || s.cls == OpClass::norm || s.cls == OpClass::scan;
    if (policy == Remat::elementwise && (!elementwise_like || s.kind != StepKind::compute)) continue;
    if (policy == Remat::selective && (s.cls != OpClass::attention || s.kind != StepKind::compute)) continue;
    s.phase = Phase::recompute;
    s.saved_bytes = 0;
    out.push_back(s);
  }
}

// Activation bytes a layer keeps for backward: the layer input (n/t tokens under rs_ag) plus
// what its steps keep under the policy. selective keeps the attention core's output (the next
// linear's input) but none of its internals (the softmax statistics, a materialized T×T square).
double saved_under(Remat policy, const std::vector<Step>& fwd, const Ctx& c) {
  const double input = c.n * c.m.width * c.a / c.tp_seq;
  if (policy == Remat::block) return input;  // the layer input only
  double s = 0;
  for (const auto& st : fwd) {
    if (policy == Remat::none) s += st.saved_bytes;
    else if (policy == Remat::elementwise) s += st.cls == OpClass::gemm || st.cls == OpClass::attention ? st.saved_bytes : 0;
    else if (st.cls != OpClass::attention) s += st.saved_bytes;
    else if (std::string_view(st.op) != ops::attention_scores) s += std::min(st.saved_bytes, st.bytes_written);
  }
  return s + input;
}

// Parameters of one layer on a tensor-parallel rank (the split rule: param_layout.hpp).
std::int64_t sharded_params(const ModelSpec& m, const std::vector<ParamTensor>& tensors, std::int64_t t) {
  std::int64_t n = 0;
  for (const auto& p : tensors) n += tensor_split_dim(m, p, t) < 0 ? p.count() : p.count() / t;
  return n;
}

}  // namespace

namespace {

// One step's useful FLOPs: forward products of every layer and the head for the global batch,
// ×3 for forward + backward, no recompute, exact causal keys.
double model_flops_per_step(const ModelSpec& m, const Plan& p) {
  Plan whole = p;
  whole.mesh = Mesh{};
  whole.micro_batch = 1;
  const Ctx u = make_ctx(m, whole, 0);
  double fwd_flops = 0;
  std::array<double, 5> per_kind{};
  std::array<bool, 5> known{};
  for (std::int64_t l = 0; l < m.depth; ++l) {
    const int k = static_cast<int>(temporal_kind(m, l));
    if (!known[k]) {
      std::vector<Step> f, b;
      lower_layer(u, static_cast<std::int32_t>(l), f, b);
      for (const auto& s : f) per_kind[k] += s.matmul_flops;
      known[k] = true;
    }
    fwd_flops += per_kind[k];
  }
  std::vector<Step> f, b;
  Emit e{u, -1, f, b};
  head(e);
  for (const auto& s : f) fwd_flops += s.matmul_flops;
  return 3 * fwd_flops * static_cast<double>(p.global_batch);
}

// Everything a layer's lowering depends on besides the model and its kind.
std::array<double, 19> layer_key(const Plan& p, std::int64_t s_coord, Temporal kind) {
  const bool sharded = zero_sharded_gradients(p);  // ZeRO-2/3: the gradient reduce-scatter (and ZeRO-3's gathers)
  return {static_cast<double>(kind), static_cast<double>(p.mesh[Axis::tensor]), static_cast<double>(p.mesh[Axis::sequence]),
          static_cast<double>(s_coord), static_cast<double>(p.micro_batch), static_cast<double>(p.seq_len),
          static_cast<double>(p.remat), static_cast<double>(p.scan), static_cast<double>(p.carry),
          static_cast<double>(p.act_dtype), static_cast<double>(p.param_dtype), static_cast<double>(p.state_dtype),
          static_cast<double>(sharded ? p.mesh[Axis::fsdp] : 1), static_cast<double>(sharded ? p.zero_stage : 0),
          sharded ? p.grad_bytes() : 0.0, static_cast<double>(p.tensor_comm), static_cast<double>(p.attention),
          p.async_tensor_comm ? 1.0 : 0.0, static_cast<double>(p.grad_accumulation)};
}

// ZeRO-2/3 (zero_sharded_gradients): the reduce-scatter over fsdp of one block's gradient —
// `params` parameters on this rank, in the plan's gradient dtype — at the end of the block's
// backward, every micro-batch; each rank adds its 1/fsdp part to its shard of the accumulator.
// Overlappable always, as ZeRO-3's gathers: PyTorch FSDP and DeepSpeed run the bucket's
// reduce-scatter on a communication stream while the backward goes on to the next layer, so it
// hides behind the pass's backward compute and what the compute cannot cover is exposed (sim/
// Pass::finish). The plan's `overlap` is the step end's switch (whether the remaining gradient
// sync hides behind the last backward pass); overlap: false does not serialise these — a layer
// lowering stays the same for both (the planner prices the two from one lowering).
Step grads_reduce_scatter(const Ctx& c, const char* name, std::int32_t layer, double params) {
  Step s;
  s.kind = StepKind::collective; s.phase = Phase::backward; s.cls = OpClass::comm; s.comm = CommKind::reduce_scatter;
  s.axis = Axis::fsdp; s.op = ops::reduce_scatter; s.name = name; s.layer = layer;
  s.comm_bytes = params * c.p.grad_bytes();
  s.overlappable = true;
  return s;
}

std::shared_ptr<const LayerLowering> lower_layer_kind(const ModelSpec& m, const Plan& p, const Ctx& c, std::int64_t layer,
                                                      LowerCache* cache) {
  auto k = std::make_shared<LayerLowering>();
  std::vector<Step> fwd, bwd;
  fwd.reserve(32);
  bwd.reserve(48);
  Emit e{c, static_cast<std::int32_t>(layer), fwd, bwd};
  std::int64_t params = -1;  // the same for every layer of a kind (as the lowering is)
  if (cache) {
    auto [it, fresh] = cache->layer_params.try_emplace({static_cast<int>(temporal_kind(m, layer)), c.t}, -1);
    if (fresh) it->second = sharded_params(m, layer_parameter_tensors(m, layer), c.t);
    params = it->second;
  } else {
    params = sharded_params(m, layer_parameter_tensors(m, layer), c.t);
  }
  if (zero_stage_during_step(p) == 3) {  // ZeRO-3: gather the layer's weights before use
    // prefetched behind the previous layer's compute, as FSDP implementations do
    e.collective(Phase::forward, CommKind::all_gather, Axis::fsdp, tensors::params, static_cast<double>(params) * c.w, true);
    e.collective(Phase::backward, CommKind::all_gather, Axis::fsdp, tensors::params, static_cast<double>(params) * c.w, true);
  }
  lower_layer(c, static_cast<std::int32_t>(layer), fwd, bwd);
  k->saved_bytes = saved_under(p.remat, fwd, c);
  if (!bwd.empty() && bwd.front().comm == CommKind::all_gather && std::string_view(bwd.front().name) == tensors::params) {
    k->backward.push_back(bwd.front());  // the ZeRO-3 gather comes before recompute and backward
    bwd.erase(bwd.begin());
  }
  k->backward.reserve(k->backward.size() + fwd.size() + bwd.size() + 1);
  {  // the layer's backward accumulates (+=) into its activation-gradient buffers, cleared first:
     // one per activation it keeps without recompute (they exist whatever is kept; griffin-tiny:
     // 5.8 MB priced per layer, 4.2 MB in the executor), one store per float. The buffers are
     // untouched since the previous step's backward: a cold clear (efficiency.ops.zero).
    Step clear = e.base(Phase::backward, OpClass::elementwise, ops::zero, tensors::grad_buffers);
    clear.bytes_written = saved_under(Remat::none, fwd, c);
    clear.vector_flops = clear.bytes_written / c.a;  // elements: one store each
    k->backward.push_back(clear);
  }
  add_recompute(p.remat, fwd, k->backward);
  k->backward.insert(k->backward.end(), bwd.rbegin(), bwd.rend());
  if (zero_sharded_gradients(p))
    k->backward.push_back(grads_reduce_scatter(c, tensors::grads, static_cast<std::int32_t>(layer), static_cast<double>(params)));
  k->forward = std::move(fwd);
  k->params = params;
  k->tensors = static_cast<std::int64_t>(layer_parameter_tensors(m, layer).size());
  return k;
}

}  // namespace

std::vector<PipelinePass> pipeline_schedule(Schedule kind, std::int64_t m, std::int64_t pp, std::int64_t v, std::int64_t stage) {
  std::vector<PipelinePass> fwd, order;  // forward passes in the order they run; the backward ones mirror it
  if (v <= 1) {
    for (std::int64_t i = 0; i < m; ++i) fwd.push_back({true, i, 0});
  } else {  // Megatron-LM's schedule table: groups of pp micro-batches, each group chunk by chunk
    for (std::int64_t g = 0; g < m; g += pp) {
      const std::int64_t group_end = g + pp >= m ? m : g + pp;  // the last group takes what is left
      for (std::int64_t j = 0; j < v; ++j)
        for (std::int64_t i = g; i < group_end; ++i) fwd.push_back({true, i, j});
    }
  }
  auto bwd = [&](std::size_t k) { return PipelinePass{false, fwd[k].micro, v - 1 - fwd[k].chunk}; };
  const auto total = fwd.size();
  const std::int64_t warm_passes = kind == Schedule::gpipe ? m * v : v <= 1 ? pp - stage - 1 : (pp - stage - 1) * 2 + (v - 1) * pp;
  const auto warm = std::min<std::size_t>(total, static_cast<std::size_t>(std::max<std::int64_t>(0, warm_passes)));
  std::size_t f = 0, b = 0;
  for (; f < warm; ++f) order.push_back(fwd[f]);
  for (; f < total; ++f, ++b) { order.push_back(fwd[f]); order.push_back(bwd(b)); }
  for (; b < total; ++b) order.push_back(bwd(b));
  return order;
}

std::int64_t live_micro_batches(const std::vector<PipelinePass>& order) {
  std::map<std::int64_t, std::int64_t> passes;  // micro-batch -> passes run so far
  std::int64_t chunks = 0, live = 0, most = 0;
  for (const auto& q : order) chunks = std::max(chunks, q.chunk + 1);
  for (const auto& q : order) {
    const std::int64_t n = ++passes[q.micro];
    if (n == 1) most = std::max(most, ++live);
    if (n == 2 * chunks) --live;
  }
  return most;
}

double peak_held_bytes(const std::vector<PipelinePass>& order, const std::vector<double>& chunk_bytes) {
  double held = 0, most = 0;
  for (const auto& q : order) {
    const double b = chunk_bytes.at(static_cast<std::size_t>(q.chunk));
    held += q.forward ? b : -b;
    most = std::max(most, held);
  }
  return most;
}

double in_flight_micro_batches(const Plan& p, std::int64_t stage) {
  const std::int64_t m = p.micro_batches(), pp = p.mesh[Axis::pipeline], v = p.virtual_stages;
  if (p.schedule == Schedule::gpipe) return static_cast<double>(m);
  if (v <= 1 || pp <= 1) return static_cast<double>(std::min(m, pp - stage));
  const std::int64_t chunk_passes = std::min(m * v, (pp - stage - 1) * 2 + (v - 1) * pp + 1);
  return static_cast<double>(chunk_passes) / static_cast<double>(v);
}

namespace {
// Parameters whose gradient a tensor rank forms from its own tokens under rs_ag (token_partial_grad):
// of one layer of a kind (kind ≥ 0: a Temporal), of the embedding (−1) or of the final norm and
// head (−2). Layers of one kind have the same tensors.
std::int64_t token_partial_params(const ModelSpec& m, int kind, std::int64_t t, LowerCache* cache) {
  auto count = [&] {
    std::int64_t n = 0;
    if (kind >= 0) {
      for (std::int64_t l = 0; l < m.depth; ++l)
        if (static_cast<int>(temporal_kind(m, l)) == kind) {
          for (const auto& p : layer_parameter_tensors(m, l))
            if (token_partial_grad(m, p, t)) n += p.count();
          break;
        }
      return n;
    }
    for (const auto& p : parameter_tensors(m))
      if ((kind == -1 ? p.block == "embed" : p.block == "final" || p.block == "head") && token_partial_grad(m, p, t)) n += p.count();
    return n;
  };
  if (!cache) return count();
  auto [it, fresh] = cache->token_partial.try_emplace({kind, t}, 0);
  if (fresh) it->second = count();
  return it->second;
}
}  // namespace

int zero_stage_during_step(const Plan& p) {
  if (p.mesh[Axis::fsdp] <= 1) return 0;
  return p.gradient_sync == GradientSync::last_microbatch ? std::min(p.zero_stage, 1) : p.zero_stage;
}

bool zero_sharded_gradients(const Plan& p) { return zero_stage_during_step(p) >= 2; }

GradAccumulationBytes grad_accumulation_bytes(const Plan& p) {
  GradAccumulationBytes b;
  const bool sharded = zero_sharded_gradients(p);
  if (p.grad_accumulation == GradAccumulation::separate) {  // the runner: fp32 buffer, added and cleared
    b.acc = p.grad_dtype == GradDType::fp64 ? 8 : 4;
    b.handed = 4;
    b.add_read = b.add_written = b.handed + b.acc;
    b.clear_local = b.acc;
    b.clear_acc = sharded ? 4 : 0;  // ZeRO-2/3: the owned part of the gradient buffer, which the last update left
    b.dw_written = 4;
    return b;
  }
  const bool autograd = p.grad_accumulation == GradAccumulation::autograd, fused = p.grad_accumulation == GradAccumulation::fused;
  b.handed = sharded ? p.grad_bytes() : bytes_of(p.param_dtype);
  b.acc = sharded ? std::max(4.0, p.grad_bytes()) : p.grad_bytes();
  b.add_read = b.handed + b.acc;
  b.add_written = b.acc;
  b.first_kept = autograd;
  b.clear_local = 0;
  b.clear_acc = autograd ? 0 : b.acc;  // main_grad zeroed once per step; autograd's .grad set to None
  b.dw_written = fused ? b.acc : bytes_of(p.param_dtype);
  b.dw_c_read = fused ? b.acc : 0;
  return b;
}

double stage_weight_grad_elems(const StageSummary& st) {
  double w = 0;
  for (const auto* l : {&st.pre_backward, &st.post_backward})
    for (const auto& s : *l) w += s.weight_grad_elems;
  for (const auto& g : st.groups)
    for (const auto& s : g.lowered->backward) w += static_cast<double>(g.count) * s.weight_grad_elems;
  return w;
}

GradAccumulateParts grad_accumulate_parts(const Plan& p, const StageSummary& st) {
  const GradAccumulationBytes b = grad_accumulation_bytes(p);
  const double params = static_cast<double>(st.local_params);
  const double acc = zero_sharded_gradients(p) ? params / static_cast<double>(p.mesh[Axis::fsdp]) : params;
  const double added = p.grad_accumulation == GradAccumulation::fused ? std::max(0.0, acc - stage_weight_grad_elems(st)) : acc;
  const double cast = b.first_kept && b.handed != b.acc ? 1.0 : 0.0;  // autograd's first gradient, widened
  GradAccumulateParts g;
  g.adds = static_cast<double>(st.micro_batches) - (b.first_kept ? 1.0 : 0.0);
  g.add_read = added * b.add_read;
  g.add_written = added * b.add_written;
  g.add_flops = added;
  g.once_read = cast * added * b.handed;
  g.once_written = cast * added * b.acc + params * b.clear_local + acc * b.clear_acc;
  g.once_flops = cast * added + (b.clear_local > 0 ? params : 0.0) + (b.clear_acc > 0 ? acc : 0.0);
  return g;
}

bool pipeline_scatter_gather(const Plan& p) {
  return p.scatter_gather && p.mesh[Axis::tensor] > 1 && p.mesh[Axis::pipeline] > 1 && p.tensor_comm == TensorComm::allreduce;
}

Range pipeline_chunk_layers(std::int64_t depth, std::int64_t chunks, std::int64_t chunk) {
  const std::int64_t per = (depth + chunks - 1) / chunks, short_by = per * chunks - depth;
  const std::int64_t front = (short_by + 1) / 2, back = short_by / 2;  // chunks one layer short at each end
  auto short_before = [&](std::int64_t c) { return std::min(c, front) + std::max<std::int64_t>(0, c - (chunks - back)); };
  return {chunk * per - short_before(chunk), (chunk + 1) * per - short_before(chunk + 1)};
}

StageSummary lower_stage(const ModelSpec& m, const Plan& p, std::int64_t stage, std::int64_t seq_coord, LowerCache* cache) {
  StageSummary st;
  const std::int64_t pp = p.mesh[Axis::pipeline];
  const std::int64_t v = pp > 1 ? std::max<std::int64_t>(1, p.virtual_stages) : 1;
  st.stage = stage;
  st.seq_coord = seq_coord;
  st.chunks = v;
  for (std::int64_t j = 0; j < v; ++j) st.chunk_layers.push_back(pipeline_chunk_layers(m.depth, pp * v, j * pp + stage));
  st.chunk_saved_bytes.assign(st.chunk_layers.size(), 0.0);
  st.first_layer = st.chunk_layers[0].begin;
  st.end_layer = st.chunk_layers[0].end;
  st.micro_batches = p.micro_batches();
  st.in_flight_micro_batches = static_cast<std::int64_t>(std::ceil(in_flight_micro_batches(p, stage)));
  const Ctx c = make_ctx(m, p, seq_coord);
  const bool first = stage == 0, last = stage == pp - 1;
  const double act_bytes = c.n * m.width * c.a / c.tp_seq;  // rs_ag: stages exchange n/t tokens
  // Megatron's scatter/gather (Plan::scatter_gather): each tensor rank sends its 1/t slice of the
  // replicated activation; the receiver all-gathers the slices over the tensor axis.
  const bool scatter = pipeline_scatter_gather(p);
  const double send_bytes = scatter ? std::ceil(c.n * static_cast<double>(m.width) / c.t) * c.a : act_bytes;

  // Layers of one temporal kind lower identically (up to the layer index): lower each kind once.
  std::int64_t params = 0, tensors = 0;
  for (std::size_t j = 0; j < st.chunk_layers.size(); ++j)
  for (std::int64_t l = st.chunk_layers[j].begin; l < st.chunk_layers[j].end; ++l) {
    const Temporal kind = temporal_kind(m, l);
    auto it = std::find_if(st.groups.begin(), st.groups.end(), [&](const LayerGroup& g) { return g.kind == kind; });
    if (it == st.groups.end()) {
      std::shared_ptr<const LayerLowering> lowered;
      if (cache) {
        auto& slot = cache->layers[layer_key(p, seq_coord, kind)];
        if (!slot) slot = lower_layer_kind(m, p, c, l, cache);
        lowered = slot;
      } else {
        lowered = lower_layer_kind(m, p, c, l, nullptr);
      }
      st.groups.push_back({kind, 0, std::move(lowered), std::vector<std::int64_t>(st.chunk_layers.size(), 0)});
      it = st.groups.end() - 1;
    }
    ++it->count;
    ++it->chunk_count[j];
    st.saved_activation_bytes += it->lowered->saved_bytes;
    st.chunk_saved_bytes[j] += it->lowered->saved_bytes;
    params += it->lowered->params;
    tensors += it->lowered->tensors;
  }

  const bool zero3 = zero_stage_during_step(p) == 3, sharded = zero_sharded_gradients(p);
  // ZeRO-3 gathers the embedding (and tied head) and the final norm / untied head before use too
  // (the learned position table is replicated; LayerNorms have a scale and a bias)
  const std::int64_t embed_params = m.vocab * m.width / c.t + (m.is_rwkv() ? 2 * m.width : 0) + m.max_positions * m.width;
  const std::int64_t head_params = (m.norm == NormKind::layernorm ? 2 : 1) * m.width + (m.tied_embeddings && first ? 0 : m.vocab * m.width / c.t);
  // Per chunk j of the stage: before its layers the embedding (the model's first chunk) or the
  // receive of its input (from the previous stage; stage 0's later chunks from stage pp − 1), whose
  // gradient goes back at the chunk's backward end; after them the head and loss (the model's
  // last chunk) or the send of its output, whose gradient the chunk's backward starts by
  // receiving. Each transfer is one hop.
  auto mark = [&st] {
    st.chunk_at.pre_forward.push_back(st.pre_forward.size());
    st.chunk_at.pre_backward.push_back(st.pre_backward.size());
    st.chunk_at.post_forward.push_back(st.post_forward.size());
    st.chunk_at.post_backward.push_back(st.post_backward.size());
  };
  for (std::int64_t j = 0; j < v; ++j) {
    mark();
    if (first && j == 0) {
      std::vector<Step> bwd;
      Emit e{c, -1, st.pre_forward, bwd};
      if (zero3) e.collective(Phase::forward, CommKind::all_gather, Axis::fsdp, tensors::embed_params, static_cast<double>(embed_params) * c.w, true);
      embedding(e);
      st.pre_backward.insert(st.pre_backward.end(), bwd.rbegin(), bwd.rend());
      if (sharded) st.pre_backward.push_back(grads_reduce_scatter(c, tensors::embed_grads, -1, static_cast<double>(embed_params)));
    } else {
      Emit e{c, -1, st.pre_forward, st.pre_backward};
      e.p2p(Phase::forward, Axis::pipeline, tensors::pipeline_recv_activations, send_bytes, 1);
      if (scatter) e.collective(Phase::forward, CommKind::all_gather, Axis::tensor, tensors::pipeline_activations, act_bytes);
      e.p2p(Phase::backward, Axis::pipeline, tensors::pipeline_send_gradients, send_bytes, 1);
    }
    if (last && j == v - 1) {
      std::vector<Step> bwd;
      Emit e{c, -1, st.post_forward, bwd};
      if (zero3) e.collective(Phase::forward, CommKind::all_gather, Axis::fsdp, tensors::head_params, static_cast<double>(head_params) * c.w, true);
      head(e, p.logit_metrics);
      st.post_backward.insert(st.post_backward.end(), bwd.rbegin(), bwd.rend());
      if (sharded) st.post_backward.push_back(grads_reduce_scatter(c, tensors::head_grads, -1, static_cast<double>(head_params)));
      const double logits = c.n * (std::ceil(static_cast<double>(m.vocab) / static_cast<double>(c.t))) * 4;
      st.saved_activation_bytes += logits;
      st.chunk_saved_bytes[static_cast<std::size_t>(j)] += logits;
    } else {
      Emit e{c, -1, st.post_forward, st.post_backward};
      e.p2p(Phase::forward, Axis::pipeline, tensors::pipeline_send_activations, send_bytes, 1);
      e.p2p(Phase::backward, Axis::pipeline, tensors::pipeline_recv_gradients, send_bytes, 1);
      if (scatter) e.collective(Phase::backward, CommKind::all_gather, Axis::tensor, tensors::pipeline_gradients, act_bytes);
    }
  }
  mark();

  // Parameters outside the layers: embedding on the first stage, final norm and head on the last.
  if (first) params += embed_params;
  if (last) params += head_params;
  // their tensors: the table (+ RWKV's embedding LayerNorm, a learned position table); the final
  // norm (LayerNorm: scale and bias) and an untied head
  if (first) tensors += 1 + (m.is_rwkv() ? 2 : 0) + (m.max_positions > 0 ? 1 : 0);
  if (last) tensors += (m.norm == NormKind::layernorm ? 2 : 1) + (m.tied_embeddings && first ? 0 : 1);
  st.local_params = params;
  const double param_tensors = static_cast<double>(tensors);

  // Once per step: gradient reduction over the replicas (ZeRO-2/3: what the per-block
  // reduce-scatters left, the shard's reduction over data and sequence), optimizer, parameter
  // gather (ZeRO-1/2). Under `gradient_sync: last_microbatch` ZeRO-2/3 are ZeRO-1 here
  // (zero_stage_during_step): the whole local gradient, accumulated over the micro-batches, is
  // reduce-scattered once, hidden behind the last backward pass when `overlap` says so, and the
  // updated parameters gathered once (ZeRO-3: FSDP gathers each block in the next step's first
  // forward and keeps it through the step; the same bytes once per step, priced here like ZeRO-1/2's).
  {
    std::vector<Step> none;
    Emit e{c, -1, st.step_end, none};
    const double grad_bytes = static_cast<double>(params) * p.grad_bytes();
    const double fs = static_cast<double>(p.mesh[Axis::fsdp]);
    const int zero = zero_stage_during_step(p);
    if (m.tied_embeddings && pp > 1 && (first || last))  // keep the tied embedding and head equal
      e.collective(Phase::forward, CommKind::all_reduce, Axis::pipeline, tensors::tied_embedding_grads, m.vocab * m.width / c.t * p.grad_bytes());
    // Sequence shards saw different tokens of the same sequences: their gradients add up like the
    // replicas' (after the ZeRO reduce-scatter, only each rank's part travels).
    if (zero == 0) {
      e.collective(Phase::forward, CommKind::all_reduce, Axis::fsdp, tensors::grads, grad_bytes, p.overlap);
      e.collective(Phase::forward, CommKind::all_reduce, Axis::sequence, tensors::grads, grad_bytes, p.overlap);
      e.collective(Phase::forward, CommKind::all_reduce, Axis::data, tensors::grads, grad_bytes, p.overlap);
    } else {
      // ZeRO-1 keeps the whole local gradient and reduce-scatters it here (DeepSpeed ZeRO-1);
      // ZeRO-2/3 did in every micro-batch's backward (grads_reduce_scatter)
      if (!sharded) e.collective(Phase::forward, CommKind::reduce_scatter, Axis::fsdp, tensors::grads, grad_bytes, p.overlap);
      e.collective(Phase::forward, CommKind::all_reduce, Axis::sequence, tensors::grads, grad_bytes / fs, p.overlap);
      e.collective(Phase::forward, CommKind::all_reduce, Axis::data, tensors::grads, grad_bytes / fs, p.overlap);
    }
    if (c.rs_ag) {  // norms, post-reduction biases, positions: each rank's gradient covers its tokens only
      double partial = 0;
      if (first) partial += static_cast<double>(token_partial_params(m, -1, c.t, cache));
      if (last) partial += static_cast<double>(token_partial_params(m, -2, c.t, cache));
      for (const auto& g : st.groups)
        partial += static_cast<double>(g.count) * static_cast<double>(token_partial_params(m, static_cast<int>(g.kind), c.t, cache));
      e.collective(Phase::forward, CommKind::all_reduce, Axis::tensor, tensors::tp_replicated_grads, partial * p.grad_bytes() / (zero >= 1 ? fs : 1.0));
    }
    // Each micro-batch's gradients are added into the step's accumulator, as the plan's
    // grad_accumulation says (grad_accumulate_parts; under `fused` the weight-gradient GEMMs add
    // into it themselves, their C read priced with the GEMM, and only the other parameters are
    // added here).
    const GradAccumulateParts ga = grad_accumulate_parts(p, st);
    Step accum = e.base(Phase::backward, OpClass::elementwise, ops::grad_accumulate, tensors::grads);
    accum.vector_flops = ga.adds * ga.add_flops + ga.once_flops;
    accum.bytes_read = ga.adds * ga.add_read + ga.once_read;
    accum.bytes_written = ga.adds * ga.add_written + ga.once_written;
    st.step_end.insert(st.step_end.begin(), accum);
    const double shard = static_cast<double>(params) / (zero >= 1 ? fs : 1.0);
    Step opt = e.base(Phase::optimizer, OpClass::optimizer, ops::adamw, tensors::params);
    // AdamW on fp32 master weights: read w, g, m, v; write w, m, v (+ a bf16 copy when mixed).
    opt.vector_flops = 14 * shard;
    opt.bytes_read = 16 * shard;
    opt.bytes_written = (12 + (p.param_dtype == DType::bf16 ? 2 : 0)) * shard;
    // the runner takes each tensor's Σ g² and updates it with a call of its own: two calls per
    // tensor (gpt-tiny: 68 tensors of ~3 000 parameters on average; the calls cost as much as the
    // streaming)
    opt.calls = 2 * param_tensors / (zero >= 1 ? fs : 1.0);
    st.step_end.push_back(opt);
    if (zero == 1 || zero == 2)
      e.collective(Phase::forward, CommKind::all_gather, Axis::fsdp, tensors::params, static_cast<double>(params) * c.w);
    for (auto& s : st.step_end) if (s.kind != StepKind::compute) s.phase = Phase::optimizer;
  }
  // Before the update every rank learns the step's mean loss (and whether any rank lost its data or
  // was asked to stop): 3 doubles summed over the whole mesh, one axis after another (the runner
  // makes the same calls). It is the step's first meeting after the last backward pass, so the
  // ranks wait there for the slowest (sim: sync_wait; reports/compare.cpp puts that wait here).
  {
    std::vector<Step> metrics, none;
    Emit e{c, -1, metrics, none};
    for (Axis a : {Axis::tensor, Axis::sequence, Axis::fsdp, Axis::data, Axis::pipeline})
      e.collective(Phase::forward, CommKind::all_reduce, a, tensors::step_metrics, 3 * 8);
    for (auto& s : metrics) s.phase = Phase::optimizer;
    st.step_end.insert(st.step_end.begin() + 1, metrics.begin(), metrics.end());  // after the accumulation
  }

  // Memory: the largest scan state and communication buffer (StageSummary::max_comm_bytes).
  auto in_place = [](const Step& s) {  // the step end's parameter gather fills the whole copy in place
    return s.comm == CommKind::all_gather && std::string_view(s.name) == tensors::params && s.phase == Phase::optimizer;
  };
  auto extremes = [&](const std::vector<Step>& steps) {
    for (const auto& s : steps) {
      st.max_state_bytes = std::max(st.max_state_bytes, s.state_bytes);
      if (s.kind == StepKind::compute || in_place(s)) continue;
      st.max_comm_bytes = std::max(st.max_comm_bytes, s.comm_bytes);
      if (s.axis == Axis::fsdp) st.zero_comm_bytes = std::max(st.zero_comm_bytes, s.comm_bytes);
    }
  };
  for (const auto* l : {&st.pre_forward, &st.post_forward, &st.pre_backward, &st.post_backward}) extremes(*l);
  for (const auto& s : st.step_end) {
    st.max_state_bytes = std::max(st.max_state_bytes, s.state_bytes);
    if (s.kind != StepKind::compute && !in_place(s)) st.step_end_comm_bytes = std::max(st.step_end_comm_bytes, s.comm_bytes);
  }
  for (const auto& g : st.groups) {
    extremes(g.lowered->forward);
    extremes(g.lowered->backward);
    double layer = 0;  // ZeRO-3: the layer's gathered parameters beside its gradient (both fsdp steps of its backward)
    for (const auto& s : g.lowered->backward)
      if (zero3 && s.kind == StepKind::collective && s.axis == Axis::fsdp) layer += s.comm_bytes;
    st.max_comm_bytes = std::max(st.max_comm_bytes, layer);
    st.zero_comm_bytes = std::max(st.zero_comm_bytes, layer);
  }
  st.tokens_per_step = static_cast<double>(p.global_batch) * static_cast<double>(p.seq_len);
  if (cache) {
    if (cache->model_flops_seq_len != p.seq_len || cache->model_flops_batch != p.global_batch) {
      cache->model_flops = model_flops_per_step(m, p);
      cache->model_flops_seq_len = p.seq_len;
      cache->model_flops_batch = p.global_batch;
    }
    st.model_flops_per_step = cache->model_flops;
  } else {
    st.model_flops_per_step = model_flops_per_step(m, p);
  }
  return st;
}

StepProgram expand(const StageSummary& st, const ModelSpec& m) {
  StepProgram prog;
  prog.first_layer = st.first_layer;
  prog.end_layer = st.end_layer;
  prog.micro_batches = st.micro_batches;
  prog.in_flight_micro_batches = st.in_flight_micro_batches;
  prog.local_params = st.local_params;
  prog.saved_activation_bytes = st.saved_activation_bytes;
  prog.tokens_per_step = st.tokens_per_step;
  prog.model_flops_per_step = st.model_flops_per_step;
  auto group = [&](std::int64_t l) -> const LayerLowering& {
    const Temporal kind = temporal_kind(m, l);
    for (const auto& g : st.groups) if (g.kind == kind) return *g.lowered;
    throw std::logic_error("expand: layer kind missing from the stage summary");
  };
  auto append = [](std::vector<Step>& out, const std::vector<Step>& in, std::int64_t l) {
    const auto first = out.size();
    out.insert(out.end(), in.begin(), in.end());
    for (auto i = first; i < out.size(); ++i) out[i].layer = static_cast<std::int32_t>(l);
  };
  // chunk j's part of one of the summary's pre/post lists
  auto part = [](std::vector<Step>& out, const std::vector<Step>& in, const std::vector<std::size_t>& at, std::size_t j) {
    out.insert(out.end(), in.begin() + static_cast<std::ptrdiff_t>(at[j]), in.begin() + static_cast<std::ptrdiff_t>(at[j + 1]));
  };
  const auto v = st.chunk_layers.size();
  prog.chunk_layers = st.chunk_layers;
  prog.forward_chunk.resize(v);
  prog.backward_chunk.resize(v);
  for (std::size_t j = 0; j < v; ++j) {
    const auto begin = static_cast<std::int64_t>(prog.forward.size());
    part(prog.forward, st.pre_forward, st.chunk_at.pre_forward, j);
    for (std::int64_t l = st.chunk_layers[j].begin; l < st.chunk_layers[j].end; ++l) append(prog.forward, group(l).forward, l);
    part(prog.forward, st.post_forward, st.chunk_at.post_forward, j);
    prog.forward_chunk[j] = {begin, static_cast<std::int64_t>(prog.forward.size())};
  }
  for (std::size_t j = v; j-- > 0;) {
    const auto begin = static_cast<std::int64_t>(prog.backward.size());
    part(prog.backward, st.post_backward, st.chunk_at.post_backward, j);
    for (std::int64_t l = st.chunk_layers[j].end - 1; l >= st.chunk_layers[j].begin; --l) append(prog.backward, group(l).backward, l);
    part(prog.backward, st.pre_backward, st.chunk_at.pre_backward, j);
    prog.backward_chunk[j] = {begin, static_cast<std::int64_t>(prog.backward.size())};
  }
  prog.step_end = st.step_end;
  return prog;
}

std::vector<Step> forward_steps(const ModelSpec& m, const Plan& p, std::int64_t part, std::int64_t batch, std::int64_t tokens,
                                std::int64_t first_position) {
  if (batch < 1 || tokens < 1 || first_position < 0 || first_position % tokens != 0 || p.mesh[Axis::sequence] != 1)
    throw std::logic_error("forward_steps: needs batch, tokens ≥ 1, first_position a multiple of tokens, no sequence axis");
  Plan q = p;
  q.micro_batch = batch;
  q.seq_len = tokens;
  // the shard index of a sequence split into pieces of `tokens`: attention reads the keys before
  // it as its halo (kv_halo), i.e. as a cache
  const Ctx c = make_ctx(m, q, first_position / tokens);
  std::vector<Step> fwd, bwd;
  Emit e{c, static_cast<std::int32_t>(part), fwd, bwd};
  if (part == kEmbeddingPart) embedding(e);
  else if (part == kHeadPart) head(e);
  else lower_layer(c, static_cast<std::int32_t>(part), fwd, bwd);
  return fwd;
}

StepProgram lower(const ModelSpec& m, const Plan& p, std::int64_t rank) {
  check_plan(m, p, 0);
  const auto coord = rank_coords(p.mesh, rank);
  StepProgram prog = expand(lower_stage(m, p, coord[static_cast<int>(Axis::pipeline)], coord[static_cast<int>(Axis::sequence)]), m);
  prog.rank = rank;
  prog.coord = coord;
  return prog;
}

}  // namespace scanshard
