// tests/mpi/test_train.cpp — the runner's central contract (issues 8, 11): for griffin-tiny,
// hawk-tiny, mqa-tiny, the RWKV tiny models and the transformers (transformer-tiny, gpt-tiny), on meshes of the world size over each supported axis alone and in
// combination (data, fsdp with ZeRO 0–3, tensor, sequence with both carry schemes, pipeline
// under GPipe and 1F1B), the loss at
// every step and every parameter after 3 steps equal a single-process reference run (mesh of 1,
// no MPI call) computed on each rank, to relative 1e-5. A mesh the world size cannot form (e.g.
// tensor = 3 for 4 heads) is skipped with a note, never silently passed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <unistd.h>
#include <string>
#include <utility>
#include <vector>

#include "program/param_layout.hpp"
#include "tests/mpi/compare.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "tests/common/checkpoint_edit.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/comm.hpp"
#include "train/executor.hpp"
#include "train/resume.hpp"
#include "train/runner.hpp"

using namespace scanshard;

namespace {

struct Case {
  std::vector<std::pair<Axis, std::int64_t>> mesh;  // axes of the distributed run (sizes multiply to the world)
  std::int64_t seq_len = 16;
  std::int64_t global_batch = 12;  // divisible by 1, 2, 3 and 4 replicas
  std::int64_t micro_batch = 1;    // several micro-batches per replica: gradient accumulation is exercised
  int zero_stage = 0;
  GradientSync sync = GradientSync::every_microbatch;  // ZeRO-2/3: per block and micro-batch, or once per step
  CarryScheme carry = CarryScheme::ring;
  Remat remat = Remat::none;
  Schedule schedule = Schedule::one_f_one_b;
  std::int64_t virtual_stages = 1;  // the distributed run's model chunks per pipeline stage (the reference has one)
  std::int64_t depth = 0;  // > 0: override the preset's depth
  AttentionKernel attention = AttentionKernel::flash;
  std::int64_t window = -1;  // ≥ 0: override the model's attention window
  std::int64_t width = 0, mlp_width = 0, vocab = 0;  // > 0: override the model's (shapes other tensor sizes divide)
  TensorComm tensor_comm = TensorComm::allreduce;
  ScanAlgo scan = ScanAlgo::sequential;  // RWKV-6: chunked lowers to wkv6.chunked
  double dropout = -1;  // ≥ 0: override the model's dropout probability
  std::int64_t ref_micro_batch = 0;  // > 0: the single-process reference's micro-batch (other sequence groupings)
  std::optional<Remat> ref_remat;    // the single-process reference's remat policy (default: the case's)
  // fp64: gradient sums nearly always exact, any split equals the 1-rank run to rounding of the
  // forward and backward alone; fp32 (what most plans say) also rounds the sums split by split
  GradDType grads = GradDType::fp64;
  double tolerance = 1e-5;  // relative, at each tensor's scale
  double loss_tolerance = 0;  // relative, for the losses (0: `tolerance`)
  bool compare_parameters = true;  // the parameters after the steps too (bf16 cases: the gradients instead)
  DType dtype = DType::fp32;  // parameters and activations (the runner executes bf16 when told so)
};

Plan make_plan(const std::string& model, const Case& c, bool distributed) {
  Plan p;
  p.model = model;
  if (distributed) {
    for (auto [a, n] : c.mesh) p.mesh[a] = n;
    p.virtual_stages = c.virtual_stages;
  }
  p.global_batch = c.global_batch;
  p.micro_batch = c.micro_batch;
  p.seq_len = c.seq_len;
  p.zero_stage = c.zero_stage;
  p.gradient_sync = c.sync;
  p.carry = c.carry;
  p.remat = c.remat;
  p.schedule = c.schedule;
  p.attention = c.attention;
  p.tensor_comm = c.tensor_comm;
  p.scan = c.scan;
  p.param_dtype = p.act_dtype = c.dtype;  // fp32 unless the case says bf16 (the plan default is bf16)
  p.grad_dtype = c.grads;
  return p;
}

// The case's overrides of the model's window and shapes.
void reshape(ModelSpec& m, const Case& c) {
  if (c.window >= 0) m.window = c.window;
  if (c.width > 0) m.width = c.width;
  if (c.mlp_width > 0) m.mlp_width = c.mlp_width;
  if (c.vocab > 0) m.vocab = c.vocab;
}

// Back-compatible form: one axis of size n.
Plan tiny_plan(const std::string& model, Axis axis, std::int64_t n) {
  Case c;
  c.mesh = {{axis, n}};
  return make_plan(model, c, true);
}


// `ref_attention`: the attention kernel of the single-process reference (default: the case's own).
void check_case(const std::string& name, const Case& c, std::optional<AttentionKernel> ref_attention = std::nullopt) {
  const auto world = mpi::Comm::world();
  ModelSpec m = load_model(name);
  if (c.depth > 0) m.depth = c.depth;
  reshape(m, c);
  if (c.dropout >= 0) m.dropout = c.dropout;
  const Plan dist_plan = make_plan(name, c, true);
  if (dist_plan.mesh.devices() != world.size()) return;  // this case is for another rank count
  if (const char* why = plan_violation(m, dist_plan, world.size())) {
    WARN(name << " on " << dist_plan.mesh.describe() << ": skipped, the plan is illegal (" << why << ")");
    return;
  }
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  train::Options o;
  o.steps = 3;
  o.seed = 7;
  // With eps = 1e-8, Adam's first steps are ≈ lr·sign(g): a gradient entry that is nearly zero
  // by cancellation flips sign under fp32 rounding of a different (but equally exact) summation
  // order — tensor and sequence splits reorder GEMM and all-reduce sums — and moves its
  // parameter by ±lr. eps = 1e-3 keeps the update a smooth function of the gradient, so the
  // comparison tests that the distributed gradients are right instead of amplifying rounding.
  o.adamw.eps = 1e-3f;
  o.adamw.lr = 1e-2f;
  const auto dist = train::run(m, dist_plan, data, o, &world);
  Plan ref_plan = make_plan(name, c, false);
  if (ref_attention) ref_plan.attention = *ref_attention;
  if (c.ref_micro_batch > 0) ref_plan.micro_batch = c.ref_micro_batch;
  if (c.ref_remat) ref_plan.remat = *c.ref_remat;
  const auto ref = train::run(m, ref_plan, data, o, nullptr);
  REQUIRE(dist.losses.size() == 3);
  for (size_t s = 0; s < 3; ++s) {
    INFO(name << " on " << dist_plan.mesh.describe() << " step " << s << ": " << dist.losses[s] << " vs reference "
              << ref.losses[s]);
    CHECK(close(dist.losses[s], ref.losses[s], c.loss_tolerance > 0 ? c.loss_tolerance : c.tolerance));
  }
  CHECK(ref.losses[2] < ref.losses[0]);  // it learns
  if (c.compare_parameters) compare_params(m, dist.params, ref.params, name + " on " + dist_plan.mesh.describe(), c.tolerance);
}

// The case with one axis of the world's size.
Case one_axis(Axis a, std::int64_t world) {
  Case c;
  c.mesh = {{a, world}};
  return c;
}
// Sequence shards of 32 tokens: griffin-tiny's local-attention window (32) fits in one shard.
Case sequence_case(std::int64_t world, CarryScheme carry) {
  Case c = one_axis(Axis::sequence, world);
  c.seq_len = 32 * world;
  c.global_batch = 4;
  c.micro_batch = 2;
  c.carry = carry;
  return c;
}

// The first step's mean gradient of `c`'s distributed run, reduced in fp32 as a default plan
// does (dtypes: grads: params) and taken before clipping and AdamW (default hyperparameters),
// equals the 1-rank run's to fp32 rounding at each tensor's scale (bf16 cases: to `c.tolerance`,
// the loss to `c.loss_tolerance`). Skipped when `c` is for another world size or illegal.
void check_first_gradients(const std::string& model, Case c) {
  const auto world = mpi::Comm::world();
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  train::Options o;
  o.steps = 1;
  o.seed = 7;
  o.keep_first_gradients = true;
  c.grads = GradDType::params;
  ModelSpec m = load_model(model);
  if (c.depth > 0) m.depth = c.depth;
  reshape(m, c);
  const Plan dist_plan = make_plan(model, c, true);
  if (dist_plan.mesh.devices() != world.size() || plan_violation(m, dist_plan, world.size())) return;
  const auto dist = train::run(m, dist_plan, data, o, &world);
  const auto ref = train::run(m, make_plan(model, c, false), data, o, nullptr);
  REQUIRE(dist.first_gradients.size() == ref.first_gradients.size());
  REQUIRE(!ref.first_gradients.empty());
  const bool bf16 = c.dtype == DType::bf16;
  CHECK(close(dist.losses[0], ref.losses[0], bf16 ? c.loss_tolerance : 1e-5));
  // A tensor whose exact gradient is zero — the attention key bias, since softmax ignores a
  // constant added to every score of a query — holds only the rounding of the terms it sums:
  // compare it at a thousandth of the model's largest gradient rather than its own noise.
  double largest = 0;
  for (float g : ref.first_gradients) largest = std::max(largest, std::abs(double(g)));
  compare_params(m, dist.first_gradients, ref.first_gradients, model + " gradients on " + dist_plan.mesh.describe(), bf16 ? c.tolerance : 1e-5,
                 1e-3 * largest);
}

}  // namespace

