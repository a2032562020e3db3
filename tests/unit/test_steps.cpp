// tests/unit/test_steps.cpp — the step vocabulary (program/steps.hpp) against every family's
// programs: griffin, hawk, mqa, rwkv4, rwkv6 and the transformer (configs/models/*-tiny), on 1 and
// 2 ranks of every mesh axis and the plan options that change which steps are lowered (remat, ZeRO-3,
// carry scheme, scan algorithm, rs_ag, materialized attention, interleaved stages, dropout). Every
// step lowered must carry a registered op and step name with the class the registry gives its
// kernel, every forward and backward step of a plan the runner accepts must have an executor
// handler (and make no kernel call of its own, Step::calls = 0, when that handler is `fused`), and
// every compute step must be priced by an efficiency calibrate fits. Calibrate's
// kernel benchmarks must name steps its models lower, and a benchmark fitted as its own kernel
// must find steps with that kernel tag (else its fit would price nothing). The executor's parameter
// names (train/executor_state.hpp Param) are exactly the names the families' parameter_tensors
// give, and each resolves to the offset a lookup by name finds.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <string_view>

#include "program/cluster.hpp"
#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/steps.hpp"
#include "reports/calibration.hpp"
#include "reports/validation.hpp"
#include "sim/cost.hpp"
#include "program/param_layout.hpp"
#include "train/executor.hpp"
#include "train/executor_state.hpp"
#include "train/runner.hpp"

using namespace scanshard;

namespace {

// The efficiency field sim/cost.cpp prices a compute step with when the chip has no per-kernel
// value: its class's, elementwise for the classes without one.
std::string priced_by_class(OpClass c) {
  switch (c) {
    case OpClass::gemm: case OpClass::attention: case OpClass::scan: case OpClass::norm: return to_string(c);
    default: return "elementwise";
  }
}

struct Walked {
  std::size_t programs = 0, runnable = 0, steps = 0;
  std::set<std::string> families;
};

}  // namespace

TEST_CASE("every lowered step of every family is registered, handled by the executor and calibrated", "[steps]") {
  Walked w;
  for (const char* name : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "gpt-tiny"}) {
    for (const bool dropout : {false, true}) {
      ModelSpec m = load_model(name);
      if (dropout) {
        if (m.family != Family::transformer) continue;
        m.dropout = 0.1;
      }
      for (const char* mesh : {"data=1", "data=2", "fsdp=2", "tensor=2", "sequence=2", "pipeline=2", "tensor=2,pipeline=2"})
        for (int variant = 0; variant < 11; ++variant) {
          Plan p;
          p.model = m.name;
          p.mesh = parse_mesh(mesh, "test");
          p.global_batch = 8;
          p.micro_batch = 2;
          p.seq_len = 128;
          p.param_dtype = p.act_dtype = DType::fp32;
          switch (variant) {
            case 1: p.remat = Remat::block; break;
            case 2: p.remat = Remat::elementwise; break;
            case 3: p.zero_stage = 3; break;
            case 4: p.carry = CarryScheme::allgather; break;
            case 5: p.scan = ScanAlgo::chunked; break;
            case 6: p.tensor_comm = TensorComm::rs_ag; break;
            case 7: p.attention = AttentionKernel::materialized; break;
            case 8: p.virtual_stages = 2; p.micro_batch = 1; break;
            case 9: p.scan = ScanAlgo::associative; break;
            case 10: p.zero_stage = 1; break;
            default: break;
          }
          const std::int64_t n = p.mesh.devices();
          if (plan_violation(m, p, n)) continue;
          bool runnable = true;
          try {
            train::check_supported(m, p, n);
          } catch (const std::exception&) {
            runnable = false;
          }
          for (std::int64_t rank = 0; rank < n; ++rank) {
            const StepProgram prog = lower(m, p, rank);
            ++w.programs;
            w.runnable += runnable;
            w.families.insert(to_string(m.family));
            for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
              for (const Step& s : *list) {
                ++w.steps;
                INFO(m.name << " " << mesh << " variant " << variant << " rank " << rank << ": step '" << s.op << " " << s.name
                            << "' kernel " << (s.kernel ? s.kernel : "-") << " phase " << to_string(s.phase));
                const OpKind* op = find_op_kind(s.op);
                REQUIRE(op != nullptr);
                CHECK(is_step_name(s.name));
                const OpKind* kernel = find_op_kind(s.kernel ? s.kernel : s.op);
                REQUIRE(kernel != nullptr);
                CHECK(kernel->cls == s.cls);  // the class the lowering gave it is its kernel's
                if (s.kind == StepKind::compute) {
                  const std::string field = priced_by_class(s.cls);
                  CHECK(std::find(kCalibratedClasses.begin(), kCalibratedClasses.end(), field) != kCalibratedClasses.end());
                } else {
                  CHECK(s.cls == OpClass::comm);
                }
                // The runner's step end (gradient sync, optimizer, gather) is its own dispatch
                // (train/runner.cpp), which throws on a step it has no meaning for.
                if (runnable && list != &prog.step_end) CHECK(train::has_handler(s, list == &prog.backward));
                // One count of kernel calls (each pays the per-call cost, sim/cost.cpp): a step the
                // executor runs inside a neighbour's kernel makes none; every other compute step
                // one or more, but the residual adds (plain loops in the runner and the decoder).
                if (list != &prog.step_end && s.kind == StepKind::compute) {
                  if (train::runs_fused(s, list == &prog.backward)) CHECK(s.calls == 0);
                  else CHECK((s.calls >= 1 || std::string_view(s.op) == ops::add));
                }
              }
          }
        }
    }
  }
  // The walk reached what it claims to cover.
  CHECK(w.families == std::set<std::string>{"griffin", "hawk", "mqa", "rwkv4", "rwkv6", "transformer"});
  CHECK(w.runnable > 0);
  // The runner accepts every plan the rules accept (interleaved stages, rs_ag for RWKV, attention
  // halos over several shards, any vocabulary), so every program walked is checked for handlers.
  CHECK(w.runnable == w.programs);
}

