// reports/calibration.cpp — see calibration.hpp.
#include "reports/calibration.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <string_view>
#include <stdexcept>

#include "program/presets.hpp"
#include "reports/compare.hpp"
#include "reports/validation.hpp"
#include "sim/cost.hpp"

namespace scanshard {
namespace {

// [[x, fraction], ...] in flow style.
std::string curve_text(const std::vector<std::pair<double, double>>& curve) {
  std::string c;
  for (const auto& [x, f] : curve) c += (c.empty() ? "[" : ", [") + fmt6(x) + ", " + fmt6(f) + "]";
  return "[" + c + "]";
}

std::string yaml_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) o += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return o + "\"";
}

}  // namespace

std::string fmt6(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

namespace {

// A preset with `depth` layers (same widths), named for it.
ModelSpec with_depth(const std::string& preset, std::int64_t depth) {
  ModelSpec m = load_model(preset);
  if (m.depth == depth) return m;
  m.depth = depth;
  m.name += "-l" + std::to_string(depth);
  return m;
}

Plan one_device_plan(const ModelSpec& m, std::int64_t batch, std::int64_t seq_len) {
  Plan p;
  p.model = m.name;
  p.global_batch = p.micro_batch = batch;
  p.seq_len = seq_len;
  p.param_dtype = p.act_dtype = DType::fp32;  // the runner computes in fp32
  p.overlap = false;
  return p;
}

bool is_tuned(const char* op) {
  return std::any_of(kTunedOps.begin(), kTunedOps.end(), [&](const char* o) { return std::string_view(o) == op; });
}

}  // namespace

std::vector<CalibrationPlan> calibration_plan_set() {
  struct Row { const char* id; ModelSpec m; std::int64_t B, T; };
  const std::vector<Row> rows = {
      {"C01", load_model("griffin-tiny"), 5, 96},  // recurrent, recurrent, local attention
      {"C02", with_depth("mqa-tiny", 1), 5, 96},
      {"C03", with_depth("rwkv4-tiny", 1), 5, 96},
      {"C04", with_depth("rwkv6-tiny", 1), 5, 96},
      {"C05", with_depth("gpt-tiny", 1), 5, 96},
      {"C06", with_depth("gpt-tiny", 1), 3, 64},  // the smallest GEMMs
      {"C07", validation_variant("griffin-tiny", 64, 1), 5, 96},
      {"C08", validation_variant("griffin-tiny", 256, 1), 5, 96},
      {"C09", validation_variant("griffin-tiny", 256, 1), 6, 128},  // the largest GEMMs
  };
  std::vector<CalibrationPlan> out;
  for (const auto& r : rows) out.push_back({r.id, r.m, one_device_plan(r.m, r.B, r.T), std::nullopt});
  // decode plans: (id, model, batch, prompt, sampled tokens)
  struct DecodeRow { const char* id; ModelSpec m; ServingShape s; };
  const std::vector<DecodeRow> decode_rows = {
      {"C10", with_depth("mqa-tiny", 1), {1, 1024, 16}},
      {"C11", load_model("griffin-tiny"), {4, 48, 16}},
      {"C12", with_depth("rwkv4-tiny", 1), {2, 48, 16}},
      {"C13", with_depth("rwkv6-tiny", 1), {2, 48, 16}},
      // the decode attention over a cache beyond L2: 7.2 MB per rank (both ranks' in the shared L3)
      {"C14", with_depth("transformer-tiny", 3), {6, 768, 16}},
  };
  for (const auto& r : decode_rows)
    out.push_back({r.id, r.m, serving_plan(one_device_plan(r.m, r.s.batch, r.s.context()), r.s), r.s});
  out.back().attention_only = true;  // C14
  return out;
}

std::vector<Step> plan_steps(const ModelSpec& m, const Plan& p, const std::vector<std::string>& names) {
  const StepProgram prog = lower(m, p, 0);
  auto wanted = [&](const Step& s) {
    return s.kind == StepKind::compute && std::find(names.begin(), names.end(), std::string(s.name)) != names.end();
  };
  std::vector<Step> out;
  for (std::int64_t mb = 0; mb < prog.micro_batches; ++mb)
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const auto& s : *list)
        if (wanted(s)) out.push_back(s);
  for (const auto& s : prog.step_end)
    if (wanted(s)) out.push_back(s);
  if (out.empty()) throw std::runtime_error("calibrate: the lowering of " + m.name + " has no steps named " + names.front());
  return out;
}

std::vector<Step> decode_plan_steps(const ModelSpec& m, const Plan& p, const ServingShape& s, const std::vector<std::string>& names) {
  const InferencePass pass = lower_decode(m, p, 0, s.batch, s.prompt_len + s.sample_len / 2);
  std::vector<Step> out;
  pass.for_each_list([&](const std::vector<Step>& list, std::int64_t times) {
    for (std::int64_t i = 0; i < times; ++i)
      for (const auto& st : list)
        if (st.kind == StepKind::compute && std::find(names.begin(), names.end(), std::string(st.name)) != names.end()) out.push_back(st);
  });
  if (out.empty()) throw std::runtime_error("calibrate: the decode lowering of " + m.name + " has no steps named " + names.front());
  return out;
}

namespace {
// A step the GEMM curve is fitted from (gemm_step_samples): class gemm, not a tuned kernel
// (blockdiag), no vector work (not the logits with their softmax statistics).
bool is_pure_gemm(const Step& s) {
  return s.kind == StepKind::compute && s.cls == OpClass::gemm && !is_tuned(s.kernel ? s.kernel : s.op) && s.vector_flops <= 0;
}
}  // namespace

