// train/executor.cpp — see executor.hpp. Layout of this file: the shard layout; the handler table
// (each handler file, exec_*.cpp, adds its entries); binding a step list to handlers; sizing a
// State's buffers; running a forward or backward pass. The State and the helpers the handlers
// share: executor_state.hpp.
#include "train/executor.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "kernels/bf16.hpp"
#include "train/executor_state.hpp"

namespace scanshard::train {

// ---- shard layout ------------------------------------------------------------------------------

ShardLayout::ShardLayout(const ModelSpec& m, const Layout& f, i64 t, i64 tcoord) : full(f) {
  for (const auto& p : full.tensors) {
    const int d = tensor_split_dim(m, p, t);
    dim.push_back(d);
    std::vector<i64> sh = p.shape;
    Range r{0, d < 0 ? 0 : sh[static_cast<std::size_t>(d)]};
    if (d >= 0) {
      r = split_range(sh[static_cast<std::size_t>(d)], t, tcoord);
      sh[static_cast<std::size_t>(d)] = r.size();
    }
    range.push_back(r);
    shape.push_back(sh);
    offset.push_back(total);
    // The slots of the largest shard (⌈n/t⌉ along the split dimension; only a vocabulary can
    // split unevenly): every tensor rank lays its buffer out alike, so a ZeRO part covers the
    // same elements of each whole tensor on every tensor rank (tp.replicated_grads sums them).
    // The padding after a smaller shard stays zero.
    i64 slots = count(shape.size() - 1);
    if (d >= 0 && r.size() > 0) slots = slots / r.size() * ((p.shape[static_cast<std::size_t>(d)] + t - 1) / t);
    total += slots;
  }
}

i64 ShardLayout::count(std::size_t i) const {
  i64 n = 1;
  for (auto s : shape[i]) n *= s;
  return n;
}

i64 ShardLayout::off(const std::string& block, const std::string& name) const {
  auto it = full.index.find(block + "/" + name);
  if (it == full.index.end()) throw std::logic_error("no parameter " + block + "/" + name);
  return offset[it->second];
}

// ---- parameters resolved once -----------------------------------------------------------------

std::string ParamIndex::block(i64 layer) {
  return layer == -1 ? "embed" : layer == -2 ? "final" : layer == -3 ? "head" : "layer." + std::to_string(layer);
}

ParamIndex::ParamIndex(const ShardLayout& lay, i64 depth) : lay_(lay) {
  const auto blocks = static_cast<std::size_t>(depth + 3);
  std::array<std::int32_t, kParamCount> none;
  none.fill(-1);
  tensor_.assign(blocks, none);
  block_range_.assign(blocks, Range{lay.total, 0});
  std::map<std::string, std::size_t, std::less<>> row_of;  // block name → row
  for (i64 l = -3; l < depth; ++l) {
    const std::string b = block(l);
    row_of[b] = row(l);
    for (std::size_t p = 0; p < kParamCount; ++p) {
      const auto it = lay.full.index.find(b + "/" + kParamNames[p]);
      if (it != lay.full.index.end()) tensor_[row(l)][p] = static_cast<std::int32_t>(it->second);
    }
  }
  for (std::size_t i = 0; i < lay.dim.size(); ++i) {
    const auto it = row_of.find(lay.full.tensors[i].block);
    if (it == row_of.end()) continue;
    Range& r = block_range_[it->second];
    r.begin = std::min(r.begin, lay.offset[i]);
    r.end = std::max(r.end, lay.offset[i] + lay.count(i));
  }
}

std::size_t ParamIndex::present(i64 layer, Param p) const {
  const std::int32_t i = tensor(layer, p);
  if (i < 0) throw std::logic_error("executor: no parameter " + block(layer) + "/" + kParamNames[static_cast<std::size_t>(p)]);
  return static_cast<std::size_t>(i);
}
i64 ParamIndex::offset(i64 layer, Param p) const { return lay_.offset[present(layer, p)]; }
i64 ParamIndex::count(i64 layer, Param p) const { return lay_.count(present(layer, p)); }

namespace {
// outer × mid × inner view of tensor i around its split dimension
struct Slab3 { i64 outer = 1, mid = 1, inner = 1, begin = 0, len = 0; };
Slab3 slab3(const ShardLayout& s, std::size_t i) {
  Slab3 v;
  const auto& full = s.full.tensors[i].shape;
  const int d = s.dim[i];
  if (d < 0) { v.mid = s.full.tensors[i].count(); v.len = v.mid; return v; }
  for (int k = 0; k < d; ++k) v.outer *= full[static_cast<std::size_t>(k)];
  for (std::size_t k = static_cast<std::size_t>(d) + 1; k < full.size(); ++k) v.inner *= full[k];
  v.mid = full[static_cast<std::size_t>(d)];
  v.begin = s.range[i].begin;
  v.len = s.range[i].size();
  return v;
}
}  // namespace

void ShardLayout::extract(const float* full_buf, float* local) const {
  for (std::size_t i = 0; i < dim.size(); ++i) {
    const Slab3 v = slab3(*this, i);
    const float* src = full_buf + full.offset[i];
    float* dst = local + offset[i];
    for (i64 o = 0; o < v.outer; ++o)
      std::copy_n(src + (o * v.mid + v.begin) * v.inner, v.len * v.inner, dst + o * v.len * v.inner);
  }
}

void ShardLayout::insert(const float* local, float* full_buf) const {
  for (std::size_t i = 0; i < dim.size(); ++i) {
    const Slab3 v = slab3(*this, i);
    const float* src = local + offset[i];
    float* dst = full_buf + full.offset[i];
    for (i64 o = 0; o < v.outer; ++o)
      std::copy_n(src + o * v.len * v.inner, v.len * v.inner, dst + (o * v.mid + v.begin) * v.inner);
  }
}

Executor::~Executor() = default;

void exec::add_entries(Table& t, std::initializer_list<Table::value_type> entries) {
  for (const auto& e : entries)
    if (!t.insert(e).second) throw std::logic_error("executor: two handler files register the step '" + e.first + "'");
}

namespace {

using State = Executor::State;
using exec::Entry;
using exec::sz;
using exec::Table;
using exec::zero;

// ---- dispatch -----------------------------------------------------------------------------------

const Table& table() {
  static const Table t = [] {
    Table t;
    exec::add_common_handlers(t);
    exec::add_recurrent_handlers(t);
    exec::add_attention_handlers(t);
    exec::add_rwkv4_handlers(t);
    exec::add_rwkv6_handlers(t);
    return t;
  }();
  return t;
}

// What `st` runs in a forward pass (backward = false) or a backward pass (nullptr: nothing).
Executor::Handler handler_of(const Step& st, bool backward) {
  const auto it = table().find(step_key(st.op, st.name));
  if (it == table().end()) return nullptr;
  return backward && st.phase == Phase::backward ? it->second.bwd : it->second.fwd;
}

}  // namespace

bool has_handler(const Step& st, bool backward) { return handler_of(st, backward) != nullptr; }
bool runs_fused(const Step& st, bool backward) { return handler_of(st, backward) == &exec::fused; }

std::vector<Executor::Bound> Executor::bind(const std::vector<Step>& steps, bool backward) const {
  std::vector<Bound> out;
  for (const Step& st : steps) {
    const Handler h = handler_of(st, backward);  // recompute steps rerun the forward handler
    if (!h)
      throw std::logic_error(std::string("executor: no kernel for the ") + to_string(st.phase) + " step '" + st.op + " " +
                             st.name + "' (layer " + std::to_string(st.layer) + ") of " + to_string(slots_[0]->m.family) +
                             " under this plan");
    out.push_back({h, &st});
  }
  return out;
}

namespace {
// Sizes every buffer of one activation slot for this rank's stage.
void init_state(State& s, const ModelSpec& m, const Plan& p, const StepProgram& prog, const std::vector<Range>& zero3_parts) {
  s.zero3 = zero3_parts;
  s.stage = prog.coord[static_cast<int>(Axis::pipeline)];
  s.chunks = prog.chunk_layers;
  s.tp = p.mesh[Axis::tensor];
  s.tp_rank = prog.coord[static_cast<int>(Axis::tensor)];
  s.sp = p.mesh[Axis::sequence];
  s.sp_rank = prog.coord[static_cast<int>(Axis::sequence)];
  s.B = p.micro_batch;
  s.T = p.local_tokens();
  s.rows = s.B * s.T;
  s.rs_ag = p.tensor_comm == TensorComm::rs_ag && s.tp > 1;
  s.res_rows = s.rs_ag ? s.rows / s.tp : s.rows;
  s.res_row0 = s.rs_ag ? s.tp_rank * s.res_rows : 0;
  s.D = m.width;
  const TensorRankDims dims = tensor_rank_dims(m, s.tp, s.tp_rank);
  s.width_local = dims.width;
  s.vocab = m.vocab;
  s.vocab_begin = dims.vocab_begin;
  s.vocab_local = dims.vocab;
  s.rec_local = dims.recurrent;
  s.mlp_local = dims.mlp;
  s.heads_local = dims.heads;
  s.kv_heads_local = dims.kv_heads;  // replicated K/V heads: the one this rank's query heads share
  s.N = m.head_dim;
  s.rope_dims = dims.rope_dims;
  s.conv_width = m.conv_width;
  s.window = m.window;
  s.gate_blocks_local = dims.gate_blocks;
  // K/V rows before the local ones: the window's halo (local attention) or every earlier shard (ring)
  s.halo = s.window > 0 ? kv_halo(s.window, s.T, s.sp_rank, s.sp).received : s.sp_rank * s.T;
  s.embed_scale = m.scale_embedding ? static_cast<float>(std::sqrt(static_cast<double>(m.width))) : 1.0f;
  s.pdrop = m.family == Family::transformer ? m.dropout : 0.0;  // lower.cpp emits dropout steps for transformers only

  const i64 M = s.rows, D = s.D;
  s.xs.assign(sz(m.depth + 1), Vec(sz(s.res_rows * D)));  // the residual stream: this rank's tokens under rs_ag
  s.dxs = s.xs;
  for (auto* v : {&s.embed_partial, &s.final_norm_out, &s.dfinal_norm_out}) v->assign(sz(M * D), 0.0f);
  if (s.rs_ag) {
    for (auto* v : {&s.final_norm_out_loc, &s.dfinal_norm_out_loc}) v->assign(sz(s.res_rows * D), 0.0f);
    s.demb.assign(sz(M * D), 0.0f);
  }
  s.final_rstd.assign(sz(M), 0.0f);
  s.logits.assign(sz(M * s.vocab_local), 0.0f);
  s.dlogits = s.logits;
  s.stats.assign(sz(2 * M), 0.0f);
  s.losses.assign(sz(M), 0.0f);
  if (p.logit_metrics > 0) {
    s.metric_probs.assign(sz(M * s.vocab_local), 0.0f);
    s.metric_losses.assign(sz(M), 0.0f);
  }
  s.dlosses.assign(sz(M), 1.0f / static_cast<float>(s.B * p.seq_len));
  if (m.is_rwkv()) {
    for (auto* v : {&s.emb, &s.demb}) v->assign(sz(M * D), 0.0f);
    if (s.rs_ag) s.demb_loc.assign(sz(s.res_rows * D), 0.0f);
    for (auto* v : {&s.embed_norm_mean, &s.embed_norm_rstd, &s.final_mean}) v->assign(sz(M), 0.0f);
  }
  const bool layernorm = m.is_rwkv() || m.norm == NormKind::layernorm;  // LayerNorm statistics (mean)
  if (layernorm) s.final_mean.assign(sz(M), 0.0f);
  s.emb_out = m.is_rwkv() ? s.emb.data() : s.xs[0].data();
  s.layers.resize(sz(m.depth));
  for (const Range& chunk : s.chunks)
  for (i64 l = chunk.begin; l < chunk.end; ++l) {
    LayerBufs& b = s.layers[sz(l)];
    b.kind = temporal_kind(m, l);
    for (auto* v : {&b.n1, &b.temporal_partial, &b.temporal_sum, &b.n2, &b.mlp_partial, &b.mlp_sum, &b.dmlp_out, &b.dn2,
                    &b.dtemporal_out, &b.dn1})
      v->assign(sz(M * D), 0.0f);
    for (auto* v : {&b.x_mid, &b.dx_mid}) v->assign(sz(s.res_rows * D), 0.0f);
    if (s.rs_ag)
      for (auto* v : {&b.n1_loc, &b.n2_loc, &b.dn1_loc, &b.dn2_loc, &b.dtemporal_out_loc, &b.dmlp_out_loc})
        v->assign(sz(s.res_rows * D), 0.0f);
    b.rstd1.assign(sz(M), 0.0f);
    b.rstd2 = b.rstd1;
    for (auto* v : {&b.h1, &b.h2, &b.mlp_act, &b.dmlp_act, &b.dh1, &b.dh2}) v->assign(sz(M * s.mlp_local), 0.0f);
    b.temporal_out = s.tp > 1 ? b.temporal_sum.data() : b.temporal_partial.data();
    b.mlp_out = s.tp > 1 ? b.mlp_sum.data() : b.mlp_partial.data();
    b.temporal_res = b.temporal_out;
    b.mlp_res = b.mlp_out;
    if (s.pdrop > 0) {
      for (auto* v : {&b.temporal_dropped, &b.mlp_dropped}) v->assign(sz(s.res_rows * D), 0.0f);
      for (auto* v : {&b.temporal_mask, &b.mlp_mask}) v->assign(sz(s.res_rows * D), 0);
      b.temporal_res = b.temporal_dropped.data();
      b.mlp_res = b.mlp_dropped.data();
    }
    if (layernorm) for (auto* v : {&b.mean1, &b.mean2}) v->assign(sz(M), 0.0f);
    if (m.is_rwkv())
      exec::size_rwkv_layer(s, b);
    else if (b.kind == Temporal::recurrent)
      exec::size_recurrent_layer(s, b);
    else
      exec::size_attention_layer(s, b);
  }
}

}  // namespace

Executor::Executor(const ModelSpec& m, const Plan& p, const StepProgram& prog, const ShardLayout& lay, MeshComms comms,
                   std::vector<Range> zero3_parts)
    : prog_(prog) {
  // one activation set per micro-batch the stage's schedule keeps alive at once (micro-batches start
  // and finish in order, so slot micro mod n is free when micro starts)
  const std::int64_t pp = p.mesh[Axis::pipeline], v = static_cast<std::int64_t>(prog.chunk_layers.size());
  const std::int64_t n = std::max<std::int64_t>(
      1, live_micro_batches(pipeline_schedule(p.schedule, prog.micro_batches, pp, v, prog.coord[static_cast<int>(Axis::pipeline)])));
  for (std::int64_t i = 0; i < n; ++i) {
    slots_.push_back(std::make_unique<State>(m, p, lay, comms));
    init_state(*slots_.back(), m, p, prog, zero3_parts);
  }
  // every parameter a handler reads, found by name once, with the step lists
  const auto params = std::make_shared<const ParamIndex>(lay, m.depth);
  for (auto& s : slots_) s->param_index = params;
  fwd_ = bind(prog.forward, false);
  bwd_ = bind(prog.backward, true);
  last_of_layer_.assign(bwd_.size(), 0);
  std::vector<char> seen(static_cast<std::size_t>(std::max<std::int64_t>(m.depth, 0)), 0);
  for (std::size_t i = 0; i < bwd_.size(); ++i) {
    const std::int32_t l = bwd_[i].step->layer;
    if (l < 0) continue;
    const bool run_starts = i == 0 || bwd_[i - 1].step->layer != l;
    if (run_starts && seen[static_cast<std::size_t>(l)]) layers_contiguous_ = false;  // the layer comes back
    seen[static_cast<std::size_t>(l)] = 1;
    last_of_layer_[i] = i + 1 == bwd_.size() || bwd_[i + 1].step->layer != l;
  }
}

namespace {
// Activations stored in bf16 (plan `dtypes: activations: bf16`): the residual stream — each
// layer's input xs[l], which backward and recompute read, the blocks add into and pipeline stages
// exchange — and its gradient dxs[l] are rounded to bf16 (kernels/bf16.hpp) at every layer
// boundary a pass crosses; the kernels inside a layer compute and keep fp32. Parameters arrive as
// bf16 values already (the runner's working copy); messages travel in bf16 (wire.hpp).
struct LayerBoundaries {
  std::vector<Vec>& stream;  // xs (forward) or dxs (backward)
  bool bf16;
  std::int32_t current = -1;
  void store(std::size_t i) {
    if (bf16) kernels::round_bf16(stream[i].data(), static_cast<i64>(stream[i].size()));
  }
  // Before running a step of layer `l` (−1 outside the layers); forward: l's input xs[l] and the
  // previous layer's output; backward (reverse order): dxs[l + 1] arriving, dxs[l] leaving.
  void enter(std::int32_t l, bool forward) {
    if (l == current) return;
    if (current >= 0) store(static_cast<std::size_t>(forward ? current + 1 : current));
    if (l >= 0) store(static_cast<std::size_t>(forward ? l : l + 1));
    current = l;
  }
  void done(bool forward) { enter(-1, forward); }
};
}  // namespace

Executor::State& Executor::slot(std::int64_t micro) {
  State& s = *slots_[static_cast<std::size_t>(micro % static_cast<std::int64_t>(slots_.size()))];
  mpi::Comm::test_all(s.pending);  // the sends copied their data: only free what has gone
  if (s.pending.empty()) s.send_bufs.clear();
  return s;
}

std::span<const float> Executor::head_probs(std::int64_t micro) {
  const State& s = slot(micro);
  return {s.logits.data(), s.logits.size()};
}

void Executor::finish() {
  for (auto& s : slots_) {
    mpi::Comm::wait_all(s->pending);
    s->send_bufs.clear();
  }
}

Range Executor::chunk_range(const std::vector<Range>& chunks, std::size_t steps, std::int64_t chunk) const {
  if (chunk < 0) {
    if (chunks.size() > 1) throw std::logic_error("executor: an interleaved stage runs one model chunk per pass");
    return {0, static_cast<std::int64_t>(steps)};
  }
  if (chunk >= static_cast<std::int64_t>(chunks.size()))
    throw std::logic_error("executor: chunk " + std::to_string(chunk) + " of a stage with " + std::to_string(chunks.size()));
  return chunks[static_cast<std::size_t>(chunk)];
}

double Executor::forward(std::int64_t micro, float* params, const std::int32_t* tokens, const std::int32_t* targets,
                         Trace* tr, const BatchIndex& ix, std::int64_t chunk) {
  const Range run = chunk_range(prog_.forward_chunk, fwd_.size(), chunk);
  State& s = slot(micro);
  s.chunk = std::max<std::int64_t>(0, chunk);
  s.ix = ix;
  s.row_seq.resize(static_cast<std::size_t>(s.res_rows));
  s.row_pos.resize(static_cast<std::size_t>(s.res_rows));
  for (i64 r = 0; r < s.res_rows; ++r) {  // residual-region row r is micro-batch row res_row0 + r: sequence b, local token t
    const i64 b = (s.res_row0 + r) / s.T, t = (s.res_row0 + r) % s.T;
    s.row_seq[static_cast<std::size_t>(r)] = ix.first_sequence + b;
    s.row_pos[static_cast<std::size_t>(r)] = s.sp_rank * s.T + t;
  }
  s.params = s.params_writable = params;
  const auto n = static_cast<std::size_t>(s.rows);
  s.tokens.assign(tokens, tokens + n);
  s.targets.assign(targets, targets + n);
  s.reset.assign(n, 0);
  s.pos.assign(n, 0);
  for (i64 b = 0; b < s.B; ++b)
    for (i64 t = 0; t < s.T; ++t) {
      const i64 g = s.sp_rank * s.T + t;  // global position in the sequence
      s.pos[static_cast<std::size_t>(b * s.T + t)] = static_cast<std::int32_t>(g);
      s.reset[static_cast<std::size_t>(b * s.T + t)] = g == 0;
    }
  bool loss = false;  // the pass ran the head: its token losses are this micro-batch's
  LayerBoundaries stored{s.xs, s.p.act_dtype == DType::bf16};
  for (i64 i = run.begin; i < run.end; ++i) {
    const Bound& b = fwd_[static_cast<std::size_t>(i)];
    stored.enter(b.step->layer, true);
    const mpi::Traffic before = mpi::traffic();
    {
      Trace::Scope sc(tr, to_string(b.step->phase), b.step->op, b.step->name);
      b.fn(s, *b.step);
    }
    trace_step_bytes(tr, *b.step, before);
    loss = loss || std::string_view(b.step->op) == ops::softmax_xent;
  }
  stored.done(true);
  double sum = 0;
  if (loss)
    for (float l : s.losses) sum += l;
  return sum;
}

void Executor::backward(std::int64_t micro, float* params, float* grads, Trace* tr,
                        const std::function<void(std::int32_t)>& layer_done, std::int64_t chunk,
                        const GradientSink* reduce_grads) {
  const Range run = chunk_range(prog_.backward_chunk, bwd_.size(), chunk);
  State& s = slot(micro);
  s.chunk = std::max<std::int64_t>(0, chunk);
  s.params = s.params_writable = params;
  s.grads = grads;
  s.reduce_grads = reduce_grads;
  zero(s.dxs.back());  // the gradient arriving at the top (each layer clears its own buffers: clear_grad_buffers)
  for (auto& b : s.layers) b.regathers = 0;
  LayerBoundaries stored{s.dxs, s.p.act_dtype == DType::bf16};
  for (auto i = static_cast<std::size_t>(run.begin); i < static_cast<std::size_t>(run.end); ++i) {
    const Bound& b = bwd_[i];
    stored.enter(b.step->layer, false);
    const mpi::Traffic before = mpi::traffic();
    {
      Trace::Scope sc(tr, to_string(b.step->phase), b.step->op, b.step->name);
      b.fn(s, *b.step);
    }
    trace_step_bytes(tr, *b.step, before);
    if (layer_done && layers_contiguous_ && last_of_layer_[i]) layer_done(b.step->layer);
  }
  stored.done(false);
}

}  // namespace scanshard::train