TEST_CASE("train: the first step's reduced gradients equal the single-process run's at the default settings", "[train]") {
  // The equality tests above compare parameters after 3 AdamW steps with eps 1e-3 and fp64
  // gradient sums, because Adam's first steps (≈ lr·sign(g) at eps 1e-8) turn a last-bit
  // difference in a near-zero gradient into a ±lr step. The gradients themselves need no such
  // help (check_first_gradients), on every axis.
  const auto w = mpi::Comm::world().size();
  if (w < 2) return;
  struct Named { const char* model; Case c; };
  std::vector<Named> cases = {{"griffin-tiny", one_axis(Axis::data, w)},
                              {"griffin-tiny", sequence_case(w, CarryScheme::ring)},
                              {"gpt-tiny", one_axis(Axis::pipeline, w)},
                              {"rwkv6-tiny", one_axis(Axis::pipeline, w)}};
  Case z = one_axis(Axis::fsdp, w);
  z.zero_stage = 2;
  cases.push_back({"hawk-tiny", z});
  if (w != 3) cases.push_back({"gpt-tiny", one_axis(Axis::tensor, w)});
  for (auto& [model, c] : cases) check_first_gradients(model, c);
}

TEST_CASE("train: data-parallel runs equal the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"griffin-tiny", "hawk-tiny", "mqa-tiny"}) check_case(m, one_axis(Axis::data, w));
}
TEST_CASE("train: gradients reduced in fp32 (dtypes: grads: fp32) equal the single-process run to fp32 rounding", "[train]") {
  // Half the bytes of the fp64 reduction on the wire; the sums are rounded split by split, so the
  // comparison allows 1e-4 (fp64: 1e-5) — and a reduction that dropped a rank's share would be off
  // by far more.
  const auto w = mpi::Comm::world().size();
  Case d = one_axis(Axis::data, w);
  Case z = one_axis(Axis::fsdp, w);
  z.zero_stage = 3;
  Case s = sequence_case(w, CarryScheme::ring);
  for (Case c : {d, z, s}) {
    c.grads = GradDType::fp32;
    c.tolerance = 1e-4;
    check_case("griffin-tiny", c);
  }
}
TEST_CASE("train: bf16 plans equal the single-process bf16 run at bf16 tolerance", "[train][bf16]") {
  // Parameters and activations in bf16 (fp32 master weights, fp32 accumulation), gradients
  // reduced in bf16 (dtypes: grads: params), on 2 ranks over each axis. The two runs round at the
  // same places except the messages: a rank's partial sum or gradient packed to bf16 and each sum
  // rounded again — ≤ 2 roundings of u = 2^-8 (kernels/bf16.hpp) relative to the partials, where
  // the 1-rank run keeps fp32. Tolerances, relative:
  // - the first step's reduced gradients, at each tensor's scale: a gradient's path crosses at
  //   most 12 tensor-parallel messages in griffin-tiny (3 layers × 2 blocks × forward and
  //   backward) plus its own reduction; ≤ 2u each, growing like a random walk, √13·2u ≈ 7u; with a
  //   2x margin 16u ≈ 0.06. A rank's lost or doubled share moves a gradient by 50-100 % of its
  //   tensor's scale.
  // - the losses of 3 steps: every token's logits carry a few u of relative error; 4u bounds
  //   their mean without assuming the tokens' errors cancel.
  // The parameters after AdamW (eps 1e-3, lr 1e-2) are not compared: a gradient within 16u·scale
  // of the reference may still move a near-zero gradient's Adam step by up to lr, so their bound
  // would say nothing the gradients do not; the fp32 cases test the update itself.
  const auto w = mpi::Comm::world().size();
  if (w != 2) return;  // the plans below are 2-rank plans
  const double u = std::ldexp(1.0, -8);
  std::vector<Case> cases;
  for (Axis a : {Axis::data, Axis::tensor, Axis::pipeline}) cases.push_back(one_axis(a, w));
  cases.push_back(sequence_case(w, CarryScheme::ring));
  for (int z : {1, 3}) {
    Case c = one_axis(Axis::fsdp, w);
    c.zero_stage = z;
    cases.push_back(c);
  }
  for (Case c : cases) {
    c.dtype = DType::bf16;
    c.grads = GradDType::params;
    c.tolerance = 16 * u;
    c.loss_tolerance = 4 * u;
    c.compare_parameters = false;
    check_first_gradients("griffin-tiny", c);
    check_case("griffin-tiny", c);
  }
}
TEST_CASE("train: fsdp with ZeRO 0 to 3 equals the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (int z : {0, 1, 2, 3}) {
    Case c = one_axis(Axis::fsdp, w);
    c.zero_stage = z;
    check_case("griffin-tiny", c);
  }
}
TEST_CASE("train: ZeRO-2 and ZeRO-3 with gradient_sync last_microbatch equal the single-process run", "[train]") {
  // The whole local gradient accumulated over the micro-batches (12 sequences, micro-batch 1: 6 per
  // replica at 2 ranks) and reduce-scattered once at the step end; ZeRO-3's parameters kept whole.
  // Tolerances as the ZeRO 0-3 case above (fp64 sums) and the fp32-reduction case (1e-4).
  const auto w = mpi::Comm::world().size();
  for (int z : {2, 3})
    for (GradDType grads : {GradDType::fp64, GradDType::fp32}) {
      Case c = one_axis(Axis::fsdp, w);
      c.zero_stage = z;
      c.sync = GradientSync::last_microbatch;
      c.grads = grads;
      if (grads == GradDType::fp32) c.tolerance = 1e-4;
      check_case("griffin-tiny", c);
    }
  if (w == 4) {  // under a pipeline: each stage's gradient once per step
    Case c;
    c.mesh = {{Axis::fsdp, 2}, {Axis::pipeline, 2}};
    c.zero_stage = 2;
    c.sync = GradientSync::last_microbatch;
    check_case("gpt-tiny", c);
  }
}
TEST_CASE("train: every grad_accumulation the runner executes sums the micro-batches to the one-micro-batch gradient", "[train][grad_accumulation]") {
  // The reference accumulates nothing: one process, one micro-batch holding the whole batch of 12
  // sequences, fp64 sums. Each value runs data = world with 12/world micro-batches of one sequence
  // per replica (fp32 sums), and its first step's reduced gradient must equal the reference's:
  // - fp32 parameters: every value adds the same fp32 gradients, to fp32 rounding (1e-4);
  // - bf16 parameters (mixed), fp32 gradients: the bf16 activations of one micro-batch of 12 and
  //   of 12 of one round differently (3e-3 at the tensor's scale for separate), and hook and
  //   autograd also round each micro-batch's gradient to bf16 (the .grad's dtype) before adding,
  //   ≤ 2^-9 of each term: 1e-2; hook and autograd must differ from separate, which adds it unrounded;
  // - bf16 gradients (dtypes: grads: params): hook and autograd also round the sum to bf16 after
  //   each add (12 roundings of ≤ 2^-9 of the partial sum: 2e-2).
  // A missing or doubled micro-batch is off by 1/12 of the gradient, far beyond each tolerance.
  const auto world = mpi::Comm::world();
  const std::int64_t w = world.size();
  if (12 % w != 0) return;
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  train::Options o;
  o.steps = 1;
  o.seed = 7;
  o.keep_first_gradients = true;
  for (const char* model : {"gpt-tiny", "griffin-tiny"})
    for (DType dtype : {DType::fp32, DType::bf16}) {
      const ModelSpec m = load_model(model);
      Plan ref;
      ref.model = model;
      ref.global_batch = ref.micro_batch = 12;
      ref.seq_len = 16;
      ref.param_dtype = ref.act_dtype = dtype;
      ref.grad_dtype = GradDType::fp64;
      const auto want = train::run(m, ref, data, o, nullptr).first_gradients;
      REQUIRE(!want.empty());
      std::vector<std::vector<float>> got;
      for (GradAccumulation acc : {GradAccumulation::separate, GradAccumulation::hook, GradAccumulation::autograd, GradAccumulation::fused}) {
        Plan p = ref;
        p.mesh[Axis::data] = w;
        p.micro_batch = 1;
        p.grad_dtype = GradDType::fp32;
        p.grad_accumulation = acc;
        const bool rounds = dtype == DType::bf16 && (acc == GradAccumulation::hook || acc == GradAccumulation::autograd);
        const std::string label = std::string(model) + " " + to_string(dtype) + " " + to_string(acc);
        got.push_back(train::run(m, p, data, o, &world).first_gradients);
        compare_params(m, got.back(), want, label, dtype == DType::bf16 ? 1e-2 : 1e-4);
        if (rounds) {  // the sum in bf16 too
          p.grad_dtype = GradDType::params;
          compare_params(m, train::run(m, p, data, o, &world).first_gradients, want, label + " bf16 sum", 2e-2);
        }
      }
      if (dtype == DType::bf16) {  // the rounding happened: hook and autograd differ from separate and fused
        CHECK(got[1] != got[0]);
        CHECK(got[2] == got[1]);
        CHECK(got[3] != got[1]);
      }
    }
}
TEST_CASE("train: grad_accumulation fused is refused when the runner cannot accumulate in the GEMMs", "[train][grad_accumulation]") {
  // The simulator prices these; the runner's kernels add in fp32 and a backward all-reduce of a
  // replicated gradient (gpt-tiny's 2 K/V heads on 4 tensor ranks) would reduce the running sum.
  Plan p;
  p.global_batch = 4;
  p.micro_batch = 1;
  p.seq_len = 16;
  p.grad_accumulation = GradAccumulation::fused;
  const ModelSpec m = load_model("gpt-tiny");
  auto refusal = [&](std::int64_t world) -> std::string {  // the PlanError's key and message
    try {
      train::check_supported(m, p, world);
    } catch (const PlanError& e) {
      return e.key() + ": " + e.what();
    }
    return "";
  };
  CHECK_THAT(refusal(1), Catch::StartsWith("grad_accumulation: ") && Catch::Contains("fp32"));
  p.grad_dtype = GradDType::fp32;
  CHECK_NOTHROW(train::check_supported(m, p, 1));
  p.mesh[Axis::tensor] = 4;
  CHECK_THAT(refusal(4), Catch::StartsWith("grad_accumulation: ") && Catch::Contains("attn.kv_grads"));
  p.mesh[Axis::tensor] = 2;  // 2 K/V heads on 2 ranks: none replicated
  CHECK_NOTHROW(train::check_supported(m, p, 2));
}
TEST_CASE("train: rwkv4-tiny under data tensor fsdp pipeline and sequence equals the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (Axis a : {Axis::data, Axis::tensor, Axis::pipeline}) check_case("rwkv4-tiny", one_axis(a, w));
  Case z = one_axis(Axis::fsdp, w);
  z.zero_stage = 3;
  check_case("rwkv4-tiny", z);
  Case tp;  // tensor × pipeline
  tp.mesh = {{Axis::tensor, 2}, {Axis::pipeline, 2}};
  check_case("rwkv4-tiny", tp);
  // sequence shards of 32 and of 4 tokens: a state that crosses two shards or more (3 and 4
  // ranks: the composition of the chunks' decay summaries) is still in view at 4 tokens
  for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather})
    for (std::int64_t shard : {32, 4}) {
      Case c = sequence_case(w, carry);
      c.seq_len = shard * w;
      check_case("rwkv4-tiny", c);
    }
  Case ts = sequence_case(2, CarryScheme::allgather);  // tensor × sequence
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  check_case("rwkv4-tiny", ts);
}
TEST_CASE("train: rwkv6-tiny under data fsdp and pipeline equals the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (Axis a : {Axis::data, Axis::pipeline}) check_case("rwkv6-tiny", one_axis(a, w));
  Case z = one_axis(Axis::fsdp, w);
  z.zero_stage = 3;
  check_case("rwkv6-tiny", z);
}
TEST_CASE("train: rwkv6-tiny under tensor and sequence equals the single-process run", "[train]") {
  // tensor: 4 WKV heads split by head (decay_b, decay, r, k, v, g, u, GroupNorm), the shift, the
  // LoRAs and the mixes replicated with their partial gradients summed (tm.mu_grads); tensor = 3
  // does not divide the heads and is skipped. sequence: the token-shift halo and the WKV-6
  // state carry (ring and all-gather), under the sequential and the chunked scan. The tiny
  // model's decays are fast (w ≈ e^{−1} per token), so with 32-token shards a state crossing a
  // whole shard arrives scaled by ~e^{−32}, below the tolerance: shards of 4 tokens keep what
  // crosses two shards or more (3 and 4 ranks: the composition of summaries) in view.
  const auto w = mpi::Comm::world().size();
  check_case("rwkv6-tiny", one_axis(Axis::tensor, w));
  for (ScanAlgo scan : {ScanAlgo::sequential, ScanAlgo::chunked})
    for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {
      for (std::int64_t shard : {32, 4}) {
        Case c = sequence_case(w, carry);
        c.seq_len = shard * w;
        c.scan = scan;
        check_case("rwkv6-tiny", c);
      }
    }
  for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {  // tensor × sequence
    Case ts = sequence_case(2, carry);
    ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
    ts.scan = carry == CarryScheme::ring ? ScanAlgo::sequential : ScanAlgo::chunked;
    check_case("rwkv6-tiny", ts);
  }
  Case tp;  // tensor × pipeline
  tp.mesh = {{Axis::tensor, 2}, {Axis::pipeline, 2}};
  check_case("rwkv6-tiny", tp);
  Case ds = sequence_case(2, CarryScheme::ring);  // data × sequence
  ds.mesh = {{Axis::data, 2}, {Axis::sequence, 2}};
  check_case("rwkv6-tiny", ds);
  Case dt;  // data × tensor
  dt.mesh = {{Axis::data, 2}, {Axis::tensor, 2}};
  check_case("rwkv6-tiny", dt);
}
TEST_CASE("train: tensor-parallel runs equal the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"griffin-tiny", "hawk-tiny", "mqa-tiny"}) check_case(m, one_axis(Axis::tensor, w));
}
TEST_CASE("train: sequence-parallel runs with the ring carry equal the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"griffin-tiny", "hawk-tiny", "mqa-tiny"}) check_case(m, sequence_case(w, CarryScheme::ring));
}
TEST_CASE("train: sequence-parallel runs with the all-gather carry equal the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"griffin-tiny", "hawk-tiny"}) check_case(m, sequence_case(w, CarryScheme::allgather));
}
TEST_CASE("train: a local-attention window longer than a sequence shard gathers its K/V halo from every shard it reaches", "[train]") {
  // griffin-tiny (window 32) on shards of 12 tokens and gpt-tiny (window 20) on shards of 8: at
  // 3 and 4 ranks the last shard's window reaches back 2 and 3 shards (the farthest in part,
  // 32 − 24 = 8 and 20 − 16 = 4 rows). Loss and parameters after 3 steps, the blocked and the
  // materialized core, and the first step's gradients at the default settings, against the
  // single-process run.
  const auto w = mpi::Comm::world().size();
  struct Named { const char* model; std::int64_t shard; };
  for (const auto& [model, shard] : {Named{"griffin-tiny", 12}, Named{"gpt-tiny", 8}}) {
    Case c = sequence_case(w, CarryScheme::ring);
    c.seq_len = shard * w;
    if (std::string(model) == "gpt-tiny") c.window = 20;
    check_case(model, c);
    check_first_gradients(model, c);
    Case mat = c;
    mat.attention = AttentionKernel::materialized;  // the masked matrix over every halo row
    check_case(model, mat, AttentionKernel::flash);
  }
}
TEST_CASE("train: hawk-tiny on 4-token sequence shards equals the single-process run", "[train]") {
  // no attention window to fit: shards this short keep the RG-LRU carry that crosses two shards or
  // more (the composed decay products at 3 and 4 ranks) above the tolerance
  const auto w = mpi::Comm::world().size();
  for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {
    Case c = sequence_case(w, carry);
    c.seq_len = 4 * w;
    check_case("hawk-tiny", c);
  }
}
TEST_CASE("train: pipeline stages under GPipe and 1F1B equal the single-process run", "[train]") {
  const auto w = mpi::Comm::world().size();
  for (Schedule sch : {Schedule::gpipe, Schedule::one_f_one_b}) {
    Case c = one_axis(Axis::pipeline, w);
    c.schedule = sch;
    c.depth = w == 3 ? 3 : 4;  // griffin-tiny's pattern (recurrent, recurrent, attention) repeated
    check_case("griffin-tiny", c);
  }
}
TEST_CASE("train: interleaved 1F1B (v model chunks per stage) equals the single-process run", "[train]") {
  // Megatron's interleaved schedule (program/lower.hpp pipeline_schedule; its order and bubble
  // are unit-tested): stage s holds chunks s, s + p, …; stage 0's later chunks receive from the
  // last stage. 12 micro-batches (groups of p; 2p + 1 is an illegal plan); 2 and 3 chunks per
  // stage; uneven chunks (pipeline_chunk_layers); pipeline × data with the per-layer
  // gradient buckets started at each chunk's last backward; pipeline × tensor with Megatron's
  // scatter/gather; RWKV-6; the first step's gradients at the default settings.
  const auto w = mpi::Comm::world().size();
  if (w < 2) return;
  Case c = one_axis(Axis::pipeline, w);
  c.virtual_stages = 2;
  c.depth = 2 * w;
  check_case("gpt-tiny", c);
  check_first_gradients("gpt-tiny", c);
  Case odd = c;  // micro-batches not a multiple of the stages: an illegal plan, refused
  odd.global_batch = 2 * w + 1;
  {
    ModelSpec m = load_model("gpt-tiny");
    m.depth = odd.depth;
    CHECK_THROWS_WITH(train::check_supported(m, make_plan("gpt-tiny", odd, true), w),
                      Catch::Contains("interleaving needs pipeline to divide the micro-batches"));
  }
  Case three = c;
  three.virtual_stages = 3;
  three.depth = 3 * w;
  check_case("griffin-tiny", three);
  Case uneven = c;  // 2w chunks over 2w + 1 layers: one chunk holds two
  uneven.depth = 2 * w + 1;
  check_case("griffin-tiny", uneven);
  Case rwkv = c;
  check_case("rwkv6-tiny", rwkv);
  if (w != 4) return;
  Case pd;  // pipeline × data: the overlapped buckets
  pd.mesh = {{Axis::pipeline, 2}, {Axis::data, 2}};
  pd.virtual_stages = 2;
  check_case("gpt-tiny", pd);
  Case pt = pd;  // pipeline × tensor: scatter/gather transfers
  pt.mesh = {{Axis::pipeline, 2}, {Axis::tensor, 2}};
  check_case("gpt-tiny", pt);
  pt.tensor_comm = TensorComm::rs_ag;
  check_case("gpt-tiny", pt);
  Case pz = pd;  // pipeline × fsdp, ZeRO-3: each chunk's layers gathered before use, and the
  pz.mesh = {{Axis::pipeline, 2}, {Axis::fsdp, 2}};  // tied head's table on the last stage
  pz.zero_stage = 3;
  check_case("gpt-tiny", pz);
  pz.virtual_stages = 1;
  check_case("gpt-tiny", pz);
}
TEST_CASE("train: stages of unequal depth (5 layers on 2-4 stages) equal the single-process run", "[train]") {
  // pipeline_chunk_layers: ceil(5/w) layers per stage, the shortfall at the first and last stage
  // (2+3 on 2 ranks, 1+2+2 on 3, 1+1+2+1 on 4), as Llama 3 splits 126 layers over 16 stages.
  const auto w = mpi::Comm::world().size();
  if (w < 2) return;
  Case c = one_axis(Axis::pipeline, w);
  c.depth = 5;
  check_case("griffin-tiny", c);
}
TEST_CASE("train: two-axis meshes on 4 ranks equal the single-process run", "[train]") {
  Case pd;  // pipeline × data
  pd.mesh = {{Axis::pipeline, 2}, {Axis::data, 2}};
  check_case("hawk-tiny", pd);
  Case pt;  // pipeline × tensor
  pt.mesh = {{Axis::pipeline, 2}, {Axis::tensor, 2}};
  pt.depth = 4;
  check_case("griffin-tiny", pt);
  Case ts = sequence_case(2, CarryScheme::ring);  // tensor × sequence
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  check_case("griffin-tiny", ts);
  Case dt;  // data × tensor
  dt.mesh = {{Axis::data, 2}, {Axis::tensor, 2}};
  check_case("mqa-tiny", dt);
  Case ft;  // fsdp (ZeRO-2) × tensor
  ft.mesh = {{Axis::fsdp, 2}, {Axis::tensor, 2}};
  ft.zero_stage = 2;
  check_case("griffin-tiny", ft);
  Case fs = sequence_case(2, CarryScheme::ring);  // fsdp (ZeRO-3) × sequence
  fs.mesh = {{Axis::fsdp, 2}, {Axis::sequence, 2}};
  fs.zero_stage = 3;
  check_case("griffin-tiny", fs);
  Case ds = sequence_case(2, CarryScheme::allgather);  // data × sequence
  ds.mesh = {{Axis::data, 2}, {Axis::sequence, 2}};
  check_case("hawk-tiny", ds);
}
TEST_CASE("train: transformer-tiny (GQA, SwiGLU, rotary) under data tensor pipeline and sequence equals the single-process run", "[train]") {
  // 4 query heads and 2 K/V heads: tensor 2 splits the K/V heads, tensor 4 replicates them (each
  // pair of tensor ranks shares one K/V head; its gradients are all-reduced, attn.kv_grads).
  const auto w = mpi::Comm::world().size();
  check_case("transformer-tiny", one_axis(Axis::data, w));
  check_case("transformer-tiny", one_axis(Axis::tensor, w));
  Case pp = one_axis(Axis::pipeline, w);
  pp.depth = w == 3 ? 3 : 4;
  check_case("transformer-tiny", pp);
  check_case("transformer-tiny", sequence_case(w, CarryScheme::ring));  // ring attention
  Case dt;  // data × tensor
  dt.mesh = {{Axis::data, 2}, {Axis::tensor, 2}};
  check_case("transformer-tiny", dt);
  Case r = one_axis(w <= 2 ? Axis::tensor : Axis::data, w);
  r.remat = Remat::selective;  // recompute the attention core
  check_case("transformer-tiny", r);
}
TEST_CASE("train: palm-tiny (parallel attention + MLP block, multi-query) under tensor, rs_ag, pipeline and ZeRO-3 equals the single-process run", "[train]") {
  // One LayerNorm feeds both branches; W3 adds the attention branch's partial sums before the one
  // exit (all-reduce, or rs_ag's reduce-scatter), and the input gradient of both branches is
  // reduced once. The single K/V head is replicated over the tensor ranks.
  const auto w = mpi::Comm::world().size();
  if (w != 3) {  // 4 heads and width 128 do not split 3 ways
    check_case("palm-tiny", one_axis(Axis::tensor, w));
    Case rs = one_axis(Axis::tensor, w);
    rs.tensor_comm = TensorComm::rs_ag;
    check_case("palm-tiny", rs);
    Case rsr = rs;  // rs_ag with the layer's entry re-gathered for the weight gradients
    rsr.remat = Remat::selective;
    check_case("palm-tiny", rsr);
  }
  Case pp = one_axis(Axis::pipeline, w);
  pp.depth = w == 4 ? 4 : 3;
  check_case("palm-tiny", pp);
  Case fs = one_axis(Axis::fsdp, w);
  fs.zero_stage = 3;
  check_case("palm-tiny", fs);
}
TEST_CASE("train: gpt-tiny (LayerNorm, GeLU MLP, learned positions, biases, GQA) on every axis equals the single-process run", "[train]") {
  // Column-split biases (bq, bk, bv, b1) are sharded with their weights; the row-split ones (bo,
  // b3) are added once after the all-reduce; the position table is replicated. tensor 4: the two
  // K/V heads (and their biases) replicated over pairs of tensor ranks.
  const auto w = mpi::Comm::world().size();
  check_case("gpt-tiny", one_axis(Axis::data, w));
  check_case("gpt-tiny", one_axis(Axis::tensor, w));
  check_case("gpt-tiny", sequence_case(w, CarryScheme::ring));  // ring attention, positions of each shard
  Case pp = one_axis(Axis::pipeline, w);
  pp.depth = w == 3 ? 3 : 4;
  check_case("gpt-tiny", pp);
  Case z = one_axis(Axis::fsdp, w);
  z.zero_stage = 3;
  check_case("gpt-tiny", z);
  Case tp;  // tensor × pipeline: the tied table and the position table on different stages
  tp.mesh = {{Axis::tensor, 2}, {Axis::pipeline, 2}};
  check_case("gpt-tiny", tp);
  Case ts = sequence_case(2, CarryScheme::ring);  // tensor × sequence
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  check_case("gpt-tiny", ts);
  Case r = one_axis(w <= 2 ? Axis::tensor : Axis::data, w);
  r.remat = Remat::block;  // the whole layer recomputed: projections rewrite the attention inputs
  check_case("gpt-tiny", r);
}
TEST_CASE("train: gpt-tiny with dropout 0.1 under data tensor sequence pipeline ZeRO-3 rs_ag and remat equals the single-process run", "[train][dropout]") {
  // The masks hash global indices (kernels/dropout.hpp): the sequence's index in the global batch
  // (data / fsdp replicas, micro-batches), its global position (sequence shards, rs_ag's n/t
  // tokens), the layer (pipeline stages), the step; recompute (remat) redraws the same masks; a
  // materialized core drops probabilities indexed by global head (tensor) and key (ring) position.
  const auto w = mpi::Comm::world().size();
  // The reference groups the sequences in micro-batches of 4 (the distributed runs: 1 or 2), so a
  // mask keyed by an index local to the micro-batch or the replica differs.
  auto drop = [](Case c) { c.dropout = 0.1; c.ref_micro_batch = c.global_batch % 4 == 0 ? 4 : 0; return c; };
  check_case("gpt-tiny", drop(one_axis(Axis::data, w)));
  check_case("gpt-tiny", drop(one_axis(Axis::tensor, w)));
  check_case("gpt-tiny", drop(sequence_case(w, CarryScheme::ring)));
  Case pp = drop(one_axis(Axis::pipeline, w));
  pp.depth = w == 3 ? 3 : 4;
  check_case("gpt-tiny", pp);
  Case z = drop(one_axis(Axis::fsdp, w));
  z.zero_stage = 3;
  z.micro_batch = 2;  // two sequences per micro-batch
  z.global_batch = 24;  // 2, 3 and 4 replicas of whole micro-batches
  check_case("gpt-tiny", z);
  Case rs = drop(one_axis(Axis::tensor, w));
  rs.tensor_comm = TensorComm::rs_ag;
  check_case("gpt-tiny", rs);
  for (Remat r : {Remat::block, Remat::elementwise}) {
    Case rm = drop(one_axis(w <= 2 ? Axis::tensor : Axis::data, w));
    rm.remat = r;
    check_case("gpt-tiny", rm);
  }
  Case rsr = rs;  // rs_ag and the whole layer recomputed
  rsr.remat = Remat::block;
  check_case("gpt-tiny", rsr);
  Case ts = drop(sequence_case(2, CarryScheme::ring));  // tensor × sequence
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  check_case("gpt-tiny", ts);
  // materialized attention: the probability matrix dropped too (the reference materializes as well)
  for (Case c : {drop(one_axis(Axis::tensor, w)), drop(sequence_case(w, CarryScheme::ring))}) {
    c.attention = AttentionKernel::materialized;
    check_case("gpt-tiny", c);
  }
  Case ms = drop(one_axis(Axis::data, w));
  ms.attention = AttentionKernel::materialized;
  ms.remat = Remat::selective;  // the matrix and its mask recomputed
  check_case("gpt-tiny", ms);
  // the blocked (flash) core drops the probabilities with the same mask, regenerated in backward:
  // against a materialized reference, which draws and keeps it element by element — one model
  // whichever kernel the plan names
  for (Case c : {drop(one_axis(Axis::data, w)), drop(one_axis(Axis::tensor, w)), drop(sequence_case(w, CarryScheme::ring))})
    check_case("gpt-tiny", c, AttentionKernel::materialized);
}
TEST_CASE("train: a local-attention gpt-tiny (window 24) under data tensor and sequence equals the single-process run", "[train]") {
  // Sequence shards of 32 tokens: the K/V halo of 24 rows from the left neighbour.
  const auto w = mpi::Comm::world().size();
  for (Case c : {one_axis(Axis::data, w), one_axis(Axis::tensor, w), sequence_case(w, CarryScheme::ring)}) {
    c.window = 24;
    check_case("gpt-tiny", c);
  }
  Case m = sequence_case(w, CarryScheme::ring);
  m.window = 24;
  m.attention = AttentionKernel::materialized;  // the masked matrix over halo + local keys
  check_case("gpt-tiny", m, AttentionKernel::flash);
}
TEST_CASE("train: tensor_comm rs_ag (Megatron sequence parallelism) equals the single-process run", "[train]") {
  // The distributed run shards the token-wise regions over the tensor ranks (reduce-scatter /
  // all-gather pairs, replicated gradients all-reduced at the step end); the reference has no
  // tensor axis. Pipeline and sequence shards of n/t tokens, and every remat policy's recompute.
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"gpt-tiny", "transformer-tiny", "griffin-tiny", "mqa-tiny"}) {
    Case c = one_axis(Axis::tensor, w);
    c.tensor_comm = TensorComm::rs_ag;
    check_case(m, c);
  }
  for (Remat r : {Remat::selective, Remat::elementwise, Remat::block}) {
    Case c = one_axis(Axis::tensor, w);
    c.tensor_comm = TensorComm::rs_ag;
    c.remat = r;
    check_case("gpt-tiny", c);
  }
  Case tp;  // tensor × pipeline: stages exchange n/t tokens
  tp.mesh = {{Axis::tensor, 2}, {Axis::pipeline, 2}};
  tp.tensor_comm = TensorComm::rs_ag;
  check_case("gpt-tiny", tp);
  Case ts = sequence_case(2, CarryScheme::ring);  // tensor × sequence
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  ts.tensor_comm = TensorComm::rs_ag;
  check_case("gpt-tiny", ts);
  check_case("griffin-tiny", ts);
  Case ft;  // fsdp (ZeRO-2) × tensor: the replicated gradients reduced on each rank's part
  ft.mesh = {{Axis::fsdp, 2}, {Axis::tensor, 2}};
  ft.zero_stage = 2;
  ft.tensor_comm = TensorComm::rs_ag;
  check_case("gpt-tiny", ft);
}
TEST_CASE("train: tensor_comm rs_ag for RWKV and for a vocabulary the tensor size does not divide equals the single-process run", "[train]") {
  // RWKV under rs_ag: the channel mix's gated output is gathered by channels, the residual keeps
  // this rank's tokens and backward gathers their gradient by tokens (lower.cpp cm.out_grad).
  // A vocabulary of 257 splits into uneven shards at every tensor size; under ZeRO the flat
  // buffer's padding keeps the replicated tensors at the same offsets on every tensor rank.
  // Width 96 (MLP 384) lets RWKV-4 run at 3 tensor ranks; RWKV-6 (heads of 32) at 3 only.
  const auto w = mpi::Comm::world().size();
  auto rs = [](Case c) { c.tensor_comm = TensorComm::rs_ag; return c; };
  for (const char* m : {"rwkv4-tiny", "rwkv6-tiny"})
    if (w != 3) check_case(m, rs(one_axis(Axis::tensor, w)));
  Case narrow = rs(one_axis(Axis::tensor, w));
  narrow.width = 96;
  narrow.mlp_width = 384;
  narrow.seq_len = 24;  // rs_ag splits a micro-batch's tokens: 24 over 2, 3 or 4 ranks
  check_case("rwkv4-tiny", narrow);
  if (w == 3) check_case("rwkv6-tiny", narrow);
  Case odd = narrow;  // uneven vocabulary shards: 257 = 129 + 128, 86 + 86 + 85, 65 + 64 + 64 + 64
  odd.vocab = 257;
  check_case("rwkv4-tiny", odd);
  Case gpt_odd = rs(one_axis(Axis::tensor, w));
  gpt_odd.vocab = 257;
  if (w != 3) check_case("gpt-tiny", gpt_odd);
  // at the default settings: the first step's gradients
  if (w != 3) check_first_gradients("rwkv6-tiny", rs(one_axis(Axis::tensor, w)));
  check_first_gradients("rwkv4-tiny", odd);
  if (w != 4) return;
  for (int zero : {2, 3}) {  // fsdp × tensor: ZeRO parts of uneven vocabulary shards
    Case ft = gpt_odd;
    ft.mesh = {{Axis::fsdp, 2}, {Axis::tensor, 2}};
    ft.zero_stage = zero;
    check_case("gpt-tiny", ft);
    ft.vocab = 0;
    check_case("rwkv4-tiny", ft);
  }
  Case tp = rs(Case{});  // RWKV tensor × pipeline: stages exchange n/t tokens
  tp.mesh = {{Axis::tensor, 2}, {Axis::pipeline, 2}};
  check_case("rwkv6-tiny", tp);
  Case ts = rs(sequence_case(2, CarryScheme::ring));  // RWKV tensor × sequence: token-shift halos and WKV carries
  ts.mesh = {{Axis::tensor, 2}, {Axis::sequence, 2}};
  ts.seq_len = 8;
  check_case("rwkv4-tiny", ts);
}
TEST_CASE("train: every tensor rank lays its shards out at the same offsets with an uneven vocabulary padded", "[train]") {
  // tp.replicated_grads sums a ZeRO part of each whole tensor over the tensor ranks: the part must
  // cover the same elements everywhere, so a tensor starts at the same offset on every tensor rank
  // even when the vocabulary splits unevenly (257 rows: 86 + 86 + 85 on 3 ranks).
  ModelSpec m = load_model("rwkv4-tiny");
  m.width = 96;
  m.mlp_width = 384;
  m.vocab = 257;
  const Layout lay(m);
  for (std::int64_t t : {2, 3, 4}) {
    const train::ShardLayout first(m, lay, t, 0);
    for (std::int64_t r = 1; r < t; ++r) {
      const train::ShardLayout other(m, lay, t, r);
      INFO("tensor " << t << " rank " << r);
      CHECK(other.offset == first.offset);
      CHECK(other.total == first.total);
      for (std::size_t i = 0; i < lay.tensors.size(); ++i)
        if (other.dim[i] < 0) CHECK(other.count(i) == lay.tensors[i].count());
    }
    const std::size_t table = lay.index.at("embed/embed.table");  // each rank its own rows, the slots of the largest
    for (std::int64_t r = 0; r < t; ++r)
      CHECK(train::ShardLayout(m, lay, t, r).count(table) == split_range(257, t, r).size() * 96);
    CHECK(first.offset[table + 1] - first.offset[table] == (257 + t - 1) / t * 96);
  }
}
TEST_CASE("train: materialized attention (the whole probability matrix kept) equals the single-process run", "[train]") {
  // The distributed run materialises; the reference is the flash (blockwise) single-process run.
  const auto w = mpi::Comm::world().size();
  for (const char* m : {"gpt-tiny", "griffin-tiny"}) {
    Case d = one_axis(Axis::data, w);
    d.attention = AttentionKernel::materialized;
    check_case(m, d, AttentionKernel::flash);
    Case t = one_axis(Axis::tensor, w);
    t.attention = AttentionKernel::materialized;
    check_case(m, t, AttentionKernel::flash);
    Case sq = sequence_case(w, CarryScheme::ring);  // ring attention (gpt-tiny), K/V halo (griffin-tiny)
    sq.attention = AttentionKernel::materialized;
    check_case(m, sq, AttentionKernel::flash);
    Case r = one_axis(Axis::data, w);
    r.attention = AttentionKernel::materialized;
    r.remat = Remat::selective;  // recompute the matrix
    check_case(m, r, AttentionKernel::flash);
  }
  // The trace names the two materialized steps (the matrix, then P·V) and not the flash kernel.
  Case one = one_axis(Axis::data, 1);
  one.attention = AttentionKernel::materialized;
  train::Options o;
  o.steps = 1;
  const Plan pl = make_plan("gpt-tiny", one, false);
  const auto res = train::run(load_model("gpt-tiny"), pl, train::load_bytes(train::default_corpus_path(), 1000), o, nullptr);
  REQUIRE(res.trace.steps().size() == 1);
  const auto& cells = res.trace.steps()[0].cells;
  for (const char* phase : {"forward", "backward"})
    for (const char* op : {"attention.scores", "attention.context"}) {
      INFO(phase << " " << op);
      REQUIRE(cells.count({phase, op, "attn.core"}));
      CHECK(cells.at({phase, op, "attn.core"}).calls == 4 * pl.micro_batches());  // per layer and micro-batch
    }
  CHECK(!cells.count({"forward", "attention.global", "attn.core"}));
}
TEST_CASE("train: logit_metrics runs the train metrics over the logits and leaves the run unchanged", "[train]") {
  // Plan::logit_metrics: each micro-batch's forward computes that many more cross-entropies over
  // the logits into buffers of their own (under tensor parallelism from the merged statistics),
  // before the loss normalises the logits in place. The losses stay bitwise the same; the trace
  // counts the metric calls.
  const auto w = mpi::Comm::world().size();
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model("gpt-tiny");
  const Plan base = make_plan("gpt-tiny", one_axis(w > 1 ? Axis::tensor : Axis::data, w), true);
  if (base.mesh.devices() != w || plan_violation(m, base, w)) return;
  Plan with = base;
  with.logit_metrics = 2;
  train::Options o;
  o.steps = 2;
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  const auto a = train::run(m, base, data, o, &world);
  const auto b = train::run(m, with, data, o, &world);
  REQUIRE(a.losses.size() == 2);
  REQUIRE(b.losses.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) CHECK(a.losses[i] == b.losses[i]);
  const auto& cells = b.trace.steps()[0].cells;
  REQUIRE(cells.count({"forward", "metric_xent", "loss"}));
  CHECK(cells.at({"forward", "metric_xent", "loss"}).calls == 2 * with.micro_batches());
  CHECK(!a.trace.steps()[0].cells.count({"forward", "metric_xent", "loss"}));
}
TEST_CASE("train: remat policies recompute without changing the result", "[train]") {
  // Against a single-process run that keeps every activation (remat: none): recomputation must
  // reproduce what was kept, on griffin-tiny (local attention, RG-LRU) and gpt-tiny (dropout masks
  // redrawn in recompute, LayerNorm, GeLU) and rwkv4-tiny (the WKV forward's checkpoints for its
  // backward, rewritten by a recompute; 32-token shards hold one).
  const auto w = mpi::Comm::world().size();
  for (const char* model : {"griffin-tiny", "gpt-tiny", "rwkv4-tiny"})
    for (Remat r : {Remat::selective, Remat::elementwise, Remat::block}) {
      Case c = w == 1 ? one_axis(Axis::data, 1) : sequence_case(w, CarryScheme::allgather);
      c.remat = r;
      c.ref_remat = Remat::none;
      if (std::string(model) == "gpt-tiny") c.dropout = 0.1;
      check_case(model, c);
    }
}
namespace {
// A fresh directory every rank names alike (rank 0's pid), created before anyone uses it.
std::string shared_temp_dir(const mpi::Comm& world, const std::string& prefix) {
  std::int64_t id[1] = {static_cast<std::int64_t>(::getpid())};
  world.broadcast(std::span<std::int64_t>(id, 1), 0);
  const std::string dir = "/tmp/" + prefix + std::to_string(id[0]);
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  world.barrier();
  return dir;
}
train::Options resume_options() {
  train::Options o;
  o.seed = 7;
  o.adamw.eps = 1e-3f;  // see check_case
  o.adamw.lr = 1e-2f;
  return o;
}
// A run resumed at step 2 for 2 steps against 4 uninterrupted steps: losses and parameters.
void check_resumed(const ModelSpec& m, const train::Result& r, const train::Result& ref, const std::string& where) {
  REQUIRE(r.losses.size() == 2);
  for (size_t s = 0; s < 2; ++s) {
    INFO(m.name << " resumed " << where << " step " << s + 2 << ": " << r.losses[s] << " vs uninterrupted " << ref.losses[s + 2]);
    CHECK(close(r.losses[s], ref.losses[s + 2], 1e-5));
  }
  compare_params(m, r.params, ref.params, m.name + " resumed " + where);
}

// 2 steps under `before`, checkpoint, resume under `after` for 2 steps == 4 uninterrupted steps.
void resume_case(const std::string& model, const Case& before, const Case& after, double dropout = 0) {
  const auto world = mpi::Comm::world();
  ModelSpec m = load_model(model);
  m.dropout = dropout;
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  const std::string dir = shared_temp_dir(world, "scanshard-resume-");
  train::Options o = resume_options();
  o.steps = 4;
  const auto ref = train::run(m, make_plan(model, before, false), data, o, nullptr);
  o.steps = 2;
  o.checkpoint_dir = dir;
  const auto first = train::run(m, make_plan(model, before, true), data, o, &world);
  REQUIRE(first.checkpoints == std::vector<std::string>{dir + "/" + train::step_file_name(2)});
  o.checkpoint_dir.clear();
  o.resume = dir + "/" + train::step_file_name(2);
  o.seed = 999;  // ignored: parameters and the dropout masks' seed come from the checkpoint
  const auto second = train::run(m, make_plan(model, after, true), data, o, &world);
  CHECK(second.first_step == 2);
  check_resumed(m, second, ref, "on " + make_plan(model, after, true).mesh.describe());
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}
}  // namespace