std::vector<std::string> call_step_names(const CalibrationPlan& c) {
  if (!c.decode) throw std::logic_error("calibrate: " + c.id + " is not a decode plan");
  const InferencePass pass = lower_decode(c.model, c.plan, 0, c.decode->batch, c.decode->prompt_len + c.decode->sample_len / 2);
  std::vector<std::string> gemm, out;
  pass.for_each_list([&](const std::vector<Step>& list, std::int64_t) {
    for (const auto& st : list)
      if (is_pure_gemm(st)) gemm.emplace_back(st.name);
  });
  pass.for_each_list([&](const std::vector<Step>& list, std::int64_t) {
    for (const auto& st : list) {
      const std::string n = st.name;
      // (attention and the recurrences have decode values of their own: not call benchmarks)
      if (st.kind != StepKind::compute || st.cls == OpClass::attention || st.cls == OpClass::scan ||
          std::find(gemm.begin(), gemm.end(), n) != gemm.end())
        continue;
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    }
  });
  return out;
}

std::vector<KernelBench> calibration_benches(const std::vector<CalibrationPlan>& plans) {
  auto plan = [&](const char* id) -> const CalibrationPlan& {
    for (const auto& c : plans)
      if (c.id == id) return c;
    throw std::logic_error(std::string("calibrate: no calibration plan ") + id);
  };
  // (class, plan, label, steps, own value: op, joins its class's fit too, the lowering's scan)
  struct Spec { const char* cls; const char* plan; const char* group; std::vector<std::string> names; const char* op; bool also_class; ScanAlgo scan; };
  using S = ScanAlgo;
  const std::vector<Spec> specs = {
      // A kernel that is the only one behind its op gets its own value (efficiency.ops) too: a
      // class mixes kernels 25x apart per priced FLOP (RoPE's sin/cos tables against a residual add).
      {"elementwise", "C01", "rec.gate + rec.gated", {tensors::rec_gate, tensors::rec_gated}, ops::gelu_mul, true, S::sequential},
      {"elementwise", "C01", "rec.conv", {tensors::rec_conv}, ops::conv1d, true, S::sequential},
      {"elementwise", "C01", "attn.rope", {tensors::attn_rope}, ops::rope, true, S::sequential},
      {"elementwise", "C01", "loss", {tensors::loss}, ops::softmax_xent, true, S::sequential},
      {"elementwise", "C01", "rec.residual + mlp.residual", {tensors::rec_residual, tensors::mlp_residual}, ops::add, true, S::sequential},
      {"elementwise", "C01", "params (adamw)", {tensors::params}, ops::adamw, false, S::sequential},
      {"elementwise", "C01", "grads (accumulate)", {tensors::grads}, ops::grad_accumulate, false, S::sequential},
      {"elementwise", "C01", "grad_buffers (zero)", {tensors::grad_buffers}, ops::zero, false, S::sequential},
      {"elementwise", "C03", "cm.shift (token_shift)", {tensors::cm_shift}, ops::token_shift, false, S::sequential},
      {"elementwise", "C04", "tm.mix (ddlerp)", {tensors::tm_mix}, ops::ddlerp, false, S::sequential},
      // the embedding lookup and its scatter-add (untied: no logits GEMM under the same name)
      {"elementwise", "C03", "embed.table (embedding)", {tensors::embed_table}, ops::embedding, false, S::sequential},
      {"elementwise", "C05", "embed.positions (add_positions)", {tensors::embed_positions}, ops::add_positions, false, S::sequential},
      {"norm", "C03", "norm1 + norm2 (layernorm)", {tensors::norm1, tensors::norm2}, ops::layernorm, true, S::sequential},
      {"norm", "C01", "norm1 + norm2 (rmsnorm)", {tensors::norm1, tensors::norm2}, ops::rmsnorm, true, S::sequential},
      {"gemm", "C01", "mlp.w1 + w2 + act + w3", {tensors::mlp_w1, tensors::mlp_w2, tensors::mlp_act, tensors::mlp_w3}, "", false, S::sequential},
      {"gemm", "C01", "rec.wx + wy + wo", {tensors::rec_wx, tensors::rec_wy, tensors::rec_wo}, "", false, S::sequential},
      {"gemm", "C01", "rec.gate_a + gate_x (blockdiag)", {tensors::rec_gate_a, tensors::rec_gate_x}, ops::blockdiag, false, S::sequential},
      {"scan", "C01", "rec.decay + rec.scan", {tensors::rec_decay, tensors::rec_scan}, "", false, S::sequential},
      {"scan", "C03", "tm.wkv (wkv4.scan)", {tensors::tm_wkv}, ops::wkv4_scan, false, S::sequential},
      // the runner calls RWKV-6's chunked kernel under either scan setting; the lowering prices
      // the two forms differently, so both ops are fitted to the same run
      {"scan", "C04", "tm.wkv (wkv6.scan)", {tensors::tm_wkv}, ops::wkv6_scan, false, S::sequential},
      {"scan", "C04", "tm.wkv (wkv6.chunked)", {tensors::tm_wkv}, ops::wkv6_chunked, false, S::chunked},
      // local (griffin-tiny) and global (mqa-tiny) at head size 32, and global at head size 16
      // with two query heads per K/V head (gpt-tiny): twice the scores per matrix FLOP, so the
      // per-score vector work (efficiency.attention_softmax) separates from the products'
      {"attention", "C01", "attn.core (local)", {tensors::attn_core, tensors::attn_scores_recompute}, "", false, S::sequential},
      {"attention", "C02", "attn.core (global)", {tensors::attn_core, tensors::attn_scores_recompute}, "", false, S::sequential},
      {"attention", "C05", "attn.core (global, N 16)", {tensors::attn_core, tensors::attn_scores_recompute}, "", false, S::sequential},
      // the decode kernel: one query per sequence against a 1024-row global cache
      {"attention", "C10", "attn.core (decode, global)", {tensors::attn_core}, ops::attention_decode, false, S::sequential},
      // the recurrences at one token per call: the state read and written, per-call set-up over
      // every channel (the training values come from 96-token calls)
      {"scan", "C11", "rec.decay + rec.scan (decode)", {tensors::rec_decay, tensors::rec_scan}, ops::rglru_decode, false, S::sequential},
      {"scan", "C12", "tm.wkv (decode, wkv4)", {tensors::tm_wkv}, ops::wkv4_decode, false, S::sequential},
      {"scan", "C13", "tm.wkv (decode, wkv6)", {tensors::tm_wkv}, ops::wkv6_decode, false, S::sequential},
      // the decode kernel over a cache of several MB: a point of the decode attention's memory curve
      {kDecodeAttentionMemoryClass, "C14", "attn.core (decode, cache beyond L2)", {tensors::attn_core}, "", false, S::sequential},
  };
  std::vector<KernelBench> out;
  for (const auto& s : specs) {
    const CalibrationPlan& c = plan(s.plan);
    Plan priced = c.plan;
    priced.scan = s.scan;
    KernelBench k{s.cls, c.id, c.model.name, s.group, s.names,
                  c.decode ? decode_plan_steps(c.model, priced, *c.decode, s.names) : plan_steps(c.model, priced, s.names)};
    k.op = s.op;
    k.also_class = s.also_class;
    k.scan = s.scan;
    out.push_back(std::move(k));
  }
  // the per-call cost (fit_call_seconds): every other small kernel of a decode step, one benchmark
  // per op group (as validate compares them: the RG-LRU's gates, decay and scan together)
  for (const char* id : {"C10", "C11"}) {
    const CalibrationPlan& c = plan(id);
    std::map<std::string, std::vector<std::string>> groups;
    for (const auto& n : call_step_names(c)) groups[op_group(n)].push_back(n);
    for (auto& [g, names] : groups) {
      KernelBench k{kCallBenchClass, c.id, c.model.name, g + " (decode, batch " + std::to_string(c.decode->batch) + ")", names,
                    decode_plan_steps(c.model, c.plan, *c.decode, names)};
      out.push_back(std::move(k));
    }
  }
  return out;
}