TEST_CASE("every per-kernel efficiency key is a registered op, and op keys are unique", "[steps]") {
  for (const char* k : kTunedOps) CHECK(find_op_kind(k) != nullptr);
  for (const auto& k : kOpKinds) CHECK(find_op_kind(k.key) == &k);  // keys are unique
  for (const auto n : kStepNames) CHECK(is_step_name(n));
  // one list (steps.hpp's X-macros) makes the constants and the registries: every name once
  CHECK(std::set<std::string_view>(kStepNames.begin(), kStepNames.end()).size() == kStepNames.size());
  CHECK(std::string_view(tensors::rec_scan) == "rec.scan");
  CHECK(find_op_kind(ops::rglru_scan)->cls == OpClass::scan);
  CHECK(find_op_kind("no.such.op") == nullptr);
  CHECK(step_key(ops::linear, tensors::mlp_w1) == "linear|mlp.w1");
}

TEST_CASE("the executor reports a missing handler: an unknown step, and a GEMM forward in a backward pass", "[steps]") {
  Step s;
  s.op = ops::linear;
  s.name = "no.such.tensor";
  CHECK_FALSE(train::has_handler(s, false));
  s.name = tensors::mlp_w1;
  CHECK(train::has_handler(s, false));
  s.phase = Phase::backward;  // linear|mlp.w1 has a forward handler only; its backward is linear.dx / linear.dw
  CHECK_FALSE(train::has_handler(s, true));
  s.phase = Phase::recompute;  // recompute reruns the forward handler
  CHECK(train::has_handler(s, true));
}

TEST_CASE("calibrate's kernel benchmarks name lowered steps, and each tuned one finds steps with its kernel tag", "[steps]") {
  const auto benches = calibration_benches(calibration_plan_set());  // plan_steps throws on a name no step has
  REQUIRE_FALSE(benches.empty());
  std::set<std::string> tuned;
  for (const auto& b : benches) {
    INFO(b.group << " on " << b.model);
    for (const auto& n : b.names) CHECK(is_step_name(n));
    const auto& steps = b.steps;
    REQUIRE_FALSE(steps.empty());
    if (b.cls == kCallBenchClass) {  // the per-call cost's benchmarks (fit_call_seconds): no efficiency field
      CHECK(b.op.empty());
      continue;
    }
    if (b.cls == kDecodeAttentionMemoryClass) {  // a point of the decode attention's memory curve: its steps only
      CHECK(b.op.empty());
      CHECK(std::all_of(steps.begin(), steps.end(), [](const Step& st) { return is_decode_attention(st); }));
      continue;
    }
    CHECK(std::find(kCalibratedClasses.begin(), kCalibratedClasses.end(), b.cls) != kCalibratedClasses.end());
    // A benchmark in its class's fit must contain steps that class prices (the others in it, the
    // MLP's gelu ⊙ or the RG-LRU's fused decay, are priced with their own, already fitted, class):
    // else the bisection on the class would move nothing and clamp.
    if (b.op.empty() || b.also_class)
      CHECK(std::any_of(steps.begin(), steps.end(), [&](const Step& st) { return priced_by_class(st.cls) == b.cls; }));
    if (b.op.empty()) continue;
    CHECK(find_op_kind(b.op) != nullptr);
    CHECK(std::find(kTunedOps.begin(), kTunedOps.end(), b.op) != kTunedOps.end());
    const auto with_tag = std::count_if(steps.begin(), steps.end(), [&](const Step& st) { return b.op == (st.kernel ? st.kernel : st.op); });
    CHECK(with_tag > 0);
    tuned.insert(b.op);
  }
  CHECK(tuned.size() >= 10);  // the benchmarks fitted as their own kernel (gelu_mul, conv1d, rope, ..., wkv6.chunked)
}