TEST_CASE("train: 2 steps then checkpoint then resume under another plan for 2 steps equals 4 steps", "[train]") {
  const auto w = mpi::Comm::world().size();
  Case before = one_axis(Axis::data, w), after = one_axis(Axis::tensor, w);
  if (w == 3) after = one_axis(Axis::fsdp, 3), after.zero_stage = 2;  // tensor = 3 does not divide 4 heads
  resume_case("griffin-tiny", before, after);
  // gpt-tiny: biases, LayerNorms and the position table written from tensor shards (tensor 4:
  // replicated K/V heads) and read back whole on data ranks
  if (w == 3) resume_case("gpt-tiny", after, before);
  else resume_case("gpt-tiny", one_axis(Axis::tensor, w), before);
}
TEST_CASE("train: a checkpoint written on 2 ranks resumes on 1 rank and on every rank of the world", "[train]") {
  // Checkpoints hold full logical tensors (DESIGN §6): the writer's rank count must not matter.
  // Ranks 0-1 write under data = 2 (the others wait), then the run resumes once on rank 0 alone
  // and once on all ranks under tensor sharding; both equal 4 uninterrupted steps.
  const auto world = mpi::Comm::world();
  const auto w = world.size();
  if (w < 2) return;
  const std::string model = "griffin-tiny";
  const ModelSpec m = load_model(model);
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  const std::string dir = shared_temp_dir(world, "scanshard-ranks-");
  train::Options o = resume_options();
  o.steps = 4;
  const auto ref = train::run(m, make_plan(model, one_axis(Axis::data, 1), false), data, o, nullptr);
  const mpi::Comm pair = world.split(world.rank() < 2 ? 0 : 1, world.rank());
  o.steps = 2;
  o.checkpoint_dir = dir;
  if (world.rank() < 2) train::run(m, make_plan(model, one_axis(Axis::data, 2), true), data, o, &pair);
  world.barrier();
  o.checkpoint_dir.clear();
  o.resume = dir + "/" + train::step_file_name(2);
  if (world.rank() == 0) check_resumed(m, train::run(m, make_plan(model, one_axis(Axis::data, 1), false), data, o, nullptr), ref, "on 1 rank");
  world.barrier();
  Case all = one_axis(w == 3 ? Axis::fsdp : Axis::tensor, w);  // tensor = 3 does not divide 4 heads
  check_resumed(m, train::run(m, make_plan(model, all, true), data, o, &world), ref, "on " + std::to_string(w) + " ranks");
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}
TEST_CASE("train: gpt-tiny with dropout resumed under another plan draws the uninterrupted run's masks", "[train][dropout]") {
  const auto w = mpi::Comm::world().size();
  Case before = one_axis(Axis::data, w), after = one_axis(Axis::tensor, w);
  if (w == 3) after = one_axis(Axis::fsdp, 3), after.zero_stage = 2;  // tensor = 3 does not divide 4 heads
  resume_case("gpt-tiny", before, after, 0.1);
}
TEST_CASE("train: resuming from a checkpoint of another model is a ConfigError on every rank", "[train]") {
  const auto world = mpi::Comm::world();
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  std::int64_t id[1] = {static_cast<std::int64_t>(::getpid())};
  world.broadcast(std::span<std::int64_t>(id, 1), 0);
  const std::string dir = "/tmp/scanshard-other-" + std::to_string(id[0]);
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  world.barrier();
  train::Options o;
  o.steps = 1;
  o.checkpoint_dir = dir;
  train::run(load_model("hawk-tiny"), make_plan("hawk-tiny", one_axis(Axis::data, world.size()), true), data, o, &world);
  o.checkpoint_dir.clear();
  o.resume = dir + "/" + train::step_file_name(1);
  CHECK_THROWS_AS(train::run(load_model("griffin-tiny"), make_plan("griffin-tiny", one_axis(Axis::data, world.size()), true),
                             data, o, &world),
                  ConfigError);
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}
TEST_CASE("train: mesh size different from the world size is a PlanError", "[train]") {
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model("griffin-tiny");
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  CHECK_THROWS_AS(train::run(m, tiny_plan("griffin-tiny", Axis::data, world.size() + 1), data, {}, &world), PlanError);
  // RWKV-6 runs under tensor and sequence sharding, and under tensor_comm rs_ag.
  CHECK_NOTHROW(train::check_supported(load_model("rwkv6-tiny"), tiny_plan("rwkv6-tiny", Axis::tensor, 2), 2));
  CHECK_NOTHROW(train::check_supported(load_model("rwkv6-tiny"), tiny_plan("rwkv6-tiny", Axis::sequence, 2), 2));
  Plan rs = tiny_plan("rwkv6-tiny", Axis::tensor, 2);
  rs.tensor_comm = TensorComm::rs_ag;
  CHECK_NOTHROW(train::check_supported(load_model("rwkv6-tiny"), rs, 2));
  // Dropout is supported (its own test case below); a learned position table shorter than the
  // sequence is a plan error.
  ModelSpec drop = load_model("gpt-tiny");
  drop.dropout = 0.1;
  CHECK_NOTHROW(train::check_supported(drop, tiny_plan("gpt-tiny", Axis::data, 1), 1));
  Plan longer = tiny_plan("gpt-tiny", Axis::data, 1);
  longer.seq_len = 129;
  CHECK_THROWS_WITH(train::check_supported(load_model("gpt-tiny"), longer, 1), Catch::Contains("max_positions 128"));
  CHECK_NOTHROW(train::check_supported(load_model("gpt-tiny"), tiny_plan("gpt-tiny", Axis::tensor, 4), 4));
}
TEST_CASE("train: token files in bytes uint16 and uint32 load as written and bad ones are ConfigErrors", "[train]") {
  const auto world = mpi::Comm::world();
  const std::string dir = "/tmp/scanshard-tokens-" + std::to_string(::getpid());  // per rank: no sharing
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::vector<std::uint8_t>& bytes) {
    std::ofstream f(dir + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return dir + "/" + name;
  };
  // little-endian by hand: 1, 258 (= 0x0102), 65535
  const auto u16 = write("t.u16", {1, 0, 2, 1, 255, 255});
  CHECK(train::load_tokens(u16, train::TokenFormat::uint16, 3, 65536) == std::vector<std::int32_t>{1, 258, 65535});
  const auto u32 = write("t.u32", {7, 0, 0, 0, 0, 0, 1, 0});
  CHECK(train::load_tokens(u32, train::TokenFormat::uint32, 2, 100000) == std::vector<std::int32_t>{7, 65536});
  const auto txt = write("t.txt", {'a', 'b', 'c'});
  CHECK(train::load_tokens(txt, train::TokenFormat::bytes, 3, 256) == std::vector<std::int32_t>{'a', 'b', 'c'});
  auto message = [](const std::function<void()>& f) {
    try { f(); } catch (const ConfigError& e) { return std::string(e.what()); }
    return std::string("no error");
  };
  CHECK_THAT(message([&] { train::load_tokens(write("odd.u16", {1, 0, 2}), train::TokenFormat::uint16, 1, 256); }),
             Catch::Contains("3 bytes is not a whole number of uint16 tokens"));
  CHECK_THAT(message([&] { train::load_tokens(u16, train::TokenFormat::uint16, 1, 1000); }),
             Catch::Contains("token 65535 at position 2 is outside the model's vocabulary of 1000"));
  CHECK_THAT(message([&] { train::load_tokens(write("empty", {}), train::TokenFormat::bytes, 1, 256); }),
             Catch::Contains("is empty"));
  CHECK_THAT(message([&] { train::load_tokens(u16, train::TokenFormat::uint16, 10, 65536); }),
             Catch::Contains("has 3 tokens; one sequence needs 10"));
  CHECK_THAT(message([&] { train::parse_token_format("int8"); }),
             Catch::Contains("--data-format: unknown value 'int8' (one of: bytes, uint16, uint32)"));
  std::filesystem::remove_all(dir);
}
TEST_CASE("train: a NaN gradient on one rank stops every rank naming the step and the first bad tensor", "[train][nan]") {
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model("griffin-tiny");
  const Layout lay(m);
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  Case c = one_axis(Axis::fsdp, world.size());
  c.zero_stage = 2;  // the bad values reach the owners through the reduce-scatter
  train::Options o;
  o.steps = 3;
  // The last rank poisons two tensors in step 2 (index 1): a NaN in layer 1's mlp.w2 and an Inf in
  // the later layer 2's mlp.w3. The message names the earlier one first, on every rank.
  const std::size_t first = lay.index.at("layer.1/mlp.w2"), later = lay.index.at("layer.2/mlp.w3");
  o.gradient_hook = [&](std::int64_t step, std::span<double> g) {
    if (step != 1 || world.rank() != world.size() - 1) return;
    g[static_cast<std::size_t>(lay.offset[first] + 5)] = std::nan("");
    g[static_cast<std::size_t>(lay.offset[later])] = HUGE_VAL;
  };
  std::string message;
  try {
    train::run(m, make_plan("griffin-tiny", c, true), data, o, &world);
  } catch (const train::NumericalError& e) {
    message = e.what();
  }
  INFO("rank " << world.rank() << ": '" << message << "'");
  CHECK(message.find("step 2:") != std::string::npos);
  CHECK(message.find("first non-finite gradient: layer.1/mlp.w2 (and 1 more)") != std::string::npos);
  CHECK(message.find("first non-finite parameter") == std::string::npos);  // the parameters are still finite
}
TEST_CASE("train: --on-nan skip drops the bad step's update and keeps training", "[train][nan]") {
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model("griffin-tiny");
  const Layout lay(m);
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  const Case c = one_axis(Axis::data, world.size());
  train::Options o;
  o.seed = 7;
  o.steps = 1;
  const auto one = train::run(m, make_plan("griffin-tiny", c, false), data, o, nullptr);
  o.steps = 2;
  const auto clean = train::run(m, make_plan("griffin-tiny", c, false), data, o, nullptr);
  o.on_nan = train::OnNan::skip;
  int notices = 0;
  o.notice = [&](const std::string& line) {
    ++notices;
    CHECK(line.find("step 2:") != std::string::npos);
    CHECK(line.find("layer.0/mlp.w1") != std::string::npos);
  };
  o.gradient_hook = [&](std::int64_t step, std::span<double> g) {
    if (step == 1 && world.rank() == 0) g[static_cast<std::size_t>(lay.offset[lay.index.at("layer.0/mlp.w1")])] = -HUGE_VAL;
  };
  const auto skipped = train::run(m, make_plan("griffin-tiny", c, true), data, o, &world);
  CHECK(notices == 1);
  CHECK(skipped.skipped_steps == std::vector<std::int64_t>{2});
  REQUIRE(skipped.losses.size() == 2);
  // The losses are computed before the update: both equal the clean run's; the parameters after
  // the skipped step are those after step 1 (no update, moments untouched).
  CHECK(close(skipped.losses[0], clean.losses[0], 1e-5));
  CHECK(close(skipped.losses[1], clean.losses[1], 1e-5));
  compare_params(m, skipped.params, one.params, "step 2 skipped");
  CHECK(train::parse_on_nan("skip") == train::OnNan::skip);
  CHECK_THROWS_AS(train::parse_on_nan("ignore"), ConfigError);
}
TEST_CASE("train: the overlapped per-layer gradient all-reduce equals the reduction at the step end", "[train]") {
  const auto world = mpi::Comm::world();
  const auto w = world.size();
  // data alone, and (4 ranks) data × sequence, where one bucket spans both axes
  std::vector<Case> cases{one_axis(Axis::data, w)};
  if (w == 4) {
    Case c = sequence_case(2, CarryScheme::ring);
    c.mesh = {{Axis::data, 2}, {Axis::sequence, 2}};
    cases.push_back(c);
  }
  const ModelSpec m = load_model("griffin-tiny");
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  for (const Case& c : cases) {
    train::Options o;
    o.steps = 2;
    o.seed = 7;
    o.adamw.eps = 1e-3f;  // see check_case
    o.adamw.lr = 1e-2f;
    Plan p = make_plan("griffin-tiny", c, true);
    p.overlap = true;
    const auto overlapped = train::run(m, p, data, o, &world);
    p.overlap = false;
    const auto at_end = train::run(m, p, data, o, &world);
    const auto ref = train::run(m, make_plan("griffin-tiny", c, false), data, o, nullptr);
    // one bucket per layer per step when there is anything to reduce
    CHECK(overlapped.overlapped_buckets == (w > 1 ? 2 * m.depth : 0));
    CHECK(at_end.overlapped_buckets == 0);
    for (std::size_t s = 0; s < 2; ++s) {
      CHECK(close(overlapped.losses[s], at_end.losses[s], 1e-5));
      CHECK(close(overlapped.losses[s], ref.losses[s], 1e-5));
    }
    compare_params(m, overlapped.params, at_end.params, "overlapped vs at the step end on " + p.mesh.describe());
    compare_params(m, overlapped.params, ref.params, "overlapped vs 1 rank on " + p.mesh.describe());
  }
}
TEST_CASE("train: a token file is read in slices and a bad token is found by the rank that holds it", "[train]") {
  const auto world = mpi::Comm::world();
  std::int64_t id[1] = {static_cast<std::int64_t>(::getpid())};
  world.broadcast(std::span<std::int64_t>(id, 1), 0);
  const std::string path = "/tmp/scanshard-tokens-" + std::to_string(id[0]) + ".u16";
  // 100 uint16 tokens 0..99 with two out-of-vocab ids (≥ 256) at 61 and 97: the last rank's slice
  // holds 97, an earlier one 61; every rank must report 61, the first.
  if (world.rank() == 0) {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 100; ++i) {
      const std::uint16_t v = i == 61 ? 300 : i == 97 ? 4000 : static_cast<std::uint16_t>(i);
      f.put(static_cast<char>(v & 0xff)).put(static_cast<char>(v >> 8));
    }
  }
  world.barrier();
  const auto t = train::Tokens::open_file(path, train::TokenFormat::uint16, 18);
  CHECK(t.size() == 100);
  CHECK(t[5] == 5);
  CHECK(t[97] == 4000);  // little-endian decoding straight from the file
  std::string message;
  try {
    t.check_vocab(256, &world);
  } catch (const ConfigError& e) {
    message = e.what();
  }
  INFO(message);
  CHECK_THAT(message, Catch::Contains("token 300 at position 61 is outside the model's vocabulary of 256"));
  CHECK_NOTHROW(t.check_vocab(4001, &world));
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);
}
TEST_CASE("train: a data file truncated during the run stops every rank with an input error, no SIGBUS", "[train][data]") {
  // 16384 byte tokens, sequences of 255 + 1 tokens, 12 per step: step 1 (the second) reads
  // sequences 12..23 at offsets 3072..5888. Rank 0 truncates the file to 4096 bytes in step 0's
  // gradient hook, before the gradient reduction every rank waits for, so no rank has read step 1
  // yet: sequences from offset 4096 on (the 5th of step 1 and later, on the last rank at least)
  // are gone. A memory-mapped reader died of SIGBUS there; every rank must now stop with a
  // ConfigError naming the file, both sizes and the step whose update was not made.
  const auto world = mpi::Comm::world();
  const std::string dir = shared_temp_dir(world, "scanshard-truncated-");
  const std::string path = dir + "/tokens.txt";
  if (world.rank() == 0) {
    const auto corpus = train::load_bytes(train::default_corpus_path(), 1000);
    std::ofstream f(path, std::ios::binary);
    for (std::size_t i = 0; i < 16384; ++i) f.put(static_cast<char>(corpus[i % corpus.size()]));
  }
  world.barrier();
  const train::Tokens data = train::Tokens::open_file(path, train::TokenFormat::bytes, 257);
  Case c = one_axis(Axis::data, world.size());
  c.seq_len = 255;
  train::Options o;
  o.steps = 3;
  o.gradient_hook = [&](std::int64_t step, std::span<double>) {
    if (step == 0 && world.rank() == 0) std::filesystem::resize_file(path, 4096);
  };
  std::string message = "no error";
  try {
    train::run(load_model("hawk-tiny"), make_plan("hawk-tiny", c, true), data, o, &world);
  } catch (const ConfigError& e) {
    message = e.what();
  }
  INFO("rank " << world.rank() << ": " << message);
  CHECK_THAT(message, Catch::StartsWith(path + ": the data file changed while in use: it had 16384 bytes"));
  CHECK_THAT(message, Catch::Contains("now 4096 bytes") && Catch::Contains("stopped before step 2's update"));
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}
namespace {
// The message of the ConfigError f throws ("no error" if none; another exception fails the test).
std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}
// A checkpoint after 1 step of hawk-tiny on the world's data mesh (12 sequences of 16 tokens), and
// edited copies: each edit is applied by rank 0 to a copy, which is then re-sealed.
struct EditedCheckpoints {
  const mpi::Comm world = mpi::Comm::world();
  const ModelSpec m = load_model("hawk-tiny");
  const Plan plan = make_plan("hawk-tiny", one_axis(Axis::data, world.size()), true);
  const std::vector<std::uint8_t> data = train::load_bytes(train::default_corpus_path(), 1000);
  const std::string dir = shared_temp_dir(world, "scanshard-meta-");
  std::string good;
  EditedCheckpoints() {
    train::Options o;
    o.steps = 1;
    o.checkpoint_dir = dir;
    good = train::run(m, plan, data, o, &world).checkpoints.at(0);
  }
  ~EditedCheckpoints() {
    world.barrier();
    if (world.rank() == 0) std::filesystem::remove_all(dir);
  }
  std::string edited(const std::string& name, const std::function<void(const std::string&)>& edit) const {
    const std::string path = dir + "/" + name + ".h5";
    if (world.rank() == 0) {
      std::filesystem::copy_file(good, path, std::filesystem::copy_options::overwrite_existing);
      edit(path);
      testing::reseal(path);
    }
    world.barrier();
    return path;
  }
  // The ConfigError of resuming from `path` for `steps` steps (on this rank).
  std::string resume_error(const std::string& path, std::int64_t steps = 1) const {
    train::Options o;
    o.steps = steps;
    o.resume = path;
    return config_error([&] { train::run(m, plan, data, o, &world); });
  }
};
}  // namespace