std::vector<GemmStepSample> gemm_step_samples(const std::vector<CalibrationPlan>& plans) {
  std::vector<GemmStepSample> out;
  for (const auto& c : plans) {
    if (c.attention_only) continue;
    std::vector<std::vector<Step>> lists;  // training: forward and backward; decode: one step's layers
    if (c.decode) {
      const InferencePass pass = lower_decode(c.model, c.plan, 0, c.decode->batch, c.decode->prompt_len + c.decode->sample_len / 2);
      pass.for_each_list([&](const std::vector<Step>& list, std::int64_t times) { lists.insert(lists.end(), times, list); });
    } else {
      const StepProgram prog = lower(c.model, c.plan, 0);
      lists = {prog.forward, prog.backward};
    }
    std::map<Trace::Key, std::size_t> index;  // key -> out position
    for (const auto& list : lists)
      for (const auto& s : list) {
        // a pure GEMM: not a tuned kernel (blockdiag), no other work in the step (the logits' softmax
        // statistics are priced at the elementwise value: their time would move the GEMM's point)
        if (!is_pure_gemm(s)) continue;
        const Trace::Key key{c.decode ? "decode" : to_string(s.phase), s.op, s.name};  // the decoder's phase
        auto [it, fresh] = index.emplace(key, out.size());
        if (fresh) {
          GemmStepSample g;
          g.plan = c.id;
          g.key = key;
          g.m = s.m, g.n = s.n, g.k = s.k;
          g.gemm_flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
          out.push_back(std::move(g));
        }
        out[it->second].steps.push_back(s);
      }
  }
  return out;
}

double median_cell_seconds(const std::vector<Trace>& runs, const std::function<bool(const Trace::Key&)>& take) {
  std::map<Trace::Key, std::vector<double>> per_cell;
  for (const auto& run : runs)
    for (std::size_t i = 1; i < run.steps().size(); ++i)
      for (const auto& [key, cell] : run.steps()[i].cells)
        if (take(key)) per_cell[key].push_back(cell.seconds);
  double t = 0;
  for (const auto& [key, v] : per_cell) t += stats::median(v);
  return t;
}

void read_traces(const std::vector<CalibrationPlan>& plans, const std::vector<std::vector<Trace>>& traces,
                 std::vector<KernelBench>& benches, std::vector<GemmStepSample>& gemms) {
  auto runs_of = [&](const std::string& id) -> const std::vector<Trace>& {
    for (std::size_t i = 0; i < plans.size(); ++i)
      if (plans[i].id == id) return traces.at(i);
    throw std::logic_error("calibrate: no calibration plan " + id);
  };
  for (auto& k : benches)
    k.seconds = median_cell_seconds(runs_of(k.plan), [&](const Trace::Key& key) {
      const auto& [phase, op, name] = key;
      return step_name(op, name) == name && std::find(k.names.begin(), k.names.end(), name) != k.names.end();
    });
  for (auto& g : gemms) g.seconds = median_cell_seconds(runs_of(g.plan), [&](const Trace::Key& key) { return key == g.key; });
}

double& efficiency_field(Efficiency& e, const std::string& cls) {
  for (const char* op : kTunedOps)
    if (cls == op) return e.ops[cls];
  if (cls == "gemm") return e.gemm;
  if (cls == "elementwise") return e.elementwise;
  if (cls == "scan") return e.scan;
  if (cls == "attention") return e.attention;
  if (cls == "norm") return e.norm;
  throw std::logic_error("calibrate: no efficiency field " + cls);
}