TEST_CASE("calibrate's plans run on one rank and are none of validate's plans (decode plans none of its decode plans)", "[steps]") {
  const auto cal = calibration_plan_set();
  const auto val = validation_plan_set(false);
  std::set<Family> families;
  for (const auto& c : cal) {
    INFO(c.id << " " << c.model.name);
    CHECK(c.plan.mesh.devices() == 1);
    CHECK(c.plan.micro_batches() == 1);
    CHECK_NOTHROW(train::check_supported(c.model, c.plan, 1));
    families.insert(c.model.family);
    if (c.decode) {  // a decode plan: none of validate's decode plans (family, width, depth, batch, context)
      for (const auto& v : decode_plan_set(false))
        CHECK_FALSE((v.model.family == c.model.family && v.model.width == c.model.width && v.model.depth == c.model.depth &&
                     v.decode->batch == c.decode->batch && v.decode->context() == c.decode->context()));
      continue;
    }
    for (const auto& v : val) {
      // the same program would mean the same family, width, depth, micro-batch and tokens
      const bool same = v.model.family == c.model.family && v.model.width == c.model.width && v.model.depth == c.model.depth &&
                        v.plan.micro_batch == c.plan.micro_batch && v.plan.seq_len == c.plan.seq_len;
      CHECK_FALSE(same);
    }
  }
  // every family validate runs, but hawk (griffin's recurrent layer without the attention)
  for (const auto& v : val)
    if (v.model.family != Family::hawk) CHECK(families.count(v.model.family) == 1);
}

TEST_CASE("the executor's parameter names are the families' and resolve to the offsets a lookup by name finds", "[steps]") {
  std::set<std::string> model_names;
  const std::set<std::string> exec_names(std::begin(train::kParamNames), std::end(train::kParamNames));
  REQUIRE(exec_names.size() == train::kParamCount);  // no name twice
  for (const char* name : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "gpt-tiny", "transformer-tiny"}) {
    const ModelSpec m = load_model(name);
    const Layout full(m);
    for (const ParamTensor& t : full.tensors) {
      model_names.insert(t.name);
      CHECK(exec_names.count(t.name) == 1);  // the executor can name every parameter
    }
    for (const std::int64_t tp : {1, 2})
      for (std::int64_t rank = 0; rank < tp; ++rank) {
        const train::ShardLayout lay(m, full, tp, rank);
        const train::ParamIndex index(lay, m.depth);
        for (std::int64_t l = -3; l < m.depth; ++l) {
          const std::string block = train::ParamIndex::block(l);
          for (std::size_t p = 0; p < train::kParamCount; ++p) {
            const auto param = static_cast<train::Param>(p);
            const bool present = full.index.count(block + "/" + train::kParamNames[p]) > 0;
            CHECK((index.tensor(l, param) >= 0) == present);
            if (present)
              CHECK(index.offset(l, param) == lay.off(block, train::kParamNames[p]));
            else
              CHECK_THROWS_AS(index.offset(l, param), std::logic_error);
          }
          // the block's span: the smallest range holding every tensor of the block
          std::int64_t begin = lay.total, end = 0;
          for (std::size_t i = 0; i < full.tensors.size(); ++i)
            if (full.tensors[i].block == block) {
              begin = std::min(begin, lay.offset[i]);
              end = std::max(end, lay.offset[i] + lay.count(i));
            }
          CHECK(index.block_range(l).begin == begin);
          CHECK(index.block_range(l).end == end);
        }
      }
  }
  for (const std::string& n : exec_names) CHECK(model_names.count(n) == 1);  // no name the families lack
}

TEST_CASE("steps whose handler calls its kernel more than once count each call", "[steps]") {
  // The executor's and the decoder's handlers rotate q, then k (attn.rope), and shift once per
  // mix weight μ: RWKV-4's time mix r, k, v (3), either generation's channel mix k, r (2); RWKV-6's
  // time-mix shift is one ddlerp call. Forward and backward alike.
  auto calls_of = [](const char* model, const char* name) {
    const ModelSpec m = load_model(model);
    Plan p;
    p.model = m.name;
    p.global_batch = p.micro_batch = 2;
    p.seq_len = 64;
    const StepProgram prog = lower(m, p, 0);
    std::set<double> fwd, bwd;
    for (const auto& s : prog.forward)
      if (std::string_view(s.name) == name) fwd.insert(s.calls);
    for (const auto& s : prog.backward)
      if (std::string_view(s.name) == name) bwd.insert(s.calls);
    REQUIRE(fwd.size() == 1);
    CHECK(bwd == fwd);
    return *fwd.begin();
  };
  CHECK(calls_of("griffin-tiny", tensors::attn_rope) == 2);
  CHECK(calls_of("transformer-tiny", tensors::attn_rope) == 2);
  CHECK(calls_of("rwkv4-tiny", tensors::tm_shift) == 3);
  CHECK(calls_of("rwkv4-tiny", tensors::cm_shift) == 2);
  CHECK(calls_of("rwkv6-tiny", tensors::tm_shift) == 1);
  CHECK(calls_of("rwkv6-tiny", tensors::cm_shift) == 2);
}