TEST_CASE("train: a checkpoint whose /meta is out of range or not of this run is refused on every rank naming the field", "[train][resume]") {
  // Each /meta field edited (and the file re-sealed so that the integrity check passes), as an
  // outside tester did: a negative step crashed the data reader, a huge one overflowed the cursor.
  const EditedCheckpoints ck;
  using namespace testing;
  struct Case { const char* name; std::function<void(const std::string&)> edit; std::string fragment; };
  const std::vector<Case> cases = {
      {"negative-step", [](auto& f) { set_meta_int(f, "step", -5); }, "/meta step: -5 is negative"},
      {"huge-step", [](auto& f) { set_meta_int(f, "step", INT64_MAX); set_meta_int(f, "data_cursor", INT64_MAX); },
       "/meta step: 9223372036854775807 is beyond the 1000000000000 steps a run may reach"},
      {"uint-step", [](auto& f) { set_meta_uint(f, "step", 0x8000000000000005ull); }, "/meta step: 9223372036854775807 is beyond"},
      {"float-step", [](auto& f) { set_meta_float(f, "step", 1.5); }, "/meta attribute step is not an integer"},
      {"no-step", [](auto& f) { delete_meta(f, "step"); }, "no attribute step in /meta"},
      {"cursor", [](auto& f) { set_meta_int(f, "data_cursor", 7); }, "/meta data_cursor: 7 is not the step 1"},
      {"negative-cursor", [](auto& f) { set_meta_int(f, "data_cursor", -3); }, "/meta data_cursor: -3 is not the step 1"},
      {"seed", [](auto& f) { set_meta_uint(f, "seed", 1ull << 40); }, "/meta seed: 1099511627776 is outside the range of --seed"},
      {"version", [](auto& f) { set_meta_int(f, "format_version", 2 + (std::int64_t{1} << 32)); },
       "format_version 4294967298 is not supported"},
      {"model-name", [](auto& f) { set_meta_string(f, "model_name", "other"); }, "/meta model_name: a checkpoint of model 'other'"},
      {"model-yaml", [](auto& f) { set_meta_string(f, "model_yaml", "name: hawk-tiny\nfamily: hawk\nwidth: 7\n"); },
       "/meta model_yaml: the checkpoint's model is not this run's 'hawk-tiny'"},
      {"plan-batch", [](auto& f) { set_meta_string(f, "plan", "mesh: {data: 1}\nglobal_batch: 24\nseq_len: 16\n"); },
       "/meta plan: global_batch 24 in the checkpoint, 12 in this run's plan"},
      {"plan-seq", [](auto& f) { set_meta_string(f, "plan", "global_batch: 12\nseq_len: 32\n"); },
       "/meta plan: seq_len 32 in the checkpoint, 16 in this run's plan"},
      {"plan-world", [](auto& f) { set_meta_string(f, "plan", "mesh: {data: 0}\nglobal_batch: 12\nseq_len: 16\n"); },
       "/meta plan:1:14: mesh.data: must be a positive integer, got 0"},
      {"plan-garbage", [](auto& f) { set_meta_string(f, "plan", "[not a plan"); }, "/meta plan:"},
  };
  for (const auto& c : cases) {
    const std::string path = ck.edited(c.name, c.edit);
    const std::string message = ck.resume_error(path);
    INFO("rank " << ck.world.rank() << ", " << c.name << ": " << message);
    CHECK_THAT(message, Catch::StartsWith(path + ":") && Catch::Contains(c.fragment));
  }
  // The untouched checkpoint still resumes.
  CHECK(ck.resume_error(ck.good) == "no error");
}