// The value in [lo, hi] at which `price`, falling as the value grows, equals `measured`: bisection
// in log space; a bound when the price there already passes the measurement (*clamped).
template <class Price>
double solve_falling_price(Price&& price, double measured, double lo, double hi, bool* clamped) {
  *clamped = true;
  if (price(hi) >= measured) return hi;
  if (price(lo) <= measured) return lo;
  *clamped = false;
  double a = std::log(lo), b = std::log(hi);
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (a + b);
    (price(std::exp(mid)) > measured ? a : b) = mid;
  }
  return std::exp(0.5 * (a + b));
}

double fit_efficiency(const std::vector<Step>& steps, ChipSpec chip, const std::string& cls, double measured, bool* clamped) {
  auto price = [&](double eff) {
    efficiency_field(chip.efficiency, cls) = eff;
    double t = 0;
    for (const auto& s : steps)
      if (s.kind == StepKind::compute) t += compute_seconds(s, chip, DType::fp32);
    return t;
  };
  return solve_falling_price(price, measured, 1e-4, 1.0, clamped);
}

// efficiency.attention and efficiency.attention_softmax together, from the attention benchmarks
// (KernelBench::cls == "attention"): for each softmax value on a log grid (refined twice), the
// attention value that prices the benchmarks' total (fit_efficiency), scored by the sum of squared
// relative errors of the benchmarks one by one; the best pair is kept. With benchmarks at two head
// sizes the two are separable: a score costs the same vector work whatever the head size, a matrix
// FLOP the same whatever the score count. Each benchmark's recorded value is then its own
// attention value at the chosen softmax value.
void fit_attention_softmax(std::vector<KernelBench>& benches, ChipSpec& chip) {
  std::vector<std::pair<std::vector<Step>, KernelBench*>> att;
  std::vector<Step> all;
  double total = 0;
  for (auto& k : benches)
    if (k.cls == "attention" && (k.op.empty() || k.also_class)) {  // not a kernel with its own value (the decode kernel)
      att.emplace_back(k.steps, &k);
      all.insert(all.end(), att.back().first.begin(), att.back().first.end());
      total += k.seconds;
    }
  if (att.size() < 2) return;
  auto priced = [&](double softmax, double* attention) {
    chip.efficiency.attention_softmax = softmax;
    bool clamped = false;
    *attention = fit_efficiency(all, chip, "attention", total, &clamped);
    chip.efficiency.attention = *attention;
    double sq = 0;
    for (const auto& [steps, k] : att) {
      double t = 0;
      for (const auto& s : steps) t += compute_seconds(s, chip, DType::fp32);
      sq += (t / k->seconds - 1) * (t / k->seconds - 1);
    }
    return sq;
  };
  double lo = std::log(1e-4), hi = 0, best_x = hi, best_sq = 1e300, best_att = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const int n = 40;
    for (int i = 0; i <= n; ++i) {
      const double x = lo + (hi - lo) * i / n;
      double a = 0;
      const double sq = priced(std::exp(x), &a);
      if (sq < best_sq) best_sq = sq, best_x = x, best_att = a;
    }
    const double step = (hi - lo) / n;
    lo = std::max(std::log(1e-4), best_x - step);
    hi = std::min(0.0, best_x + step);
  }
  chip.efficiency.attention_softmax = std::exp(best_x);
  chip.efficiency.attention = best_att;
  for (auto& [steps, k] : att) k->efficiency = fit_efficiency(steps, chip, "attention", k->seconds, &k->clamped);
}

void fit_kernel_efficiencies(std::vector<KernelBench>& benches, ChipSpec& chip) {
  // The tuned kernels' own values first: each prices only its own op's steps, so it needs no other
  // value. A class benchmark that also runs a tuned kernel of another class (the MLP's gemm
  // benchmark runs gelu ⊙) then prices that step as the simulator will, with the kernel's own
  // value; fitted the other way round, the gemm value absorbed the gelu's time at the elementwise
  // class value and the simulator charged it a second time at gelu_mul's (gemm +19–25 % in validate).
  auto fit_own = [&](KernelBench& k) {
    std::vector<Step> steps;
    for (const auto& s : k.steps)
      if (k.op == (s.kernel ? s.kernel : s.op)) steps.push_back(s);
    k.efficiency = fit_efficiency(steps, chip, k.op, k.seconds, &k.clamped);
    chip.efficiency.ops[k.op] = k.efficiency;
  };
  // A tuned attention kernel (the decode kernel) prices its per-score vector work with
  // attention_softmax, fitted last: its own value waits for it.
  auto own_last = [](const KernelBench& k) { return k.cls == "attention" && !k.also_class; };
  chip.efficiency.decode_attention_memory_curve.clear();  // fitted at the end from this call's values
  for (auto& k : benches)
    if (!k.op.empty() && !own_last(k)) fit_own(k);
  const auto tuned = chip.efficiency.ops;
  for (const char* cls : kCalibratedClasses) {
    // Each benchmark's own efficiency (recorded), then one for the class: the value at which the
    // benchmarks' steps together cost their measured total (time-weighted, so the larger kernels
    // the runner spends its time in count most). The class's own tuned kernels join its fit at the
    // class value (also_class); other classes' tuned kernels keep their own values.
    ChipSpec fit_chip = chip;
    for (const auto& k : benches)
      if (k.cls == cls && !k.op.empty()) fit_chip.efficiency.ops.erase(k.op);
    std::vector<Step> all;
    double total = 0;
    for (auto& k : benches) {
      if (k.cls != cls || (!k.op.empty() && !k.also_class)) continue;
      const auto& steps = k.steps;
      bool clamped = false;
      const double eff = fit_efficiency(steps, fit_chip, cls, k.seconds, &clamped);
      if (k.op.empty()) k.efficiency = eff, k.clamped = clamped;  // a tuned kernel keeps its own value
      all.insert(all.end(), steps.begin(), steps.end());
      total += k.seconds;
    }
    bool clamped = false;
    efficiency_field(chip.efficiency, cls) = fit_efficiency(all, fit_chip, cls, total, &clamped);
    chip.efficiency.ops = tuned;
  }
  fit_attention_softmax(benches, chip);
  for (auto& k : benches)
    if (!k.op.empty() && own_last(k)) fit_own(k);
  chip.efficiency.decode_attention_memory_curve = fit_decode_attention_memory_curve(benches, chip);
}

