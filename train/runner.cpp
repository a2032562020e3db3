// train/runner.cpp — the training loop around the Executor (see runner.hpp).
#include "train/runner.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string_view>
#include <stdexcept>
#include <type_traits>

#include "program/lower.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/executor.hpp"
#include "train/resume.hpp"
#include "train/wire.hpp"
#include "kernels/bf16.hpp"

#ifndef SCANSHARD_DEFAULT_CORPUS
#define SCANSHARD_DEFAULT_CORPUS "data/corpus.txt"
#endif

namespace scanshard::train {

namespace {
// grad_accumulation fused: the backward's kernels (which all add into the gradient buffer they are
// given, β = 1) write straight into the step's accumulator. The runner can do that only when the
// accumulator is the kernels' fp32, and only when no backward step reduces a parameter's gradient
// in place over the tensor ranks (replicated K/V heads' attn.kv_grads, RWKV's μ gradients): that
// would reduce the sum of the earlier micro-batches again. The simulator prices both.
void check_fused_accumulation(const ModelSpec& m, const Plan& p) {
  if (p.grad_accumulation != GradAccumulation::fused) return;
  if (p.grad_bytes() != 4)
    throw PlanError("the runner fuses accumulation into an fp32 accumulator", "grad_accumulation",
                    std::string("fused accumulation: the runner's kernels accumulate in fp32, but the plan's gradients are ") +
                        to_string(p.grad_dtype) + " (" + std::to_string(static_cast<int>(p.grad_bytes())) +
                        " bytes); use dtypes: grads: fp32 to run it (simulate prices it as it is)");
  Plan whole = p;  // every layer on one stage: the backward steps of all of them
  whole.mesh[Axis::pipeline] = 1;
  whole.virtual_stages = 1;
  for (const Step& st : lower(m, whole, 0).backward) {
    const std::string_view n = st.name;
    if (st.kind == StepKind::collective && (n == tensors::attn_kv_grads || n == tensors::tm_mu_grads || n == tensors::cm_mu_grads))
      throw PlanError("the runner fuses accumulation without in-place gradient reductions", "grad_accumulation",
                      std::string("fused accumulation: the backward all-reduces ") + st.name +
                          " in place over the tensor ranks, which would reduce the accumulated sum again; the runner runs it with "
                          "tensor = 1 or with hook, autograd or separate (simulate prices it as it is)");
  }
}
}  // namespace

void check_supported(const ModelSpec& m, const Plan& p, std::int64_t world_size) {
  // Every legal plan runs (the transformer family with dropout among them: masks hashed from
  // global indices, kernels/dropout.hpp, the same under every plan): what remains to refuse is an
  // illegal plan — the rules the planner applies too (check_plan), first: they say what to change
  // in the plan — and a job of the wrong size.
  check_plan(m, p, 0);
  check_fused_accumulation(m, p);
  if (p.mesh.devices() != world_size)
    throw PlanError("mesh size equals ranks", "mesh",
                    "the plan's mesh (" + p.mesh.describe() + ") has " + std::to_string(p.mesh.devices()) +
                        " devices but the job has " + std::to_string(world_size) +
                        " ranks; run with mpirun -n " + std::to_string(p.mesh.devices()));
}

std::vector<std::uint8_t> load_bytes(const std::string& path, std::int64_t min_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw ConfigError(path + ": not a readable data file (missing, or a directory)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ConfigError(path + ": cannot open the data file");
  std::vector<std::uint8_t> d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (std::int64_t(d.size()) < min_bytes)
    throw ConfigError(path + ": data file has " + std::to_string(d.size()) + " bytes; one sequence needs " +
                      std::to_string(min_bytes));
  return d;
}

std::string default_corpus_path() { return SCANSHARD_DEFAULT_CORPUS; }

std::vector<std::int32_t> load_tokens(const std::string& path, TokenFormat format, std::int64_t min_tokens,
                                      std::int64_t vocab) {
  const Tokens t = Tokens::open_file(path, format, min_tokens);
  t.check_vocab(vocab, nullptr);
  return t.to_vector();
}

OnNan parse_on_nan(const std::string& s) { return parse_choice(kOnNanNames, s, "--on-nan"); }

namespace {

// One communicator per mesh axis of size > 1: the ranks that differ only in that coordinate.
struct AxisComms {
  std::vector<mpi::Comm> owned;
  MeshComms view;
  AxisComms(const mpi::Comm* world, const Mesh& mesh, std::int64_t rank) {
    if (!world) return;
    const auto coord = rank_coords(mesh, rank);
    owned.reserve(kAxisCount);
    for (int a = 0; a < kAxisCount; ++a) {
      if (mesh[static_cast<Axis>(a)] <= 1) continue;
      auto c = coord;
      c[a] = 0;
      owned.push_back(world->split(static_cast<int>(rank_of(mesh, c)), static_cast<int>(coord[a])));
      view.axis[a] = &owned.back();
    }
  }
};

// ZeRO: this rank's part of the local flat parameter buffer (the whole buffer without sharding).
struct Owned {
  std::vector<int> counts;  // per fsdp rank
  std::int64_t begin = 0, end = 0;
};
Owned owned_range(std::int64_t total, std::int64_t parts, std::int64_t me) {
  Owned o;
  for (std::int64_t i = 0; i < parts; ++i) o.counts.push_back(static_cast<int>(split_range(total, parts, i).size()));
  const Range r = split_range(total, parts, me);
  o.begin = r.begin;
  o.end = r.end;
  return o;
}

// The tensors this rank's pipeline stage owns (updates, counts in the gradient norm, writes):
// the layers of its model chunks, the embedding on the first stage, the final norm on the last.
// With a tied head the last stage also holds the table (`held`, not the rest of the embed block):
// updated identically, owned by the first stage.
struct StageTensors { std::vector<char> owned, held; };
StageTensors stage_tensors(const ModelSpec& m, const ShardLayout& sl, const StepProgram& prog, std::int64_t pp) {
  const std::int64_t stage = prog.coord[static_cast<int>(Axis::pipeline)];
  StageTensors st;
  for (const auto& t : sl.full.tensors) {
    bool own = false, hold = false;
    if (t.block == "embed") { own = stage == 0; hold = own || (m.tied_embeddings && stage == pp - 1 && t.name == "embed.table"); }
    else if (t.block == "final" || t.block == "head") own = hold = stage == pp - 1;
    else {
      const std::int64_t l = std::stoll(t.block.substr(t.block.find('.') + 1));
      for (const Range& c : prog.chunk_layers) own = own || (l >= c.begin && l < c.end);
      hold = own;
    }
    st.owned.push_back(own);
    st.held.push_back(hold);
  }
  return st;
}

// Who writes what in a checkpoint: this rank's slab of every tensor; one writer per slab (the
// first rank on the data, fsdp and sequence axes, and on the tensor axis for whole tensors).
std::vector<Slab> checkpoint_slabs(const ShardLayout& sl, const std::array<std::int64_t, kAxisCount>& coord) {
  const bool replica_writer = coord[static_cast<int>(Axis::data)] == 0 && coord[static_cast<int>(Axis::fsdp)] == 0 &&
                              coord[static_cast<int>(Axis::sequence)] == 0;
  std::vector<Slab> slabs = shard_slabs(sl);
  for (std::size_t i = 0; i < sl.dim.size(); ++i)
    slabs[i].write = replica_writer && (sl.dim[i] >= 0 || coord[static_cast<int>(Axis::tensor)] == 0);
  return slabs;
}
template <class P>
std::vector<P> per_tensor(const ShardLayout& sl, P base) {
  std::vector<P> out;
  for (std::size_t i = 0; i < sl.dim.size(); ++i) out.push_back(base + sl.offset[i]);
  return out;
}
// A non-finite step, said the same on every rank: the first tensor (parameter_tensors() order)
// whose reduced gradient has a NaN/Inf on any rank, and the first non-finite parameter if any.
// `owned` / `held` limit each rank to the part it reduced / holds. Collective over `world`.
std::string non_finite_report(std::int64_t step, double loss, double grad_sq, const Layout& lay, const ShardLayout& sl,
                              std::span<const float> grad, std::span<const float> params, Range owned,
                              const StageTensors& stage, const mpi::Comm* world) {
  const std::size_t n = sl.dim.size();
  std::vector<double> bad(2 * n, 0.0);  // [ti]: gradient, [n + ti]: parameter
  auto any_bad = [](const float* x, std::int64_t len) {
    for (std::int64_t i = 0; i < len; ++i)
      if (!std::isfinite(x[i])) return true;
    return false;
  };
  for (std::size_t ti = 0; ti < n; ++ti) {
    const std::int64_t b = std::max(owned.begin, sl.offset[ti]), e = std::min(owned.end, sl.offset[ti] + sl.count(ti));
    if (b < e && stage.owned[ti] && any_bad(grad.data() + b, e - b)) bad[ti] = 1;
    if (stage.held[ti] && any_bad(params.data() + sl.offset[ti], sl.count(ti))) bad[n + ti] = 1;
  }
  if (world) world->allreduce_sum(std::span<double>(bad));
  auto first = [&](std::size_t base) -> std::string {
    std::size_t count = 0, at = n;
    for (std::size_t ti = 0; ti < n; ++ti)
      if (bad[base + ti] > 0) { ++count; at = std::min(at, ti); }
    if (!count) return "";
    return lay.tensors[at].block + "/" + lay.tensors[at].name + (count > 1 ? " (and " + std::to_string(count - 1) + " more)" : "");
  };
  std::ostringstream msg;
  msg << "step " << step + 1 << ": non-finite training values: loss " << loss << ", gradient norm " << std::sqrt(grad_sq);
  if (const auto g = first(0); !g.empty()) msg << "; first non-finite gradient: " << g;
  if (const auto q = first(n); !q.empty()) msg << "; first non-finite parameter: " << q;
  return msg.str();
}

// Overlapped gradient reduction (plan.overlap without a ZeRO reduce-scatter; ZeRO-2/3 reduce-scatter
// block by block in every backward instead, run_with's GradientSink): during the step's
// last backward pass, each layer's gradients start their all-reduce (one bucket per layer,
// MPI_Iallreduce over the data × fsdp × sequence group at once) as soon as the executor is done
// with the layer; the step end waits for them and reduces the rest (embedding, final norm, head).
struct GradBuckets {
  bool active = false;
  std::optional<mpi::Comm> group;    // ranks with this rank's tensor and pipeline coordinates
  std::vector<Range> layer;          // per layer: its tensors' range in the local flat buffer
  std::vector<std::int32_t> tensor_layer;  // per tensor: its layer, −1 outside the layers
  std::vector<char> started;         // per layer: bucket started in this step
  std::vector<MPI_Request> requests;

  // The ranges of the buffer no bucket has covered this step, merged.
  std::vector<Range> rest(const ShardLayout& sl) const {
    std::vector<Range> out;
    for (std::size_t ti = 0; ti < sl.dim.size(); ++ti) {
      if (tensor_layer[ti] >= 0 && started[static_cast<std::size_t>(tensor_layer[ti])]) continue;
      const Range r{sl.offset[ti], sl.offset[ti] + sl.count(ti)};
      if (!out.empty() && out.back().end == r.begin) out.back().end = r.end;
      else out.push_back(r);
    }
    return out;
  }
};

GradBuckets grad_buckets(const ModelSpec& m, const Plan& p, const StepProgram& prog, const ShardLayout& sl,
                         const mpi::Comm* world, std::int64_t rank) {
  GradBuckets g;
  bool all_reduce = false, scatter = false;
  for (const Step& st : prog.step_end) {
    all_reduce = all_reduce || (std::string_view(st.op) == ops::all_reduce && std::string_view(st.name) == tensors::grads);
    scatter = scatter || std::string_view(st.op) == ops::reduce_scatter;
  }
  if (!world || !p.overlap || !all_reduce || scatter || zero_sharded_gradients(p)) return g;
  auto coord = rank_coords(p.mesh, rank);
  for (Axis a : {Axis::data, Axis::fsdp, Axis::sequence}) coord[static_cast<int>(a)] = 0;
  g.group = world->split(static_cast<int>(rank_of(p.mesh, coord)), static_cast<int>(rank));  // collective
  g.layer.assign(static_cast<std::size_t>(m.depth), Range{});
  g.started.assign(g.layer.size(), 0);
  for (std::size_t ti = 0; ti < sl.dim.size(); ++ti) {
    const std::string& block = sl.full.tensors[ti].block;
    std::int32_t l = -1;
    if (block.rfind("layer.", 0) == 0) l = static_cast<std::int32_t>(std::stol(block.substr(6)));
    g.tensor_layer.push_back(l);
    if (l < 0) continue;
    Range& r = g.layer[static_cast<std::size_t>(l)];
    const Range t{sl.offset[ti], sl.offset[ti] + sl.count(ti)};
    if (r.size() == 0) r = t;
    else if (r.end == t.begin) r.end = t.end;
    else throw std::logic_error("runner: the tensors of layer " + std::to_string(l) + " are not contiguous");
  }
  g.active = true;
  return g;
}

// Where sequence i of step k starts: ((k·G + i)·(T+1)) mod span, in 128 bits (no overflow for
// any step up to kMaxSteps), plus this rank's sequence shard offset s0.
std::int64_t sequence_start(std::int64_t step, std::int64_t G, std::int64_t i, std::int64_t T, std::int64_t span,
                            std::int64_t s0) {
  __extension__ using u128 = unsigned __int128;  // GCC and Clang
  const u128 at = (u128(step) * u128(G) + u128(i)) * u128(T + 1);
  return static_cast<std::int64_t>(at % u128(span)) + s0;
}

// This rank's tokens and targets of micro-batch j (mb sequences of Tl tokens). false when the data
// file no longer holds them (the buffers then hold zeros; the caller agrees on the failure).
bool read_micro_batch(const Tokens& data, std::int64_t step, std::int64_t j, const Plan& p, std::int64_t first_seq,
                      std::int64_t s0, std::vector<std::int32_t>& tokens, std::vector<std::int32_t>& targets) {
  const std::int64_t T = p.seq_len, G = p.global_batch, mb = p.micro_batch, Tl = p.local_tokens();
  const std::int64_t span = data.size() - T;  // start offsets 0 .. size-T-1
  std::vector<std::int32_t> window(static_cast<std::size_t>(Tl + 1));
  bool ok = true;
  for (std::int64_t b = 0; b < mb; ++b) {
    const std::int64_t start = sequence_start(step, G, first_seq + j * mb + b, T, span, s0);
    ok = data.read(start, Tl + 1, window.data()) && ok;
    std::copy_n(window.begin(), Tl, tokens.begin() + b * Tl);
    std::copy_n(window.begin() + 1, Tl, targets.begin() + b * Tl);
  }
  return ok;
}

}  // namespace

Result run(const ModelSpec& m, const Plan& p, const std::vector<std::uint8_t>& data, const Options& o,
           const mpi::Comm* comm, const std::function<void(std::int64_t, double, double)>& progress) {
  return run(m, p, Tokens(std::vector<std::int32_t>(data.begin(), data.end())), o, comm, progress);
}

Result run(const ModelSpec& m, const Plan& p, const std::vector<std::int32_t>& data, const Options& o,
           const mpi::Comm* comm, const std::function<void(std::int64_t, double, double)>& progress) {
  return run(m, p, Tokens(data), o, comm, progress);
}

namespace {
const char* const kAccumPhase = to_string(Phase::backward);  // the phase of lower.cpp's grad_accumulate step

// A gradient reduction in the step's message dtype (wire.hpp): bf16 on the wire when the plan's
// gradient dtype is 2 bytes (Acc is float then), else Acc itself.
template <class Acc>
void grad_allreduce(const mpi::Comm& c, std::span<Acc> g, DType wire) {
  if constexpr (std::is_same_v<Acc, float>)
    if (wire == DType::bf16) return Wire(c, wire).allreduce_sum(g);
  c.allreduce_sum(g);
}
template <class Acc>
void grad_reduce_scatter_v(const mpi::Comm& c, std::span<const Acc> in, std::span<Acc> out, const std::vector<int>& counts, DType wire) {
  if constexpr (std::is_same_v<Acc, float>)
    if (wire == DType::bf16) return Wire(c, wire).reduce_scatter_sum_v(in, out, counts);
  c.reduce_scatter_sum_v(in, out, counts);
}

// Adds a step-end step's moved bytes to its trace cell when it goes out of scope (wire.hpp).
struct StepBytes {
  Trace* tr;
  const Step& st;
  mpi::Traffic before = mpi::traffic();
  ~StepBytes() { trace_step_bytes(tr, st, before); }
};

// The run with gradients summed (over micro-batches and across ranks) in Acc: double for plans
// with `dtypes: grads: fp64`, float otherwise (Plan::grad_dtype).
//
// Mixed precision (plan `dtypes: params: bf16`, Micikevicius et al. 2018, arXiv 1710.03740):
// `params` is the fp32 master copy AdamW updates; the executor reads `work`, its bf16 working
// copy (each value rounded to bf16, held widened in fp32 so OpenBLAS sgemm multiplies it with
// fp32 accumulation — kernels/bf16.hpp), refreshed from the master after every update. ZeRO's
// parameter gathers move the working copy (bf16 on the wire, as lower.cpp prices c.w); under
// ZeRO 1–2 the master's other parts are gathered only for checkpoints and the result.
template <class Acc>
Result run_with(const ModelSpec& m, const Plan& p, const Tokens& data, const Options& o, const mpi::Comm* comm,
                const std::function<void(std::int64_t, double, double)>& progress) {
  const std::int64_t world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  check_supported(m, p, world);
  check_steps(0, o.steps);
  const DataIdentity data_id = data.check_vocab(m.vocab, comm && world > 1 ? comm : nullptr);
  const std::int64_t T = p.seq_len, G = p.global_batch, mb = p.micro_batch, Tl = p.local_tokens();
  if (data.size() < T + 2) throw ConfigError("data: shorter than one sequence of seq_len+1 tokens");
  const auto coord = rank_coords(p.mesh, rank);
  auto at = [&](Axis a) { return coord[static_cast<int>(a)]; };
  const std::int64_t replica = at(Axis::data) * p.mesh[Axis::fsdp] + at(Axis::fsdp);
  const std::int64_t local = p.local_batch(), first_seq = replica * local, s0 = at(Axis::sequence) * Tl;
  const AxisComms comms(comm, p.mesh, rank);
  const StepProgram prog = lower(m, p, rank);

  const Layout lay(m);
  const ShardLayout sl(m, lay, p.mesh[Axis::tensor], at(Axis::tensor));
  Result res;
  // parameters, gradient and moments in kernels::AlignedVec: large buffers on huge pages (kernels.hpp)
  kernels::AlignedVec params(static_cast<std::size_t>(sl.total));
  sl.extract(init_params(lay, o.seed).data(), params.data());  // every plan starts from the same full tensors
  kernels::AlignedVec grad(params.size()), m1(params.size(), 0.0f), m2(params.size(), 0.0f);
  const bool mixed = p.param_dtype == DType::bf16;
  kernels::AlignedVec work(mixed ? params.size() : 0);
  auto refresh_work = [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; mixed && i < e; ++i) work[static_cast<std::size_t>(i)] = kernels::round_bf16(params[static_cast<std::size_t>(i)]);
  };
  float* const compute_params = mixed ? work.data() : params.data();
  // Gradients summed over micro-batches and replicas, in the plan's gradient dtype (fp64: a sum of
  // a few fp32 terms is then nearly always exact, so the result barely depends on how the batch
  // was split; fp32: half the bytes on the wire, rounding that depends on the split).
  std::vector<Acc> gacc(params.size());
  // How each micro-batch's gradient reaches gacc (plan grad_accumulation; lower.hpp
  // grad_accumulation_bytes, which the lowering prices): separate — the backward writes `grad`,
  // which is added and cleared; hook and autograd — the same, with the gradient rounded to the
  // .grad's dtype (bf16 under mixed precision) before it is added and the sum to the gradient
  // dtype (bf16 when the gradients are), as Megatron-LM's main_grad.add_(grad) and PyTorch's
  // .grad += do; fused — the backward adds into gacc itself (check_fused_accumulation). Under
  // ZeRO-2/3's per-block reduce-scatter the shards arrive in Acc and are added as they are.
  const GradAccumulationBytes acc_bytes = grad_accumulation_bytes(p);
  const bool framework_sum = p.grad_accumulation != GradAccumulation::separate && !zero_sharded_gradients(p);
  const bool round_handed = framework_sum && acc_bytes.handed == 2, round_sum = framework_sum && acc_bytes.acc == 2;
  const bool fused = p.grad_accumulation == GradAccumulation::fused;
  float* backward_grad = grad.data();
  if constexpr (std::is_same_v<Acc, float>)
    if (fused) backward_grad = gacc.data();
  auto add_gradient = [&](std::int64_t b, std::int64_t n) {
    if (round_handed) kernels::round_bf16(grad.data() + b, n);
    kernels::accumulate(gacc.data() + b, grad.data() + b, n);
    if constexpr (std::is_same_v<Acc, float>)
      if (round_sum) kernels::round_bf16(gacc.data() + b, n);
  };
  std::vector<Acc> rs_part;  // ZeRO: this rank's part of the reduce-scattered gradient
  const bool zero = p.mesh[Axis::fsdp] > 1 && p.zero_stage >= 1;
  const Owned own = zero ? owned_range(sl.total, p.mesh[Axis::fsdp], at(Axis::fsdp)) : Owned{{}, 0, sl.total};
  // ZeRO-3: who owns which part (the executor gathers before use). Under gradient_sync:
  // last_microbatch the parameters stay whole through the step (lower.hpp zero_stage_during_step):
  // the step end's gather refills them once, as under ZeRO-1/2.
  std::vector<Range> zero3_parts;
  if (zero_stage_during_step(p) == 3)
    for (std::int64_t r = 0; r < p.mesh[Axis::fsdp]; ++r) zero3_parts.push_back(split_range(sl.total, p.mesh[Axis::fsdp], r));
  Executor ex(m, p, prog, sl, comms.view, zero3_parts);
  const StageTensors stage = stage_tensors(m, sl, prog, p.mesh[Axis::pipeline]);
  std::vector<Slab> slabs = checkpoint_slabs(sl, coord);
  for (std::size_t i = 0; i < slabs.size(); ++i) slabs[i].write = slabs[i].write && stage.owned[i];
  // Full logical tensors on every rank from this rank's shard layout (parameters, or the first
  // step's gradients): fsdp parts gathered when only a part is valid here, shards into place, each
  // value counted once (owning stage, tensor rank 0 for whole tensors).
  auto assemble = [&](std::span<const float> part, bool gather_fsdp_parts) {
    std::vector<float> local(part.begin(), part.end());
    if (gather_fsdp_parts || (zero && mixed)) comms.view[Axis::fsdp]->allgather_v_inplace(std::span<float>(local), own.counts);
    std::vector<float> full(static_cast<std::size_t>(lay.total), 0.0f);
    sl.insert(local.data(), full.data());
    for (std::size_t ti = 0; ti < sl.dim.size(); ++ti)
      if (!stage.owned[ti] || (sl.dim[ti] < 0 && at(Axis::tensor) != 0))
        std::fill_n(full.data() + lay.offset[ti], lay.tensors[ti].count(), 0.0f);
    for (Axis a : {Axis::tensor, Axis::pipeline})
      if (const mpi::Comm* c = comms.view[a]) c->allreduce_sum(std::span<float>(full));
    return full;
  };
  // A tied head: the first and last stages keep the table's gradient equal (lower.cpp step end).
  std::optional<mpi::Comm> tied;
  if (const mpi::Comm* pc = comms.view[Axis::pipeline]) {
    const std::int64_t s_ = at(Axis::pipeline), pp = p.mesh[Axis::pipeline];
    tied = pc->split(s_ == 0 || s_ == pp - 1 ? 0 : 1, static_cast<int>(s_));
  }
  // The stage's passes (program/lower.hpp pipeline_schedule: GPipe, 1F1B, interleaved 1F1B) and,
  // per model chunk, its last backward pass of the step (its layers' gradient buckets start there).
  const auto v = static_cast<std::int64_t>(prog.chunk_layers.size());
  const auto order = pipeline_schedule(p.schedule, prog.micro_batches, p.mesh[Axis::pipeline], v, at(Axis::pipeline));
  std::vector<std::size_t> last_backward(static_cast<std::size_t>(v), 0);
  for (std::size_t oi = 0; oi < order.size(); ++oi)
    if (!order[oi].forward) last_backward[static_cast<std::size_t>(order[oi].chunk)] = oi;
  GradBuckets buckets = grad_buckets(m, p, prog, sl, comm, rank);
  // A gradient hook (fault injection) needs every local gradient before any reduction starts.
  // bf16 gradient messages are reduced at the step end (the buckets' non-blocking reduction is fp32 or fp64 only).
  const DType grad_wire = p.grad_bytes() == 2 ? DType::bf16 : DType::fp32;
  buckets.active = buckets.active && ex.layers_contiguous() && !o.gradient_hook && grad_wire != DType::bf16;
  // ZeRO-2/3 (zero_sharded_gradients): each block's gradient, as a micro-batch's backward finishes
  // it (the program's reduce-scatter steps of grads, embed.grads, head.grads), is reduce-scattered
  // over fsdp — rank r receives the block's overlap with its owned range [o_r, o_r+1), so the flat
  // layout, the checkpoints and the ownership stay as they are — and added to this rank's shard of
  // gacc; the block's range of `grad` is cleared for the next pass. The clipping and the optimizer
  // then read the shard as before. A gradient hook needs every local gradient before any
  // reduction: with one the blocks are accumulated whole and reduce-scattered at the step end.
  // gradient_sync: last_microbatch lowers no per-block steps (sharded is false): the whole local
  // gradient is accumulated over the micro-batches and the step end's reduce-scatter (scatter_whole,
  // ZeRO-1's) reduces it once.
  const bool sharded = zero_sharded_gradients(p), hooked = sharded && static_cast<bool>(o.gradient_hook);
  std::vector<Range> fsdp_parts;  // the part of the flat buffer each fsdp rank owns
  for (std::int64_t r = 0; sharded && r < p.mesh[Axis::fsdp]; ++r) fsdp_parts.push_back(split_range(sl.total, p.mesh[Axis::fsdp], r));
  // The blocks' reduce-scatters in fp32 or fp64 messages are non-blocking (MPI_Ireduce_scatter):
  // started as the backward pass leaves a block, they run while it goes on to the next, and
  // complete at the pass's end (finish_block_reductions), which adds each part to the shard in
  // the order they started and clears the block's range — the same sums as a blocking call, so
  // the same bytes and results. bf16 messages (a packed copy, wire.hpp) stay blocking.
  struct BlockReduction {
    Range range;                  // the block's range of `grad` (the message while in flight)
    std::int64_t shard_begin = 0;  // where this rank's part lands in gacc
    std::vector<Acc> in, out;      // fp64: the block's gradient widened; this rank's part
  };
  std::vector<BlockReduction> in_flight;  // kept between passes: their buffers are reused
  std::size_t in_flight_count = 0;
  std::vector<MPI_Request> block_requests;
  auto finish_block_reductions = [&] {
    mpi::Comm::wait_all(block_requests);
    for (std::size_t k = 0; k < in_flight_count; ++k) {
      const BlockReduction& br = in_flight[k];
      for (std::size_t i = 0; i < br.out.size(); ++i) gacc[static_cast<std::size_t>(br.shard_begin) + i] += br.out[i];
      std::fill(grad.begin() + br.range.begin, grad.begin() + br.range.end, 0.0f);
    }
    in_flight_count = 0;
  };
  const GradientSink reduce_grads = [&](const Step& st, std::span<const Range> ranges) {
    for (const Range r : ranges) {
      float* const g = grad.data() + r.begin;
      if (hooked) {
        kernels::accumulate(gacc.data() + r.begin, g, r.size());
        std::fill(g, g + r.size(), 0.0f);
        continue;
      }
      const std::vector<int> counts = overlap_counts(r, fsdp_parts);
      if (in_flight.size() == in_flight_count) in_flight.emplace_back();
      BlockReduction& br = in_flight[in_flight_count++];
      br.range = r;
      br.shard_begin = std::max(r.begin, own.begin);
      br.out.resize(static_cast<std::size_t>(counts[static_cast<std::size_t>(at(Axis::fsdp))]));
      std::span<const Acc> in;
      if constexpr (std::is_same_v<Acc, float>) {
        in = std::span<const Acc>(g, static_cast<std::size_t>(r.size()));
      } else {
        br.in.assign(g, g + r.size());
        in = std::span<const Acc>(br.in);
      }
      const DType wire = message_dtype(p, st);
      if (std::is_same_v<Acc, float> && wire == DType::bf16) {
        grad_reduce_scatter_v(*comms.view[Axis::fsdp], in, std::span<Acc>(br.out), counts, wire);
      } else {
        block_requests.push_back(comms.view[Axis::fsdp]->ireduce_scatter_sum_v(in, std::span<Acc>(br.out), counts));
        mpi::Comm::test_all(block_requests);
      }
    }
  };
  std::int64_t first_step = 0;
  // The seed of the dropout masks: the run's, or on resume the checkpoint's (/meta seed), so a
  // resumed run draws the masks the uninterrupted one would (they also hash the step number).
  std::uint64_t mask_seed = o.seed;
  if (!o.resume.empty()) {  // full logical tensors: any plan's shards can be read back
    const CheckpointMeta meta = read_checkpoint(comm, o.resume, lay, slabs, per_tensor(sl, params.data()),
                                                per_tensor(sl, m1.data()), per_tensor(sl, m2.data()));
    const ResumePoint at = check_resume(meta, o.resume, m, p, o.steps);  // every rank read the same /meta
    check_optimizer(meta, o.resume, OptimizerConfig{o.adamw, o.schedule}, o.allow_optimizer_change);
    const std::string data_notice = check_data(meta, o.resume, data_id, o.allow_data_change);
    if (!data_notice.empty() && o.notice) o.notice(data_notice);
    first_step = at.step;
    mask_seed = at.seed;
  }
  res.first_step = first_step;
  refresh_work(0, sl.total);
  // Writes <dir>/step-<N>.h5 after step N (collective). ZeRO parts are gathered first.
  auto save = [&](std::int64_t done) {
    if (zero) {
      for (auto* v : {&m1, &m2}) comms.view[Axis::fsdp]->allgather_v_inplace(std::span<float>(*v), own.counts);
      if (!zero3_parts.empty() || mixed) comms.view[Axis::fsdp]->allgather_v_inplace(std::span<float>(params), own.counts);
    }
    CheckpointMeta meta;
    meta.model_name = m.name;
    meta.model_yaml = model_summary(m);
    meta.plan_text = plan_to_yaml(p);
    meta.step = done;
    meta.seed = mask_seed;  // the initialisation seed, or the resumed checkpoint's
    meta.data_cursor = done;  // sequence i of step k starts at ((k·G + i)·(T+1)) mod span
    meta.optimizer_yaml = OptimizerConfig{o.adamw, o.schedule}.to_yaml();
    meta.data_yaml = data_id.to_yaml();
    const std::string path = o.checkpoint_dir + "/" + step_file_name(done);
    Trace::Scope sc(&res.trace, "optimizer", ops::checkpoint, tensors::params);
    write_checkpoint(comm, path, lay, slabs, per_tensor(sl, static_cast<const float*>(params.data())),
                     per_tensor(sl, static_cast<const float*>(m1.data())), per_tensor(sl, static_cast<const float*>(m2.data())),
                     meta);
    res.checkpoints.push_back(path);
    if (rank != 0) return;
    // The pointer and the retention, after the file is complete: rank 0 alone, and a failure is a
    // notice (the checkpoint itself is written; the next one tries again), never a hang.
    try {
      write_latest_pointer(o.checkpoint_dir, done);
    } catch (const std::exception& e) {
      if (o.notice) o.notice(std::string("the latest pointer was not updated: ") + e.what());
    }
    std::vector<std::string> failed;
    for (auto& f : prune_step_files(o.checkpoint_dir, o.keep_last, done, &failed)) res.pruned.push_back(std::move(f));
    for (const auto& f : failed)
      if (o.notice) o.notice("--keep-last: cannot remove " + f);
  };
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(mb * Tl)), targets(tokens.size());
  Trace& tr = res.trace;
  if (o.timeline) {  // time 0 of every rank's spans: the same instant, to a barrier's skew
    if (comm && world > 1) comm->barrier();
    tr.enable_spans(Trace::Clock::now());
  }

  for (std::int64_t step = first_step; step < first_step + o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    {
      Trace::Scope acc(&tr, kAccumPhase, ops::grad_accumulate, tensors::grads);  // lower.cpp prices these clears with the sums
      std::fill(gacc.begin(), gacc.end(), Acc(0));
      // the blocks' reduce-scatters clear what the backward writes; the last update left its mean
      // gradient in the owned range
      if (sharded) std::fill(grad.begin() + own.begin, grad.begin() + own.end, 0.0f);
    }
    double loss_sum = 0;  // Σ of this rank's token losses (its vocab shard's targets)
    int data_lost = 0;
    std::fill(buckets.started.begin(), buckets.started.end(), 0);
    for (std::size_t oi = 0; oi < order.size(); ++oi) {
      const PipelinePass pass = order[oi];
      const std::int64_t j = pass.micro;
      if (!pass.forward && sharded) {  // each block's reduce-scatter step adds to the shard and clears its range
        const Trace::PassScope span(&tr, false, j, pass.chunk);
        ex.backward(j, compute_params, grad.data(), &tr, {}, v > 1 ? pass.chunk : -1, &reduce_grads);
        finish_block_reductions();
        continue;
      }
      if (!pass.forward) {
        if (!fused) {
          Trace::Scope acc(&tr, kAccumPhase, ops::grad_accumulate, tensors::grads);  // lower.cpp prices the clear and the sum
          std::fill(grad.begin(), grad.end(), 0.0f);
        }
        // The chunk's last backward of the step: its layers' buckets start as the pass leaves them.
        // From then on the sum skips their ranges (rest): MPI owns them until the step end.
        const bool start = buckets.active && oi == last_backward[static_cast<std::size_t>(pass.chunk)];
        std::function<void(std::int32_t)> layer_done;
        if (start)
          layer_done = [&](std::int32_t l) {
            const Range r = buckets.layer[static_cast<std::size_t>(l)];
            if (!fused) add_gradient(r.begin, r.size());
            buckets.started[static_cast<std::size_t>(l)] = 1;
            ++res.overlapped_buckets;
            buckets.requests.push_back(buckets.group->iallreduce_sum(std::span<Acc>(gacc.data() + r.begin, r.size())));
            mpi::Comm::test_all(buckets.requests);
          };
        {
          const Trace::PassScope span(&tr, false, j, pass.chunk);
          ex.backward(j, compute_params, backward_grad, &tr, layer_done, v > 1 ? pass.chunk : -1);
        }
        if (fused) continue;
        Trace::Scope acc(&tr, kAccumPhase, ops::grad_accumulate, tensors::grads);
        if (buckets.active)
          for (const Range& r : buckets.rest(sl)) add_gradient(r.begin, r.size());
        else
          add_gradient(0, static_cast<std::int64_t>(grad.size()));
        continue;
      }
      // A data file that shrank mid-run: this micro-batch runs on zeros, the step is refused below.
      if (!read_micro_batch(data, step, j, p, first_seq, s0, tokens, targets)) data_lost = 1;
      // Dropout masks hash the seed, the step and each sequence's index in the global batch.
      const Trace::PassScope span(&tr, true, j, pass.chunk);
      loss_sum += ex.forward(j, compute_params, tokens.data(), targets.data(), &tr, BatchIndex{mask_seed, step, first_seq + j * mb},
                             v > 1 ? pass.chunk : -1);
    }
    ex.finish();
    if (o.gradient_hook) {
      if constexpr (std::is_same_v<Acc, double>) {
        o.gradient_hook(step, std::span<double>(gacc));
      } else {  // the hook sees doubles; its changes come back
        std::vector<double> g(gacc.begin(), gacc.end());
        o.gradient_hook(step, std::span<double>(g));
        std::copy(g.begin(), g.end(), gacc.begin());
      }
    }
    // The global mean loss (before the update: a non-finite loss stops or skips it)
    // [1]: ranks whose data file no longer held their tokens — every rank stops alike, no update.
    // [2]: ranks asked to stop (a signal) — every rank stops after this step.
    const bool stop_here = o.stop_requested && o.stop_requested();
    double loss_buf[3] = {loss_sum, double(data_lost), stop_here ? 1.0 : 0.0};
    for (const Step& st : prog.step_end)  // summed over the mesh one axis at a time, as lower.cpp prices it
      if (std::string_view(st.name) == tensors::step_metrics) {
        Trace::Scope sc(&tr, to_string(st.phase), st.op, st.name);
        const StepBytes moved{&tr, st};
        comms.view[st.axis]->allreduce_sum(std::span<double>(loss_buf, 3));
      }
    if (loss_buf[1] > 0) {
      mpi::Comm::wait_all(buckets.requests);  // nothing in flight into gacc while it is released
      throw ConfigError(data.changed_message() + "; stopped before step " + std::to_string(step + 1) + "'s update");
    }
    const double loss = loss_buf[0] / double(G * T);
    // The program's step end: gradient reduction, optimizer, parameter gather (lower.cpp).
    bool scattered = false, grads_reduced = false;  // after the ZeRO reduce-scatter only this rank's part is reduced further
    // The whole local gradient reduce-scattered over fsdp into this rank's owned part of gacc
    // (rs_part is kept between steps: a fresh buffer is page faults inside the timed step).
    auto scatter_whole = [&](const Step& st) {
      rs_part.resize(static_cast<std::size_t>(own.end - own.begin));
      grad_reduce_scatter_v(*comms.view[Axis::fsdp], std::span<const Acc>(gacc), std::span<Acc>(rs_part), own.counts, message_dtype(p, st));
      std::copy(rs_part.begin(), rs_part.end(), gacc.begin() + own.begin);
    };
    if (hooked)  // the reduce-scatter the blocks' steps left to the step end (the hook has seen the local gradient)
      scatter_whole(*std::find_if(prog.backward.begin(), prog.backward.end(),
                                  [](const Step& s_) { return s_.comm == CommKind::reduce_scatter && s_.axis == Axis::fsdp; }));
    scattered = sharded;
    for (const Step& st : prog.step_end) {
      const std::string_view op = st.op;
      // done (and timed) after each micro-batch's backward, and before the update, above
      if (op == ops::grad_accumulate || std::string_view(st.name) == tensors::step_metrics) continue;
      Trace::Scope sc(&tr, to_string(st.phase), st.op, st.name);
      const StepBytes moved{&tr, st};
      const mpi::Comm* c = comms.view[st.axis];
      if (op == ops::all_reduce && std::string_view(st.name) == tensors::grads && buckets.active) {
        // every grads axis at once, at the first of them: the buckets, then the rest
        if (grads_reduced) continue;
        mpi::Comm::wait_all(buckets.requests);
        for (const Range& r : buckets.rest(sl))
          grad_allreduce(*buckets.group, std::span<Acc>(gacc.data() + r.begin, static_cast<std::size_t>(r.size())), message_dtype(p, st));
        grads_reduced = true;
      } else if (op == ops::all_reduce && std::string_view(st.name) == tensors::grads) {
        const std::int64_t b = scattered ? own.begin : 0, e = scattered ? own.end : sl.total;
        grad_allreduce(*c, std::span<Acc>(gacc.data() + b, static_cast<std::size_t>(e - b)), message_dtype(p, st));
      } else if (op == ops::all_reduce && std::string_view(st.name) == tensors::tp_replicated_grads) {
        // rs_ag: whole tensors whose gradient covered this rank's tokens only (its part under ZeRO)
        const std::int64_t b = scattered ? own.begin : 0, e = scattered ? own.end : sl.total;
        for (std::size_t ti = 0; ti < sl.dim.size(); ++ti) {
          if (!stage.held[ti] || !token_partial_grad(m, lay.tensors[ti], p.mesh[Axis::tensor])) continue;
          const std::int64_t lo = std::max(b, sl.offset[ti]), hi = std::min(e, sl.offset[ti] + sl.count(ti));
          if (lo < hi) grad_allreduce(*c, std::span<Acc>(gacc.data() + lo, static_cast<std::size_t>(hi - lo)), message_dtype(p, st));
        }
      } else if (op == ops::all_reduce && std::string_view(st.name) == tensors::tied_embedding_grads) {
        const std::size_t ti = lay.index.at("embed/embed.table");
        grad_allreduce(*tied, std::span<Acc>(gacc.data() + sl.offset[ti], static_cast<std::size_t>(sl.count(ti))), message_dtype(p, st));
      } else if (op == ops::reduce_scatter) {  // ZeRO-1 (the fsdp axis)
        scatter_whole(st);
        scattered = true;
      } else if (op == ops::adamw) {
        // the mean gradient over the global batch, its global norm, and AdamW on the owned part
        const double gscale = double(mb) / double(G);
        for (std::int64_t i = own.begin; i < own.end; ++i) grad[i] = float(double(gacc[i]) * gscale);
        if (o.keep_first_gradients && step == first_step) res.first_gradients = assemble(grad, zero);
        double sq[2] = {0, 0};  // [0] tensor-split parts, [1] tensors every tensor rank holds
        for (std::size_t ti = 0; ti < sl.dim.size(); ++ti) {
          const std::int64_t b = std::max(own.begin, sl.offset[ti]), e = std::min(own.end, sl.offset[ti] + sl.count(ti));
          if (b < e && stage.owned[ti]) sq[sl.dim[ti] < 0 ? 1 : 0] += kernels::sum_squares(grad.data() + b, e - b);
        }
        if (const mpi::Comm* pc = comms.view[Axis::pipeline]) pc->allreduce_sum(std::span<double>(sq, 2));
        if (const mpi::Comm* z = zero ? comms.view[Axis::fsdp] : nullptr) z->allreduce_sum(std::span<double>(sq, 2));
        if (const mpi::Comm* tc = comms.view[Axis::tensor]) {
          double split = sq[0];
          tc->allreduce_sum(std::span<double>(&split, 1));
          sq[0] = split;
        }
        if (!std::isfinite(sq[0] + sq[1]) || !std::isfinite(loss)) {  // the same verdict on every rank
          const std::string why = non_finite_report(step, loss, sq[0] + sq[1], lay, sl, grad, params,
                                                    Range{own.begin, own.end}, stage, comm && world > 1 ? comm : nullptr);
          if (o.on_nan == OnNan::stop)
            throw NumericalError(why + " (stopped: --on-nan stop; earlier checkpoints are intact)");
          res.skipped_steps.push_back(step + 1);
          if (o.notice) o.notice(why + "; the update is skipped (--on-nan skip)");
          continue;
        }
        const float clip = kernels::clip_scale(sq[0] + sq[1], o.adamw.max_grad_norm);
        kernels::AdamW adamw = o.adamw;  // this step's learning rate (× 1 exactly when constant)
        adamw.lr = static_cast<float>(double(o.adamw.lr) * o.schedule.factor(step + 1));
        for (std::size_t ti = 0; ti < sl.dim.size(); ++ti) {
          const std::int64_t b = std::max(own.begin, sl.offset[ti]), e = std::min(own.end, sl.offset[ti] + sl.count(ti));
          if (b >= e || !stage.held[ti]) continue;
          const float wd = lay.tensors[ti].shape.size() >= 2 ? o.adamw.weight_decay : 0.0f;
          kernels::fast::adamw_update(params.data() + b, m1.data() + b, m2.data() + b, grad.data() + b, e - b, step + 1,
                                      adamw, wd, clip);
        }
        refresh_work(own.begin, own.end);  // the bf16 working copy of the owned part
      } else if (op == ops::all_gather && std::string_view(st.name) == tensors::params) {
        if (mixed) Wire(*c, message_dtype(p, st)).allgather_v_inplace(std::span<float>(work), own.counts);  // the working copy, bf16
        else c->allgather_v_inplace(std::span<float>(params), own.counts);
      } else {
        throw std::logic_error(std::string("runner: no meaning for the step-end step '") + st.op + " " + st.name + "'");
      }
    }
    const bool stop = loss_buf[2] > 0, last = stop || step + 1 == first_step + o.steps;
    if (!o.checkpoint_dir.empty() && (last || (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0)))
      save(step + 1);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = double(G * T) / wall;
    mpi::watchdog_note_step(wall);  // a slow step stretches the watchdog's timeout (watchdog.hpp)
    res.losses.push_back(loss);
    res.tokens_per_s.push_back(tps);
    tr.end_step(long(step), wall, loss);
    if (progress) progress(step, loss, tps);
    if (stop && step + 1 < first_step + o.steps) {
      res.stopped_after = step + 1;
      break;
    }
  }
  res.params = assemble(params, !zero3_parts.empty());
  return res;
}
}  // namespace

Result run(const ModelSpec& m, const Plan& p, const Tokens& data, const Options& o, const mpi::Comm* comm,
           const std::function<void(std::int64_t, double, double)>& progress) {
  if (p.grad_dtype == GradDType::fp64) return run_with<double>(m, p, data, o, comm, progress);
  return run_with<float>(m, p, data, o, comm, progress);
}

}  // namespace scanshard::train