TEST_CASE("train: --steps beyond the bound after a resume is refused; up to it the run checkpoints as promised", "[train][resume]") {
  // --steps INT64_MAX after step 1 overflowed step + steps: the run made one step and wrote no
  // checkpoint. Now: a ConfigError naming --steps. A checkpoint at kMaxSteps − 1 (edited) still
  // resumes for its last step and writes step-<kMaxSteps>.h5. Reference for the data cursor there
  // (computed in 128 bits): sequence positions repeat with period span = size − seq_len in the
  // step, so the first loss equals that of resuming the same parameters at (kMaxSteps − 1) mod span.
  const EditedCheckpoints ck;
  const std::string limit = std::to_string(train::kMaxSteps);
  CHECK_THAT(ck.resume_error(ck.good, INT64_MAX), Catch::Contains("--steps: 9223372036854775807 steps go beyond the " + limit));
  CHECK_THAT(ck.resume_error(ck.good, train::kMaxSteps),
             Catch::Contains("--steps: " + limit + " steps after step 1 of " + ck.good + " go beyond the " + limit));
  const std::int64_t last = train::kMaxSteps - 1, span = std::int64_t(ck.data.size()) - 16, early = last % span;
  auto at_step = [&](std::int64_t k) {
    return ck.edited("at-" + std::to_string(k), [k](auto& f) {
      testing::set_meta_int(f, "step", k);
      testing::set_meta_int(f, "data_cursor", k);
    });
  };
  train::Options o;
  o.steps = 1;
  o.resume = at_step(last);
  o.checkpoint_dir = ck.dir + "/out";
  if (ck.world.rank() == 0) std::filesystem::create_directories(o.checkpoint_dir);
  ck.world.barrier();
  const auto far = train::run(ck.m, ck.plan, ck.data, o, &ck.world);
  CHECK(far.first_step == last);
  CHECK(far.checkpoints == std::vector<std::string>{o.checkpoint_dir + "/step-" + limit + ".h5"});
  CHECK(std::filesystem::exists(o.checkpoint_dir + "/step-" + limit + ".h5"));
  o.resume = at_step(early);
  o.checkpoint_dir.clear();
  const auto near = train::run(ck.m, ck.plan, ck.data, o, &ck.world);
  REQUIRE(far.losses.size() == 1);
  REQUIRE(near.losses.size() == 1);
  CHECK(far.losses[0] == near.losses[0]);
}