std::vector<std::pair<double, double>> fit_decode_attention_memory_curve(std::vector<KernelBench>& benches, const ChipSpec& chip) {
  std::vector<std::pair<double, double>> points;
  for (auto& k : benches) {
    const bool own = k.cls == "attention" && k.op == ops::attention_decode;
    if ((!own && k.cls != kDecodeAttentionMemoryClass) || k.seconds <= 0) continue;
    std::vector<Step> steps;
    double working_set = 0;
    for (const auto& s : k.steps)
      if (is_decode_attention(s)) {
        steps.push_back(s);
        working_set = std::max({working_set, s.bytes_read + s.bytes_written, s.reuse_bytes});
      }
    if (steps.empty()) continue;
    // priced with this point alone: the fraction at which the steps cost their measured time, or
    // the triad's at this working set when that price already reaches it (compute-bound: C10)
    ChipSpec c = chip;
    const double triad = chip.efficiency.memory_at(working_set);
    auto price = [&](double fraction) {
      c.efficiency.decode_attention_memory_curve = {{working_set, fraction}};
      double t = 0;
      for (const auto& s : steps) t += compute_seconds(s, c, DType::fp32);
      return t;
    };
    // (relative slack: C10's own compute value was fitted to its time by bisection, to ~1e-15);
    // slower than its bytes at any rate: held at the floor 1e-6
    bool at_bound = false;
    const double fraction = solve_falling_price(price, k.seconds * (1 - 1e-9), 1e-6, triad, &at_bound);
    if (k.cls == kDecodeAttentionMemoryClass) k.efficiency = fraction, k.clamped = fraction == triad;
    points.emplace_back(working_set, fraction);
  }
  std::sort(points.begin(), points.end());
  std::vector<std::pair<double, double>> curve;  // bytes increasing (the loader's rule): one point per size
  for (const auto& p : points)
    if (curve.empty() || p.first > curve.back().first) curve.push_back(p);
  return curve.size() >= 2 ? curve : std::vector<std::pair<double, double>>{};
}

std::vector<std::pair<double, double>> fit_gemm_curve(std::vector<GemmStepSample>& samples, const ChipSpec& chip) {
  ChipSpec flat = chip;  // each sample priced at one gemm value: its own
  flat.efficiency.gemm_curve.clear();
  std::vector<GemmStepSample*> sorted;
  for (auto& g : samples) {
    if (g.seconds <= 0 || g.steps.empty()) continue;
    g.efficiency = fit_efficiency(g.steps, flat, "gemm", g.seconds, &g.clamped);
    // clamped: priced at least its time at any value (memory-bound) or slower than the roofline
    // allows at every value; either way it says nothing about the GEMM's rate
    if (!g.clamped) sorted.push_back(&g);
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) { return a->gemm_flops < b->gemm_flops; });
  std::vector<std::pair<double, double>> curve;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    std::vector<Step> steps;
    double seconds = 0, log_flops = 0;
    for (; j < sorted.size() && sorted[j]->gemm_flops <= kGemmBinRatio * sorted[i]->gemm_flops; ++j) {
      steps.insert(steps.end(), sorted[j]->steps.begin(), sorted[j]->steps.end());
      seconds += sorted[j]->seconds;
      log_flops += std::log(sorted[j]->gemm_flops);
    }
    bool clamped = false;
    curve.emplace_back(std::exp(log_flops / double(j - i)), fit_efficiency(steps, flat, "gemm", seconds, &clamped));
    i = j;
  }
  return curve;
}

double fit_call_seconds(const std::vector<KernelBench>& benches, const ChipSpec& chip, double floor_seconds) {
  ChipSpec bare = chip;  // the roofline price alone
  bare.launch_overhead_seconds = 0;
  std::vector<double> per_call;
  for (const auto& k : benches) {
    if (k.cls != kCallBenchClass || k.seconds <= 0) continue;
    double roofline = 0, calls = 0;
    for (const auto& s : k.steps) {
      roofline += compute_seconds(s, bare, DType::fp32);
      calls += s.calls;
    }
    if (calls > 0) per_call.push_back((k.seconds - roofline) / calls);
  }
  if (per_call.empty()) return floor_seconds;
  return std::max(floor_seconds, stats::median(per_call));
}

std::vector<std::pair<double, double>> fit_gemv_memory_curve(const std::vector<TriadSample>& gemv, double memory_bytes_per_s) {
  std::vector<std::pair<double, double>> curve;
  for (const auto& g : gemv) {
    if (!(g.bytes > 0) || !(g.bytes_per_s > 0)) continue;
    if (!curve.empty() && g.bytes <= curve.back().first) continue;  // the loader wants bytes increasing
    curve.emplace_back(g.bytes, std::clamp(g.bytes_per_s / memory_bytes_per_s, 1e-6, 1.0));
  }
  return curve;
}

std::vector<std::pair<double, double>> fit_decode_attention_rows_curve(const std::vector<DecodeAttentionRowsSample>& samples,
                                                                       double reference_rows) {
  std::vector<DecodeAttentionRowsSample> sorted;
  for (const auto& s : samples)
    if (s.rows > 0 && s.seconds_per_key_head > 0) sorted.push_back(s);
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.rows < b.rows; });
  const auto ref = std::find_if(sorted.begin(), sorted.end(), [&](const auto& s) { return s.rows == reference_rows; });
  if (ref == sorted.end()) return {};
  const double reference_rate = 1.0 / ref->seconds_per_key_head;
  std::vector<std::pair<double, double>> curve;
  for (const auto& s : sorted)
    if (curve.empty() || s.rows > curve.back().first)  // the loader wants rows increasing
      curve.emplace_back(s.rows, std::clamp((1.0 / s.seconds_per_key_head) / reference_rate, 1e-6, 1.0));
  return curve;
}

double decode_attention_reference_rows(const std::vector<KernelBench>& benches) {
  for (const auto& b : benches)
    if (b.cls == "attention" && b.op == ops::attention_decode)
      for (const auto& s : b.steps)
        if (is_decode_attention(s)) return static_cast<double>(s.m);
  return 0;
}

ChipSpec chip_from_peaks(const std::vector<GemmSample>& gemm, const std::vector<TriadSample>& triad, double vector_flops_per_s,
                         double launch_overhead_seconds) {
  if (gemm.empty() || triad.empty()) throw std::invalid_argument("chip_from_peaks: needs sgemm and triad samples");
  ChipSpec chip;
  double peak = 0, bw = 0;
  for (const auto& g : gemm) peak = std::max(peak, g.flops_per_s);
  for (const auto& t : triad) bw = std::max(bw, t.bytes_per_s);
  chip.peak_flops_per_s["fp32"] = peak;
  chip.vector_flops_per_s = vector_flops_per_s;
  chip.memory_bytes_per_s = bw;
  chip.matrix_tile = 1;
  chip.launch_overhead_seconds = launch_overhead_seconds;
  // The fraction of that rate each triad working set reached: a step streaming tens of MB is
  // priced at the DRAM rate, a small one at the in-cache rate.
  for (const auto& t : triad) chip.efficiency.memory_curve.emplace_back(t.bytes, std::min(1.0, t.bytes_per_s / bw));
  chip.efficiency.memory = chip.efficiency.memory_curve.back().second;
  chip.efficiency.network = 1.0;
  return chip;
}

CommFit fit_collective(const std::string& kind, std::vector<std::pair<double, double>> samples, int P) {
  CommFit f;
  f.kind = kind;
  f.samples = std::move(samples);
  std::vector<double> x, y;
  for (const auto& [bytes, s] : f.samples) { x.push_back(bytes); y.push_back(s); }
  f.fit = stats::fit_affine_relative(x, y);
  // Simulator formulas (sim/cost.cpp) on one island of P devices:
  //   all-reduce 2(P−1)/P·b/bw + 2(P−1)·lat; all-gather, reduce-scatter (P−1)/P·b/bw + (P−1)·lat;
  //   send/recv lat + b/bw.
  const double Pd = P;
  double bw_factor = 1, lat_factor = 1;
  if (f.kind == ops::all_reduce) { bw_factor = 2 * (Pd - 1) / Pd; lat_factor = 2 * (Pd - 1); }
  else if (f.kind != ops::send_recv) { bw_factor = (Pd - 1) / Pd; lat_factor = Pd - 1; }
  const double smallest = f.samples.front().second;
  f.link_bytes_per_s = f.fit.slope > 0 ? bw_factor / f.fit.slope : 0;
  // A negative fitted intercept (noise) falls back to half the smallest message's time.
  f.link_latency_seconds = (f.fit.intercept > 0 ? f.fit.intercept : 0.5 * smallest) / lat_factor;
  return f;
}

std::vector<std::pair<double, double>> traced_collective_samples(const std::vector<Trace>& runs, const std::string& kind) {
  std::map<double, std::vector<double>> by_bytes;  // bytes of one call -> seconds of one call, per step
  for (const auto& run : runs)
    for (std::size_t i = 1; i < run.steps().size(); ++i)
      for (const auto& [key, cell] : run.steps()[i].cells) {
        if (std::get<1>(key) != kind || std::get<2>(key) == tensors::step_metrics || cell.calls <= 0) continue;
        const double bytes = cell.bytes / double(cell.calls), seconds = cell.seconds / double(cell.calls);
        if (std::isfinite(bytes) && bytes > 0 && std::isfinite(seconds) && seconds > 0) by_bytes[bytes].push_back(seconds);
      }
  std::vector<std::pair<double, double>> out;
  for (const auto& [bytes, seconds] : by_bytes) out.emplace_back(bytes, stats::median(seconds));
  return out;
}

CommFit fit_collective_in_step(const CommFit& bench, const std::vector<std::pair<double, double>>& traced, int P) {
  if (traced.empty()) return bench;
  std::vector<std::pair<double, double>> samples;
  for (const auto& s : bench.samples)
    if (s.first < traced.front().first) samples.push_back(s);
  samples.insert(samples.end(), traced.begin(), traced.end());
  if (samples.size() < 2) return bench;
  return fit_collective(ops::all_reduce, std::move(samples), P);
}

Jitter jitter_from(double stretch_seconds, double wait_seconds, int P) {
  Jitter j;
  j.stretch_seconds = stretch_seconds;
  j.wait_seconds = wait_seconds;
  j.jitter = std::min(0.5, j.wait_seconds / (j.stretch_seconds * expected_max_standard_normal(P)));
  return j;
}

namespace {
// One collective fit under `measurements:` (`head` its key, indented): the fit, the link it
// implies and its samples (`what` follows the samples' comment).
void comm_fit_yaml(std::ostringstream& y, const std::string& head, const CommFit& c, const std::string& what) {
  y << head << ":\n"
    << "      fit_latency_seconds: " << fmt6(c.fit.intercept) << "\n"
    << "      fit_seconds_per_byte: " << fmt6(c.fit.slope) << "\n"
    << "      fit_max_relative_residual: " << fmt6(c.fit.max_abs_relative_residual) << "\n"
    << "      link_bytes_per_s: " << fmt6(c.link_bytes_per_s) << "\n"
    << "      link_latency_seconds: " << fmt6(c.link_latency_seconds) << "\n"
    << "      samples:                  # [bytes, seconds]" << what << "\n";
  for (const auto& [b, s] : c.samples) y << "        - [" << fmt6(b) << ", " << fmt6(s) << "]\n";
}
}  // namespace

std::string calibrated_cluster_yaml(const std::string& name, bool quick, const CalibrationMeasurements& r, const ChipSpec& chip, const TopologySpec& topo,
                         const std::string& host, const std::string& date) {
  std::ostringstream y;
  const bool net = !r.comm.empty();
  y << "# Written by `scanshard calibrate` (" << (quick ? "--quick, " : "") << r.ranks << " rank(s)) on " << host << " at " << date << ".\n"
    << "# One device = one core running one MPI rank single-threaded. Re-run calibrate to refresh; the raw numbers\n"
    << "# are under `measurements:` (free-form, ignored by the loader).\n"
    << "name: " << yaml_string(name) << "\n"
    << "source: " << yaml_string("measured by scanshard calibrate on " + host + " at " + date + " with " + std::to_string(r.ranks) +
                                  " MPI rank(s)" + (quick ? " (--quick)" : "") +
                                  (net ? "" : "; network NOT measured (one rank): link numbers are the cpu-local placeholders")) << "\n"
    << "chip:\n"
    << "  name: " << yaml_string(chip.name) << "\n"
    << "  source: " << yaml_string(chip.source) << "\n"
    << "  peak_flops_per_s:\n"
    << "    fp32: " << fmt6(chip.peak_flops_per_s.at("fp32")) << "          # best OpenBLAS sgemm rate, one thread\n"
    << "  vector_flops_per_s: " << fmt6(chip.vector_flops_per_s) << "      # FMA loop on registers\n"
    << "  memory_bytes: " << fmt6(chip.memory_bytes) << "            # physical memory / devices\n"
    << "  memory_bytes_per_s: " << fmt6(chip.memory_bytes_per_s) << "      # best STREAM-triad rate over working sets (an in-cache one: the runner's test-size models live in cache; DRAM rates under measurements: triad)\n"
    << "  onchip_memory_bytes: " << fmt6(chip.onchip_memory_bytes) << "\n"
    << "  matrix_tile: 1\n"
    << "  launch_overhead_seconds: " << fmt6(chip.launch_overhead_seconds)
    << "   # per kernel call, as a decode step calls them (fit_call_seconds; the hot loop's under measurements)\n"
    << "  compute_jitter: " << fmt6(chip.compute_jitter) << "   # rank-to-rank spread of compute time: waits at collectives\n"
    << "  efficiency:                     # roofline price of the runner's kernels = measured time\n"
    << (chip.efficiency.gemm_curve.empty() ? "    gemm: " + fmt6(chip.efficiency.gemm) + "\n"
                                           : "    gemm_curve: " + curve_text(chip.efficiency.gemm_curve) +
                                                 "   # [FLOPs of one GEMM, fraction of peak]: the executor's GEMM steps, binned\n")
    << "    elementwise: " << fmt6(chip.efficiency.elementwise) << "\n"
    << "    scan: " << fmt6(chip.efficiency.scan) << "\n"
    << "    attention: " << fmt6(chip.efficiency.attention) << "\n"
    << "    attention_softmax: " << fmt6(chip.efficiency.attention_softmax) << "   # the attention core's per-score vector work\n"
    << "    norm: " << fmt6(chip.efficiency.norm) << "\n"
    << "    memory_curve: " << curve_text(chip.efficiency.memory_curve)
    << "   # [bytes a step moves, fraction of memory_bytes_per_s]: the triad working sets\n"
    << (chip.efficiency.gemv_memory_curve.empty() ? ""
                                                  : "    gemv_memory_curve: " + curve_text(chip.efficiency.gemv_memory_curve) +
                                                        "   # [weight bytes, fraction of memory_bytes_per_s]: the one-row linear (sgemv)\n")
    << (chip.efficiency.decode_attention_rows_curve.empty()
            ? ""
            : "    decode_attention_rows_curve: " + curve_text(chip.efficiency.decode_attention_rows_curve) +
                  "   # [query heads per K/V head, fraction of the rate at C10's]: the decode attention kernel, hot loop\n")
    << (chip.efficiency.decode_attention_memory_curve.empty()
            ? ""
            : "    decode_attention_memory_curve: " + curve_text(chip.efficiency.decode_attention_memory_curve) +
                  "   # [bytes a decode token cycles through, fraction of memory_bytes_per_s]: the decode attention (C10, C14)\n")
    << "    network: " << fmt6(chip.efficiency.network) << "\n";
  if (!chip.efficiency.ops.empty()) {
    y << "    ops:                          # kernels priced with their own value (kTunedOps)\n";
    for (const auto& [op, eff] : chip.efficiency.ops) y << "      " << op << ": " << fmt6(eff) << "\n";
  }
  y << "topology:\n"
    << "  kind: islands\n"
    << "  islands: 1\n"
    << "  devices_per_island: " << topo.devices_per_island << "\n"
    << "  island_link_bytes_per_s: " << fmt6(topo.island_link_bytes_per_s)
    << (!net ? "   # placeholder"
             : r.traced_all_reduce.empty() ? "   # from the all-reduce benchmark's fit"
                                           : "   # from the all-reduce fit over the training steps' gradient all-reduces (mpi_in_step)")
    << "\n"
    << "  island_latency_seconds: " << fmt6(topo.island_latency_seconds)
    << (net ? "   # per hop (a ring step is 2): collectives after a stretch of compute and a barrier (a training step)" : "") << "\n";
  if (topo.island_latency_back_to_back_seconds > 0)
    y << "  island_latency_back_to_back_seconds: " << fmt6(topo.island_latency_back_to_back_seconds)
      << "   # per hop: collectives a few us apart (a decode step's)\n";
  y
    << "  network_bytes_per_s: " << fmt6(topo.network_bytes_per_s) << "       # one island: unused\n"
    << "  network_latency_seconds: " << fmt6(topo.network_latency_seconds) << "\n"
    << "measurements:\n"
    << "  date: " << yaml_string(date) << "\n"
    << "  host: " << yaml_string(host) << "\n"
    << "  ranks: " << r.ranks << "\n"
    << "  threads_per_rank: 1\n"
    << "  quick: " << (quick ? "true" : "false") << "\n"
    << "  load_average_1min: [" << fmt6(r.load_start) << ", " << fmt6(r.load_end) << "]   # at start and end; > cores: timings inflated\n"
    << "  probe_seconds: " << fmt6(r.probe_seconds) << "   # measure/probe.hpp: sgemm 256^3 + 3 MiB triad, median; validate's drift reference\n"
    << "  seconds: " << fmt6(r.seconds) << "\n"
    << "  sgemm:                          # [m, n, k, seconds, flop/s], mean over ranks\n";
  for (const auto& g : r.gemm)
    y << "    - [" << g.m << ", " << g.n << ", " << g.k << ", " << fmt6(g.seconds) << ", " << fmt6(g.flops_per_s) << "]\n";
  y << "  triad:                          # [bytes streamed, bytes/s]\n";
  for (const auto& t : r.triad) y << "    - [" << fmt6(t.bytes) << ", " << fmt6(t.bytes_per_s) << "]\n";
  if (!r.gemv.empty()) {
    y << "  gemv:                           # [weight bytes, bytes/s]: the one-row linear over the triad's working sets\n";
    for (const auto& t : r.gemv) y << "    - [" << fmt6(t.bytes) << ", " << fmt6(t.bytes_per_s) << "]\n";
  }
  if (!r.decode_attention_rows.empty()) {
    y << "  decode_attention_rows:          # [query heads per K/V head, seconds per key and query head]: the kernel, hot loop\n";
    for (const auto& d : r.decode_attention_rows) y << "    - [" << fmt6(d.rows) << ", " << fmt6(d.seconds_per_key_head) << "]\n";
  }
  if (r.memory_probe_seconds > 0)
    y << "  memory_probe_seconds: " << fmt6(r.memory_probe_seconds)
      << "   # measure/probe.hpp: a triad over 3 x 32 MiB on every rank at once; validate's memory-drift reference\n";
  y << "  vector_fma_flops_per_s: " << fmt6(r.vector_flops) << "\n"
    << "  launch_overhead_hot_loop_seconds: " << fmt6(r.launch) << "   # one tiny RMSNorm called 2000 times in a loop\n"
    << "  jitter: {stretch_seconds: " << fmt6(r.jitter.stretch_seconds) << ", wait_seconds: " << fmt6(r.jitter.wait_seconds)
    << "}   # a training step's compute (calibrate's first plan, data = ranks), then the wait at its loss all-reduce (medians)\n"
    << "  rank_kernel_seconds: [";
  for (std::size_t i = 0; i < r.rank_kernel_seconds.size(); ++i) y << (i ? ", " : "") << fmt6(r.rank_kernel_seconds[i]);
  y << "]   # each rank's sum of the kernel benchmarks below, all ranks running them at once\n"
    << "  kernels:                        # seconds per training step of a calibration plan (the executor's trace)\n";
  for (const auto& k : r.kernels)
    y << "    - {class: " << k.cls << ", plan: " << k.plan << ", model: " << k.model << ", steps: " << yaml_string(k.group)
      << ", seconds: " << fmt6(k.seconds) << ", efficiency: " << fmt6(k.efficiency) << ", clamped: " << (k.clamped ? "true" : "false")
      << "}\n";
  y << "  gemm_steps:                     # [plan, phase, op, name, m, n, k, layers, seconds per step, own gemm efficiency]\n";
  for (const auto& g : r.gemm_steps)
    y << "    - [" << g.plan << ", " << std::get<0>(g.key) << ", " << std::get<1>(g.key) << ", " << std::get<2>(g.key) << ", " << g.m
      << ", " << g.n << ", " << g.k << ", " << g.steps.size() << ", " << fmt6(g.seconds) << ", " << fmt6(g.efficiency) << "]\n";
  if (net) {
    y << "  mpi:                            # bytes = buffer per rank (all-gather: the gathered result)\n";
    for (const auto& c : r.comm) comm_fit_yaml(y, "    " + c.kind, c, "");
    if (!r.traced_all_reduce.empty()) {
      y << "  mpi_in_step:                    # the island link's fit: calibrate's plans trained as replicas (data = ranks)\n";
      comm_fit_yaml(y, "    all_reduce", r.comm_in_step, ": the benchmark's below the traced sizes, then the traced");
      y << "      traced:                   # [bytes, seconds]: the gradient all-reduces, median per size, max over ranks\n";
      for (const auto& [b, s] : r.traced_all_reduce) y << "        - [" << fmt6(b) << ", " << fmt6(s) << "]\n";
    }
    if (const CommFit& c = r.comm_back_to_back; !c.samples.empty()) {
      y << "  mpi_back_to_back:               # the all-reduce a few us apart, no barrier (a decode step's)\n";
      comm_fit_yaml(y, "    all_reduce", c, "");
    }
  }
  return y.str();
}

}  // namespace scanshard
