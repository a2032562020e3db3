// tests/unit/test_reports_lib.cpp — reports/ linked directly (no CLI, no MPI): the trace-to-estimate
// comparison on a hand-made 3-step trace (and a decode trace), validate's plan sets and scoring on synthetic
// measurements whose errors are known by construction, and calibrate's fits on synthetic samples
// drawn from known parameters. Expected values are derived in the test from those inputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <set>

#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/steps.hpp"
#include "reports/calibration.hpp"
#include "reports/compare.hpp"
#include "reports/trace_file.hpp"
#include "reports/validation.hpp"
#include "sim/cost.hpp"
#include "sim/network.hpp"
#include "sim/inference.hpp"
#include "sim/simulate.hpp"

using namespace scanshard;

namespace {

const GroupRow& row(const Comparison& c, const std::string& group) {
  for (const auto& g : c.groups)
    if (g.group == group) return g;
  FAIL("no group " << group);
  return c.groups.front();
}

// griffin-tiny, one device, 4 sequences of 128 tokens in one micro-batch, fp32 (validate's P01).
Plan one_device_plan() {
  Plan p;
  p.model = "griffin-tiny";
  p.global_batch = 4;
  p.micro_batch = 4;
  p.seq_len = 128;
  p.param_dtype = p.act_dtype = DType::fp32;
  p.overlap = false;
  return p;
}

}  // namespace

TEST_CASE("step names: the gradient sync and the accumulation stay apart, op groups merge fused steps", "[reports]") {
  CHECK(step_name("all_reduce", "grads") == "grads.sync");
  CHECK(step_name("grad_accumulate", "grads") == "grads");
  // ZeRO-2/3's per-block reduce-scatters, the embedding's and the head's too, are the sync
  for (const char* n : {"grads", "embed.grads", "head.grads"}) CHECK(step_name("reduce_scatter", n) == "grads.sync");
  CHECK(step_name("linear", "mlp.w1") == "mlp.w1");
  CHECK(op_group("mlp.w1") == "mlp");
  CHECK(op_group("mlp.gelu_mul") == "mlp");
  for (const char* n : {"rec.gate_a", "rec.gate_x", "rec.decay", "rec.scan", "scan.carry_fix"}) CHECK(op_group(n) == "rec.rglru");
  CHECK(op_group("rec.gated") == "rec.gate");
  CHECK(op_group("attn.scores_recompute") == "attn.core");
  CHECK(op_group("block.0.residual") == "residual");
  CHECK(op_group("attn.rope") == "attn.rope");
}

TEST_CASE("comparison of a 3-step trace: warm-up dropped, medians per group and of the wall time", "[reports]") {
  // Three steps of a trace file as `scanshard train --trace` writes them. Step 0 is the warm-up.
  TraceFile t;
  auto op = [](const char* phase, const char* o, const char* name, double s) { return TraceFile::Op{phase, o, name, s, 1}; };
  t.steps = {{0, 10.0, {op("forward", "linear", "mlp.w1", 9.0)}},
             {1, 2.0, {op("forward", "linear", "mlp.w1", 0.1), op("forward", "linear", "mlp.w2", 0.2),
                       op("forward", "rglru.scan", "rec.scan", 0.6), op("step_end", "all_reduce", "grads", 0.05)}},
             {2, 4.0, {op("forward", "linear", "mlp.w1", 0.5), op("step_end", "grad_accumulate", "grads", 0.07)}}};
  const auto steps = measured_steps(t);
  REQUIRE(steps.size() == 3);
  CHECK(steps[1].seconds_by_name.at("grads.sync") == 0.05);
  CHECK(steps[2].seconds_by_name.at("grads") == 0.07);

  const ModelSpec m = load_model("griffin-tiny");
  const Plan p = one_device_plan();
  const ClusterSpec c = cluster_slice(load_cluster("cpu-local"), 1);
  const Comparison cmp = compare(m, p, c, steps);
  CHECK(cmp.steps_total == 3);
  CHECK(cmp.steps_used == 2);
  CHECK(cmp.measured_step_seconds == Approx((2.0 + 4.0) / 2));  // median of the two measured walls
  CHECK(cmp.fastest_step_seconds == 2.0);
  // mlp: step 1 0.1 + 0.2, step 2 0.5 -> median 0.4. rec.rglru: 0.6 and (absent) 0 -> 0.3.
  CHECK(row(cmp, "mlp").measured == Approx((0.3 + 0.5) / 2));
  CHECK(row(cmp, "rec.rglru").measured == Approx((0.6 + 0.0) / 2));
  CHECK(row(cmp, "grads.sync").measured == Approx(0.05 / 2));
  CHECK(row(cmp, "grads").measured == Approx(0.07 / 2));

  // Predicted: each group is the sum of its steps' prices (forward and backward once per
  // micro-batch, the step's end once), priced here step by step, grouped by the names' prefix.
  const StepProgram prog = lower(m, p, 0);
  const Network net(Topology(c), c, p.mesh, p.placement);
  double mlp = 0, all = 0;
  const double mb = static_cast<double>(p.micro_batches());
  for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end}) {
    const auto secs = step_seconds(*list, c, net, p.act_dtype);
    const double times = list == &prog.step_end ? 1.0 : mb;
    for (std::size_t i = 0; i < list->size(); ++i) {
      all += times * secs[i];
      if (std::string((*list)[i].name).starts_with("mlp")) mlp += times * secs[i];
    }
  }
  CHECK(row(cmp, "mlp").predicted == Approx(mlp).epsilon(1e-12));
  CHECK(row(cmp, "mlp").cls == "gemm");
  double groups_total = 0;
  for (const auto& g : cmp.groups) groups_total += g.predicted;
  CHECK(groups_total == Approx(all).epsilon(1e-12));  // one device: no sync wait is spread over the groups
  CHECK(cmp.predicted_step_seconds == cmp.estimate.step_seconds);
  // Largest first.
  for (std::size_t i = 1; i < cmp.groups.size(); ++i)
    CHECK(std::max(cmp.groups[i - 1].predicted, cmp.groups[i - 1].measured) >=
          std::max(cmp.groups[i].predicted, cmp.groups[i].measured));
}

TEST_CASE("comparison of a sequence-parallel plan: rank 0 waits for the last shard at its first backward exchange", "[reports]") {
  // RWKV-4 on sequence=2: the last shard alone re-runs its WKV chunk from the true incoming state
  // (the carry fix), so it is slower; the simulator prices it, the groups are rank 0's. Reference:
  // each shard's program priced step by step here; the difference must land in rank 0's first
  // backward step on the sequence axis (the last layer's channel-mix token-shift halo).
  const ModelSpec m = load_model("rwkv4-tiny");
  Plan p = one_device_plan();
  p.model = m.name;
  p.mesh = parse_mesh("sequence=2", "test");
  const ClusterSpec c = cluster_slice(load_cluster("cpu-local"), 2);
  REQUIRE(c.chip.compute_jitter == 0);  // no sync wait spread over the meetings
  const Network net(Topology(c), c, p.mesh, p.placement);
  auto own = [&](std::int64_t rank) {
    const StepProgram prog = lower(m, p, rank);
    double t = 0;
    for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
      for (double s : step_seconds(*list, c, net, p.act_dtype)) t += s;
    return t;
  };
  const double first = own(0), last = own(1);
  REQUIRE(last > first);
  MeasuredStep step;
  step.wall_seconds = 1.0;
  const Comparison cmp = compare(m, p, c, {step, step}, /*warm_up=*/false);
  CHECK(cmp.predicted_step_seconds == Approx(last).epsilon(1e-9));
  double groups_total = 0;
  for (const auto& g : cmp.groups) groups_total += g.predicted;
  CHECK(groups_total == Approx(last).epsilon(1e-9));
  // the halo's own price: its forward and backward p2p steps on rank 0
  const StepProgram prog0 = lower(m, p, 0);
  double halo = 0;
  for (const auto* list : {&prog0.forward, &prog0.backward}) {
    const auto secs = step_seconds(*list, c, net, p.act_dtype);
    for (std::size_t i = 0; i < list->size(); ++i)
      if (std::string((*list)[i].name) == "cm.shift_halo") halo += secs[i];
  }
  CHECK(row(cmp, "cm.shift_halo").predicted == Approx(halo + (last - first)).epsilon(1e-9));
  CHECK(row(cmp, "cm.shift_halo").cls == "comm");
}

TEST_CASE("validate plan set: 57 plans, quick keeps every third, each names its own model", "[reports][validate]") {
  const auto all = validation_plan_set(false), quick = validation_plan_set(true);
  REQUIRE(all.size() == 57);
  REQUIRE(quick.size() == (57 + 2) / 3);
  std::set<std::string> ids;
  std::size_t bf16 = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].id == (i + 1 < 10 ? "P0" : "P") + std::to_string(i + 1));
    CHECK(all[i].plan.model == all[i].model.name);
    // every plan states its dtype: fp32, or bf16 for parameters and activations alike
    CHECK(all[i].plan.act_dtype == all[i].plan.param_dtype);
    bf16 += all[i].plan.act_dtype == DType::bf16;
    CHECK_FALSE(all[i].plan.overlap);
    ids.insert(all[i].id);
  }
  CHECK(bf16 >= 1);  // the runner's bf16 execution is validated too
  CHECK(ids.size() == all.size());
  for (std::size_t i = 0; i < quick.size(); ++i) CHECK(quick[i].id == all[3 * i].id);
  // Issue 28's kinds are in the set, each a legal plan: interleaved 1F1B, a local-attention window
  // longer than a sequence shard, rs_ag for RWKV-4 and RWKV-6, rs_ag on a vocabulary tensor does
  // not divide.
  bool interleaved = false, long_window = false, rs_ag_rwkv4 = false, rs_ag_rwkv6 = false, uneven_vocab = false;
  for (const auto& c : all) {
    INFO(describe_plan(c));
    CHECK(plan_violation(c.model, c.plan, c.plan.mesh.devices()) == nullptr);
    const Plan& p = c.plan;
    interleaved |= p.virtual_stages > 1;
    long_window |= p.mesh[Axis::sequence] > 1 && c.model.window > p.local_tokens() && c.model.family == Family::griffin;
    const bool rs_ag = p.mesh[Axis::tensor] > 1 && p.tensor_comm == TensorComm::rs_ag;
    rs_ag_rwkv4 |= rs_ag && c.model.family == Family::rwkv4;
    rs_ag_rwkv6 |= rs_ag && c.model.family == Family::rwkv6;
    uneven_vocab |= rs_ag && c.model.vocab % p.mesh[Axis::tensor] != 0;
  }
  CHECK(interleaved);
  CHECK(long_window);
  CHECK(rs_ag_rwkv4);
  CHECK(rs_ag_rwkv6);
  CHECK(uneven_vocab);
  // A variant keeps the family and takes the width and depth asked for.
  const ModelSpec v = validation_variant("griffin-tiny", 256, 3);
  CHECK(v.family == Family::griffin);
  CHECK(v.width == 256);
  CHECK(v.depth == 3);
}

TEST_CASE("validate scoring: errors and rank order of synthetic measurements known by construction", "[reports][validate]") {
  // Three 1-rank plans; plan 2 skipped. Each plan's every measured step is the simulator's step
  // time times a known factor, so its relative error (predicted − measured) / measured is
  // 1/factor − 1.
  auto cases = validation_plan_set(false);
  cases.resize(3);
  const ClusterSpec cluster = load_cluster("cpu-local");
  const double factor[3] = {1.25, 0.0, 0.8};
  std::vector<PlanMeasurement> measured(3);
  std::vector<double> predicted;
  for (int i : {0, 2}) {
    const double pred = simulate(cases[i].model, cases[i].plan, cluster_slice(cluster, cases[i].plan.mesh.devices())).step_seconds;
    predicted.push_back(pred);
    for (int s = 0; s < 3; ++s) measured[i].steps.push_back({factor[i] * pred, {}});
  }
  const ValidationResult r = score_validation(cases, measured, cluster, 0);
  REQUIRE(r.plans.size() == 2);
  CHECK(r.plans[0].plan_case->id == "P01");
  CHECK(r.plans[1].plan_case->id == "P03");
  const double e0 = 1 / 1.25 - 1, e2 = 1 / 0.8 - 1;  // −0.2, +0.25
  CHECK(r.plans[0].error == Approx(e0));
  CHECK(r.plans[1].error == Approx(e2));
  CHECK(r.primary.err.count == 2);
  CHECK(r.primary.err.max_abs == Approx(0.25));
  CHECK(r.primary.err.median_abs == Approx((0.2 + 0.25) / 2));
  // Two plans: measured in the predicted order -> +1, else −1.
  const bool same_order = (predicted[0] < predicted[1]) == (1.25 * predicted[0] < 0.8 * predicted[1]);
  CHECK(r.primary.rho == Approx(same_order ? 1.0 : -1.0));
  CHECK_FALSE(r.probe_scaled.has_value());

  ValidationRunInfo info;
  info.skipped = {"P02 (x): test"};
  const auto files = validation_files(r, cluster, info);
  REQUIRE(files.size() == 4);
  CHECK(files[0].first == "validate.json");
  const auto doc = nlohmann::json::parse(files[0].second);
  CHECK(doc["plans"].size() == 2);
  CHECK(doc["summary"]["max_abs_error"].get<double>() == Approx(0.25));
  CHECK(doc["skipped"].size() == 1);
  CHECK(doc["summary_probe_scaled"].is_null());
  const std::string& csv = files[1].second;
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 2);  // header + one row per plan that ran

  // Every plan skipped: nothing to score.
  CHECK_THROWS_AS(score_validation(cases, std::vector<PlanMeasurement>(3), cluster, 0), std::runtime_error);
}

TEST_CASE("decode plan set: legal serving plans over every family, batch 1 and 4, tensor 1 and 2, short and long contexts",
          "[reports][validate][decode]") {
  const auto all = decode_plan_set(false), quick = decode_plan_set(true);
  REQUIRE(all.size() == 9);
  REQUIRE(quick.size() == 5);
  for (std::size_t i = 0; i < quick.size(); ++i) CHECK(quick[i].id == all[2 * i].id);
  std::set<Family> families;
  std::set<std::int64_t> batches, tensors_;
  bool long_global = false, local_past_window = false, beyond_cache = false;
  const ClusterSpec cluster = load_cluster("cpu-local");
  for (std::size_t i = 0; i < all.size(); ++i) {
    const PlanCase& c = all[i];
    INFO(describe_plan(c));
    CHECK(c.id == "D0" + std::to_string(i + 1));
    REQUIRE(c.decode.has_value());
    const ServingShape& s = *c.decode;
    CHECK(c.plan.model == c.model.name);
    CHECK(serving_violations(c.model, c.plan, s, cluster_slice(cluster, c.plan.mesh.devices()).devices()).empty());
    // what the runner decodes: one replica, no pipeline, fp32, every tensor-split size divisible
    const std::int64_t t = c.plan.mesh[Axis::tensor];
    CHECK(c.plan.mesh.devices() == t);
    CHECK(c.plan.act_dtype == DType::fp32);
    CHECK(c.plan.param_dtype == DType::fp32);
    for (std::int64_t n : {c.model.width, c.model.mlp_width, c.model.recurrent_width, c.model.heads, c.model.gate_blocks})
      CHECK(n % t == 0);
    CHECK(s.sample_len >= 16);  // enough decode steps per pass for a median
    families.insert(c.model.family);
    batches.insert(s.batch);
    tensors_.insert(t);
    long_global |= c.model.family != Family::griffin && c.model.heads > 0 && s.context() >= 1024;
    local_past_window |= c.model.window > 0 && s.prompt_len > c.model.window;
    beyond_cache |= stage_parameters(c.model, t, 1, 0) * 4 > 32 * 1048576;
  }
  CHECK(families.size() == 6);
  CHECK(batches == std::set<std::int64_t>{1, 4});
  CHECK(tensors_ == std::set<std::int64_t>{1, 2});
  CHECK(long_global);
  CHECK(local_past_window);
  CHECK(beyond_cache);
  CHECK(describe_plan(all[1]) == "griffin-tiny decode tensor=2 B=4 P=1024 S=32");
}

TEST_CASE("decode comparison of a synthetic trace: the prefill dropped, per-token medians against sim/inference",
          "[reports][validate][decode]") {
  const PlanCase c = decode_plan_set(false).at(3);  // mqa-tiny, one device, B=1, P=2048, S=32
  REQUIRE(c.plan.mesh.devices() == 1);
  const ServingShape s = *c.decode;
  const ClusterSpec cl = cluster_slice(load_cluster("cpu-local"), 1);
  const InferenceEstimate e = simulate_inference(c.model, c.plan, cl, s);
  // A prefill step, then three tokens at 2x, 1x and 4x the predicted per-token latency.
  const double pred = e.per_token_seconds;
  std::vector<MeasuredStep> steps = {{1.0, {{"attn.core", 0.9}}},
                                     {2 * pred, {{"attn.core", 1e-3}, {"mlp.w1", 2e-4}, {"mlp.w3", 1e-4}}},
                                     {1 * pred, {{"attn.core", 3e-3}, {"mlp.w1", 1e-4}}},
                                     {4 * pred, {{"attn.core", 2e-3}}}};
  const Comparison cmp = compare_decode(c.model, c.plan, s, cl, steps);
  CHECK(cmp.steps_used == 3);
  CHECK(cmp.predicted_step_seconds == pred);
  CHECK(cmp.measured_step_seconds == Approx(2 * pred));  // median of 2, 1, 4
  CHECK(cmp.fastest_step_seconds == Approx(pred));
  CHECK(row(cmp, "attn.core").measured == Approx(2e-3));  // median of 1, 3, 2 ms
  CHECK(row(cmp, "mlp").measured == Approx(1e-4));        // 0.3, 0.1 and (absent) 0 ms
  REQUIRE(cmp.inference.has_value());
  // One device, no pipeline: the groups add up to the per-token latency (S = 32 positions, each
  // priced once, averaged), and the global cache's attention is the largest group at P = 2048.
  double total = 0;
  for (const auto& g : cmp.groups) total += g.predicted;
  CHECK(total == Approx(pred).epsilon(1e-9));
  CHECK(row(cmp, "attn.core").cls == "attention");
  // attention reads every cached row: its mean over positions P..P+S-1 equals its price at the
  // mean position (linear in n), priced here on one pass
  const InferencePass mid = lower_decode(c.model, c.plan, 0, s.batch, s.prompt_len);
  const Network net(Topology(cl), cl, c.plan.mesh, c.plan.placement);
  double attn_at_p = 0;
  for (const auto& g : mid.groups) {
    const auto secs = step_seconds(g.steps, cl, net, c.plan.act_dtype);
    for (std::size_t i = 0; i < g.steps.size(); ++i)
      if (std::string(g.steps[i].name) == "attn.core") attn_at_p += static_cast<double>(g.count) * secs[i];
  }
  CHECK(row(cmp, "attn.core").predicted > attn_at_p);  // later positions read more rows
  CHECK(row(cmp, "attn.core").predicted < attn_at_p * (s.prompt_len + s.sample_len) / s.prompt_len);
  // a pipelined serving plan is not compared
  Plan piped = c.plan;
  piped.mesh[Axis::pipeline] = 2;
  CHECK_THROWS_AS(compare_decode(c.model, piped, s, load_cluster("cpu-local"), steps), ConfigError);
}

TEST_CASE("validate scoring of decode plans: per-token errors scored apart from training's, and their files",
          "[reports][validate][decode]") {
  // Training plan P01 measured at 1.25x its prediction; decode plans D01 and D03 at 0.5x and 1.1x
  // theirs: errors 1/factor - 1 = -0.2 (training), +1.0 and -0.0909 (decode).
  std::vector<PlanCase> cases = {validation_plan_set(false).at(0)};
  const auto dec = decode_plan_set(false);
  cases.push_back(dec.at(0));
  cases.push_back(dec.at(2));
  const ClusterSpec cluster = load_cluster("cpu-local");
  const double factor[3] = {1.25, 0.5, 1.1};
  std::vector<PlanMeasurement> measured(3);
  std::vector<double> pred(3);
  pred[0] = simulate(cases[0].model, cases[0].plan, cluster_slice(cluster, 1)).step_seconds;
  for (int i : {1, 2}) pred[i] = simulate_inference(cases[i].model, cases[i].plan, cluster_slice(cluster, 1), *cases[i].decode).per_token_seconds;
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) measured[i].steps.push_back({factor[i] * pred[i], {}});
  const ValidationResult r = score_validation(cases, measured, cluster, 0);
  REQUIRE(r.plans.size() == 1);
  REQUIRE(r.decode_plans.size() == 2);
  CHECK(r.plans[0].error == Approx(-0.2));
  CHECK(r.primary.err.count == 1);
  CHECK(r.decode_plans[0].plan_case->id == "D01");
  CHECK(r.decode_plans[0].error == Approx(1.0));
  CHECK(r.decode_plans[1].error == Approx(1 / 1.1 - 1));
  CHECK(r.decode.err.count == 2);
  CHECK(r.decode.err.max_abs == Approx(1.0));
  CHECK(r.decode.err.median_abs == Approx((1.0 + (1 - 1 / 1.1)) / 2));
  // every token the same: the fastest is the median
  CHECK(r.decode_fastest.err.median_abs == Approx(r.decode.err.median_abs));

  const auto files = validation_files(r, cluster, ValidationRunInfo{});
  REQUIRE(files.size() == 5);
  CHECK(files[4].first == "validate-decode.csv");
  CHECK(std::count(files[4].second.begin(), files[4].second.end(), '\n') == 1 + 2);
  const auto doc = nlohmann::json::parse(files[0].second);
  CHECK(doc["plans"].size() == 1);
  REQUIRE(doc["decode"]["plans"].size() == 2);
  const auto& d1 = doc["decode"]["plans"][1];
  CHECK(d1["id"] == "D03");
  const double B = static_cast<double>(cases[2].decode->batch);
  CHECK(d1["measured_tokens_per_s"].get<double>() == Approx(B / (1.1 * pred[2])));
  CHECK(d1["predicted_tokens_per_s"].get<double>() == Approx(B / pred[2]));
  CHECK(doc["decode"]["summary"]["max_abs_error"].get<double>() == Approx(1.0));
  CHECK(doc["decode"]["summary"]["plans"] == 2);

  // Decode plans alone are scored (the training summary stays empty).
  const std::vector<PlanCase> decode_only = {cases[1], cases[2]};
  const ValidationResult only = score_validation(decode_only, {measured[1], measured[2]}, cluster, 0);
  CHECK(only.plans.empty());
  CHECK(only.decode.err.count == 2);
}

TEST_CASE("calibrate fits: a collective's link from samples drawn from latency + bytes/bandwidth", "[reports][calibrate]") {
  // all-reduce on P ranks, priced by the simulator as 2(P−1)/P·b/bw + 2(P−1)·lat: samples with
  // a known intercept α and slope β recover bw = 2(P−1)/P / β and lat = α / (2(P−1)).
  const double alpha = 5e-6, beta = 1e-9;
  std::vector<std::pair<double, double>> samples;
  for (double b = 8; b <= 64.0 * 1024 * 1024; b *= 8) samples.push_back({b, alpha + beta * b});
  for (int P : {2, 4}) {
    const CommFit f = fit_collective("all_reduce", samples, P);
    CHECK(f.fit.intercept == Approx(alpha).epsilon(1e-6));
    CHECK(f.fit.slope == Approx(beta).epsilon(1e-6));
    CHECK(f.link_bytes_per_s == Approx(2.0 * (P - 1) / P / beta).epsilon(1e-6));
    CHECK(f.link_latency_seconds == Approx(alpha / (2.0 * (P - 1))).epsilon(1e-6));
  }
  // send/recv: lat + b/bw directly.
  const CommFit s = fit_collective("send_recv", samples, 2);
  CHECK(s.link_bytes_per_s == Approx(1 / beta).epsilon(1e-6));
  CHECK(s.link_latency_seconds == Approx(alpha).epsilon(1e-6));
  // A negative intercept falls back to half the smallest message's time.
  std::vector<std::pair<double, double>> neg;
  for (double b : {1e3, 1e6, 1e7}) neg.push_back({b, b * 1e-9 - 1e-7});  // intercept −0.1 us
  const CommFit n = fit_collective("send_recv", neg, 2);
  CHECK(n.link_latency_seconds == Approx(0.5 * neg.front().second));
}

TEST_CASE("calibrate fits: the island latency from a fit prices the fitted all-reduce through the network", "[reports][calibrate]") {
  // samples α + β·b on P ranks; the island written from the fit (hop latency, link bandwidth) must
  // give the simulator's all-reduce of b bytes back as α + β·b: a ring step inside an island is two hops
  const double alpha = 4e-6, beta = 2e-10;
  std::vector<std::pair<double, double>> samples;
  for (double b = 8; b <= 16.0 * 1024 * 1024; b *= 8) samples.push_back({b, alpha + beta * b});
  for (int P : {2, 4}) {
    INFO("P = " << P);
    const CommFit f = fit_collective("all_reduce", samples, P);
    ClusterSpec c = load_cluster("cpu-local");
    c.topology.devices_per_island = P;
    c.chip.efficiency.network = 1.0;
    c.topology.island_link_bytes_per_s = f.link_bytes_per_s;
    c.topology.island_latency_seconds = island_hop_latency_seconds(f);
    Mesh mesh;
    mesh[Axis::tensor] = P;
    const Network net(c, mesh);
    for (double b : {8.0, 4096.0, 1e6}) CHECK(all_reduce_seconds(b, net.axis(Axis::tensor)) == Approx(alpha + beta * b).epsilon(1e-6));
  }
}

TEST_CASE("calibrate fits: the island link from the gradient all-reduces training steps traced", "[reports][calibrate]") {
  // Traced all-reduces of b bytes take α + β·b (per call, the median step), the benchmark's hot
  // collectives α + β_hot·b: the fit over the traced sizes and the benchmark's below them gives
  // α, β back, hence (P = 2: 2(P−1)/P = 1, 2(P−1) = 2) link bandwidth 1/β and latency α/2.
  const double alpha = 6e-6, beta = 3e-10, beta_hot = 1e-10;
  const std::vector<double> traced_bytes = {262144, 1048576, 4194304};
  std::vector<Trace> runs(2);
  for (auto& run : runs)
    for (int step = 0; step < 4; ++step) {
      // the warm-up step (the first) 10x slow; the others spread 0.9, 1.0, 1.3 around the line
      const double spread = step == 0 ? 10.0 : std::array<double, 3>{0.9, 1.0, 1.3}[step - 1];
      const char* names[] = {tensors::grads, "embed.grads", "head.grads"};
      for (std::size_t i = 0; i < traced_bytes.size(); ++i) {
        const double b = traced_bytes[i];
        const int calls = i == 2 ? 2 : 1;  // a cell of two calls: bytes and seconds per call
        for (int c = 0; c < calls; ++c) run.add("step_end", ops::all_reduce, names[i], (alpha + beta * b) * spread);
        run.add_bytes("step_end", ops::all_reduce, names[i], calls * b);
      }
      // ignored: the loss all-reduce (the ranks' wait), a cell without bytes, a non-finite time,
      // another collective, a compute step, a cell with bytes but no call
      run.add("step_end", ops::all_reduce, tensors::step_metrics, 5e-3);
      run.add_bytes("step_end", ops::all_reduce, tensors::step_metrics, 24);
      run.add("step_end", ops::all_reduce, "no_bytes", 1e-3);
      run.add("step_end", ops::all_reduce, "nan_time", std::nan(""));
      run.add_bytes("step_end", ops::all_reduce, "nan_time", 65536);
      run.add("forward", ops::all_gather, "gather", 1e-3);
      run.add_bytes("forward", ops::all_gather, "gather", 2e6);
      run.add("forward", "linear", "mlp.w1", 1e-3);
      run.add_bytes("step_end", ops::all_reduce, "bytes_only", 8e6);
      run.end_step(step, 0, 0);
    }
  const auto traced = traced_collective_samples(runs, ops::all_reduce);
  REQUIRE(traced.size() == traced_bytes.size());
  for (std::size_t i = 0; i < traced.size(); ++i) {
    CHECK(traced[i].first == traced_bytes[i]);
    CHECK(traced[i].second == Approx(alpha + beta * traced_bytes[i]).epsilon(1e-12));
  }
  const auto gathers = traced_collective_samples(runs, ops::all_gather);
  REQUIRE(gathers.size() == 1);
  CHECK(gathers[0].first == 2e6);

  std::vector<std::pair<double, double>> bench_samples;
  for (double b = 8; b <= 64.0 * 1024 * 1024; b *= 4) bench_samples.push_back({b, b < traced_bytes[0] ? alpha + beta * b : alpha + beta_hot * b});
  const CommFit bench = fit_collective(ops::all_reduce, bench_samples, 2);
  const CommFit f = fit_collective_in_step(bench, traced, 2);
  CHECK(f.fit.intercept == Approx(alpha).epsilon(1e-6));
  CHECK(f.fit.slope == Approx(beta).epsilon(1e-6));
  CHECK(f.link_bytes_per_s == Approx(1 / beta).epsilon(1e-6));
  CHECK(f.link_latency_seconds == Approx(alpha / 2).epsilon(1e-6));
  CHECK(f.samples.size() == 8 + traced.size());  // 8 B … 128 KiB from the benchmark (8 sizes), then the traced
  CHECK(bench.fit.slope < 0.5 * beta);  // the benchmark alone: the hot line

  // Nothing traced, or a single traced size with no benchmark sample below it: the benchmark's fit.
  CHECK(fit_collective_in_step(bench, {}, 2).link_bytes_per_s == bench.link_bytes_per_s);
  CHECK(fit_collective_in_step(bench, {{4.0, 1e-3}}, 2).link_bytes_per_s == bench.link_bytes_per_s);
  CHECK(traced_collective_samples({}, ops::all_reduce).empty());
}

TEST_CASE("calibrate fits: the per-call cost is the decode kernels' median time beyond their roofline price, per call", "[reports][calibrate]") {
  // Steps that only move bytes (roofline price bytes / (bandwidth · memory efficiency), closed
  // form), made to measure price + calls · x0: the fit returns x0, whatever the bytes and calls.
  ChipSpec chip;
  chip.peak_flops_per_s["fp32"] = 1e11;
  chip.vector_flops_per_s = 1e11;
  chip.memory_bytes_per_s = 10e9;
  chip.efficiency.memory = 0.5;
  chip.launch_overhead_seconds = 123e-6;  // not used by the fit: it prices without any per-call cost
  auto step = [](double bytes, double calls) {
    Step s;
    s.cls = OpClass::norm;
    s.bytes_read = bytes;
    s.calls = calls;
    return s;
  };
  const double x0 = 0.8e-6, rate = 10e9 * 0.5;
  KernelBench a{kCallBenchClass, "C10", "m", "a", {"x"}, {step(512, 1), step(2048, 2)}};
  KernelBench b{kCallBenchClass, "C11", "m", "b", {"y"}, {step(1e5, 3)}};
  KernelBench c{kCallBenchClass, "C11", "m", "c", {"w"}, {step(4096, 2)}};  // an outlier: 10 x0 a call
  KernelBench none{kCallBenchClass, "C11", "m", "r", {"v"}, {step(4096, 0)}};  // no kernel call (a plain loop): no sample
  a.seconds = (512 + 2048) / rate + 3 * x0;
  b.seconds = 1e5 / rate + 3 * x0 * 1.2;   // 1.2 x0 a call
  c.seconds = 4096 / rate + 2 * x0 * 10;
  none.seconds = 1.0;
  KernelBench other{"norm", "C01", "m", "n", {"z"}, {step(1e6, 1)}};  // not a call benchmark: ignored
  other.seconds = 1.0;
  const std::vector<KernelBench> benches = {a, b, c, none, other};
  // the median of x0, 1.2 x0 and 10 x0 a call
  CHECK(fit_call_seconds(benches, chip, 0.1e-6) == Approx(1.2 * x0).epsilon(1e-9));
  // below the floor: the floor (the hot loop's cost)
  CHECK(fit_call_seconds(benches, chip, 2e-6) == 2e-6);
  // no call benchmarks: the floor
  CHECK(fit_call_seconds({other}, chip, 0.3e-6) == 0.3e-6);
  // calibrate's call benchmarks: the small kernels of a decode step, not its GEMMs, attention or
  // recurrences (their own decode values)
  for (const auto& c : calibration_plan_set()) {
    if (c.id != "C11") continue;
    const auto names = call_step_names(c);
    auto has = [&](const char* n) { return std::find(names.begin(), names.end(), n) != names.end(); };
    CHECK(has(tensors::norm1));
    CHECK(has(tensors::rec_gate_a));
    CHECK_FALSE(has(tensors::rec_scan));
    CHECK(has(tensors::rec_conv));
    CHECK(has(tensors::sample_token));
    CHECK_FALSE(has(tensors::mlp_w1));
    CHECK_FALSE(has(tensors::attn_core));
  }
}

TEST_CASE("calibrate fits: jitter from the wait at a collective, E of the max of two normals is 1 over sqrt pi", "[reports][calibrate]") {
  const Jitter j = jitter_from(1e-3, 1e-4, 2);
  // E[max of 2 standard normals] = 1/√π exactly; sim/cost.cpp keeps a 4-digit table (0.5642).
  CHECK(j.jitter == Approx(1e-4 / (1e-3 / std::sqrt(std::numbers::pi))).epsilon(1e-3));
  CHECK(jitter_from(1e-3, 1.0, 2).jitter == 0.5);  // capped
}

TEST_CASE("calibrate fits: the efficiency at which the roofline price equals the measured time", "[reports][calibrate]") {
  const CalibrationPlan c = calibration_plan_set().front();
  const auto steps = plan_steps(c.model, c.plan, {"mlp.w1", "mlp.w2"});
  // mlp.w1 and mlp.w2: forward, dx and dw of every layer (one micro-batch)
  CHECK(steps.size() == 2 * 3 * static_cast<std::size_t>(c.model.depth));
  for (const auto& s : steps) CHECK(s.kind == StepKind::compute);
  ChipSpec chip = load_cluster("cpu-local").chip;
  auto price = [&](double eff) {
    ChipSpec ch = chip;
    efficiency_field(ch.efficiency, "gemm") = eff;
    double t = 0;
    for (const auto& s : steps) t += compute_seconds(s, ch, DType::fp32);
    return t;
  };
  // A measured time between the prices at efficiency 1 and 1e-4: the fit prices it back.
  const double measured = 3 * price(1.0);
  bool clamped = true;
  const double eff = fit_efficiency(steps, chip, "gemm", measured, &clamped);
  CHECK_FALSE(clamped);
  CHECK(price(eff) == Approx(measured).epsilon(1e-6));
  // Faster than the roofline allows: clamped at 1.
  CHECK(fit_efficiency(steps, chip, "gemm", 0.5 * price(1.0), &clamped) == 1.0);
  CHECK(clamped);
  CHECK_THROWS(plan_steps(c.model, c.plan, {"no.such.step"}));
}

namespace {

// The trace the executor would record for `runs` runs of `steps` steps of a calibration plan if
// every compute step took exactly its roofline price on `chip`: the synthetic measurement.
std::vector<Trace> priced_traces(const CalibrationPlan& c, const ChipSpec& chip, int runs, int steps) {
  if (c.decode) {  // a decode trace: every token's step at the sample's middle position (the mean price)
    const ServingShape& sh = *c.decode;
    const InferencePass pass = lower_decode(c.model, c.plan, 0, sh.batch, sh.prompt_len + sh.sample_len / 2);
    std::vector<Trace> out(static_cast<std::size_t>(runs));
    for (auto& t : out)
      for (int s = 0; s < steps; ++s) {
        pass.for_each_list([&](const std::vector<Step>& list, std::int64_t times) {
          for (std::int64_t i = 0; i < times; ++i)
            for (const auto& st : list)
              if (st.kind == StepKind::compute) t.add("decode", st.op, st.name, compute_seconds(st, chip, DType::fp32));
        });
        if (s == 0) t.add("prefill", "attention.global", "attn.core", 1.0);  // the prefill: read_traces must skip it
        t.end_step(s, 0, 0);
      }
    return out;
  }
  const StepProgram prog = lower(c.model, c.plan, 0);
  std::vector<Trace> out(static_cast<std::size_t>(runs));
  for (auto& t : out)
    for (int s = 0; s < steps; ++s) {
      for (std::int64_t mb = 0; mb < prog.micro_batches; ++mb)
        for (const auto* list : {&prog.forward, &prog.backward})
          for (const auto& st : *list)
            if (st.kind == StepKind::compute) t.add(to_string(st.phase), st.op, st.name, compute_seconds(st, chip, DType::fp32));
      for (const auto& st : prog.step_end)
        if (st.kind == StepKind::compute) t.add(to_string(st.phase), st.op, st.name, compute_seconds(st, chip, DType::fp32));
      // a warm-up far slower than the rest: read_traces must skip it
      if (s == 0) t.add("forward", "linear", "mlp.w1", 1.0);
      t.end_step(s, 0, 0);
    }
  return out;
}

double class_value(Efficiency e, const std::string& cls) { return efficiency_field(e, cls); }

// A chip whose every tuned kernel that calibrate benchmarks has its own value, and whose GEMMs
// follow a curve by FLOPs: the truth the round trip must give back.
ChipSpec known_chip(const std::vector<KernelBench>& benches) {
  ChipSpec truth = load_cluster("cpu-local").chip;
  // memory fast enough that no step is memory-bound: every efficiency moves its steps' price
  truth.memory_bytes_per_s = 1e16;
  truth.efficiency.ops.clear();
  truth.efficiency.elementwise = 0.05;
  truth.efficiency.norm = 0.08;
  truth.efficiency.scan = 0.03;
  truth.efficiency.attention = 0.3;
  truth.efficiency.attention_softmax = 0.02;
  truth.efficiency.gemm_curve = {{1e6, 0.15}, {3e7, 0.5}, {3e8, 0.75}};
  truth.efficiency.gemm = truth.efficiency.gemm_curve.back().second;
  // Kernels fitted as their own value only get values of their own; those that also join their
  // class's fit (also_class) run at the class value, so that the class's fit (their time-weighted
  // mix) is the value the class's other steps (the RG-LRU decay, the logits' softmax statistics)
  // are priced at, and it can be recovered.
  double v = 0.01;
  for (const auto& k : benches)
    if (!k.op.empty()) truth.efficiency.ops[k.op] = k.also_class ? class_value(truth.efficiency, k.cls) : (v *= 1.3);
  return truth;
}

}  // namespace

TEST_CASE("calibrate fits: a trace's cells, each its median step after each run's warm-up, runs pooled, summed", "[reports][calibrate]") {
  // Independent reference: the median written out by hand from the values below.
  std::vector<Trace> runs(2);
  const std::vector<std::vector<double>> w1 = {{9.0, 1.0, 3.0}, {8.0, 2.0, 5.0}};  // per run, per step: mlp.w1
  const std::vector<std::vector<double>> dx = {{9.0, 0.5, 4.0}, {8.0, 0.5, 0.5}};  // its dx: one disturbed call
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t s = 0; s < 3; ++s) {
      runs[r].add("forward", "linear", "mlp.w1", w1[r][s]);
      runs[r].add("backward", "linear.dx", "mlp.w1", dx[r][s]);
      runs[r].add("forward", "linear", "mlp.w2", 100.0);
      runs[r].end_step(static_cast<long>(s), 0, 0);
    }
  auto w1_cells = [](const Trace::Key& k) { return std::get<2>(k) == "mlp.w1"; };
  // after the warm-ups, per cell: forward 1, 3, 2, 5 -> median 2.5; dx 0.5, 4, 0.5, 0.5 -> 0.5
  // (the median of the per-step sums 1.5, 7, 2.5, 5.5 would be 4)
  CHECK(median_cell_seconds(runs, w1_cells) == Approx(2.5 + 0.5));
  CHECK(median_cell_seconds(runs, [](const Trace::Key&) { return false; }) == 0);
  CHECK(median_cell_seconds({}, w1_cells) == 0);
}

TEST_CASE("calibrate fits: traces priced on a known chip give that chip back, a gemm bench's gelu priced once", "[reports][calibrate]") {
  // Independent reference: a chip with chosen efficiencies prices every compute step of every
  // calibration plan; those prices are the executor's "measured" trace. Reading the traces and
  // fitting must recover the chosen values: every tuned kernel's own value, the scan class, the
  // attention pair, and each GEMM step's point on the chosen curve — including the gemm class of
  // a benchmark (the gated MLP) that also runs a tuned elementwise kernel (gelu ⊙).
  const auto plans = calibration_plan_set();
  auto benches = calibration_benches(plans);
  auto gemms = gemm_step_samples(plans);
  const ChipSpec truth = known_chip(benches);
  std::vector<std::vector<Trace>> traces;
  for (const auto& c : plans) traces.push_back(priced_traces(c, truth, 2, 3));
  read_traces(plans, traces, benches, gemms);
  for (const auto& k : benches) {
    INFO(k.group);
    double t = 0;
    for (const auto& s : k.steps) t += compute_seconds(s, truth, DType::fp32);
    // the chunked WKV entry is priced by another lowering than the one that ran
    if (k.scan == ScanAlgo::sequential) CHECK(k.seconds == Approx(t).epsilon(1e-9));
  }

  ChipSpec fitted = truth;
  fitted.efficiency.ops.clear();
  fitted.efficiency.gemm_curve.clear();
  fitted.efficiency.gemm = fitted.efficiency.scan = fitted.efficiency.attention = fitted.efficiency.elementwise =
      fitted.efficiency.norm = 0.5;  // start away from the truth
  fitted.efficiency.attention_softmax = 0;
  fit_kernel_efficiencies(benches, fitted);
  for (const auto& k : benches)
    if (!k.op.empty() && k.scan == ScanAlgo::sequential) {
      INFO(k.op);
      if (k.cls == "attention") {
        // the decode kernel's per-score work is priced with attention_softmax, which the grid
        // search below recovers to 2e-2: its own value is fitted last, against the fitted pair, so
        // it prices its benchmark at the measured time and lands near the truth
        double t = 0;
        for (const auto& st : k.steps) t += compute_seconds(st, fitted, DType::fp32);
        CHECK(t == Approx(k.seconds).epsilon(1e-6));
        CHECK(fitted.efficiency.ops.at(k.op) == Approx(truth.efficiency.ops.at(k.op)).epsilon(1e-2));
        continue;
      }
      CHECK(fitted.efficiency.ops.at(k.op) == Approx(truth.efficiency.ops.at(k.op)).epsilon(1e-6));
      CHECK(k.efficiency == Approx(truth.efficiency.ops.at(k.op)).epsilon(1e-6));
    }
  for (const char* cls : {"elementwise", "norm", "scan"}) {
    INFO(cls);
    CHECK(class_value(fitted.efficiency, cls) == Approx(class_value(truth.efficiency, cls)).epsilon(1e-6));
  }
  // the attention pair: a grid search refined twice (1e-3 of the log range)
  CHECK(fitted.efficiency.attention_softmax == Approx(truth.efficiency.attention_softmax).epsilon(2e-2));
  CHECK(fitted.efficiency.attention == Approx(truth.efficiency.attention).epsilon(2e-2));

  fitted.efficiency.gemm_curve = fit_gemm_curve(gemms, fitted);
  const auto& tc = truth.efficiency.gemm_curve;
  double max_slope = 0;
  for (std::size_t i = 1; i < tc.size(); ++i)
    max_slope = std::max(max_slope, (tc[i].second - tc[i - 1].second) / std::log(tc[i].first / tc[i - 1].first));
  REQUIRE(fitted.efficiency.gemm_curve.size() >= 3);
  for (std::size_t i = 1; i < fitted.efficiency.gemm_curve.size(); ++i)
    CHECK(fitted.efficiency.gemm_curve[i].first > fitted.efficiency.gemm_curve[i - 1].first);
  for (const auto& g : gemms) {
    INFO(std::get<1>(g.key) << " " << std::get<2>(g.key) << " of " << g.plan);
    // each sample's own value is the curve's at its FLOPs (its steps share one shape) ...
    CHECK(g.efficiency == Approx(truth.efficiency.gemm_at(g.gemm_flops)).epsilon(1e-6));
    // ... and the binned curve prices it within what a bin's width allows: the truth moves by at
    // most (steepest slope per log FLOPs) · log(kGemmBinRatio) inside a bin
    double fit_t = 0, true_t = 0;
    for (const auto& s : g.steps) {
      fit_t += compute_seconds(s, fitted, DType::fp32);
      true_t += compute_seconds(s, truth, DType::fp32);
    }
    CHECK(fit_t == Approx(true_t).epsilon(max_slope * std::log(kGemmBinRatio) / 0.15));
  }
  // The GEMMs span the curve: gpt-tiny's width-64 steps below 3e7 FLOPs, width-256 ones above.
  const auto [lo, hi] = std::minmax_element(gemms.begin(), gemms.end(), [](const auto& a, const auto& b) { return a.gemm_flops < b.gemm_flops; });
  CHECK(lo->gemm_flops < 1e7);
  CHECK(hi->gemm_flops > 3e8);
}

TEST_CASE("calibrate fits: a flat GEMM truth gives a flat curve at that value", "[reports][calibrate]") {
  const auto plans = calibration_plan_set();
  auto gemms = gemm_step_samples(plans);
  ChipSpec truth = load_cluster("cpu-local").chip;
  truth.efficiency.ops.clear();
  truth.efficiency.gemm_curve.clear();
  truth.efficiency.gemm = 0.42;
  std::vector<std::vector<Trace>> traces;
  for (const auto& c : plans) traces.push_back(priced_traces(c, truth, 1, 2));
  std::vector<KernelBench> none;
  read_traces(plans, traces, none, gemms);
  // cpu-local's memory: some small GEMMs are memory-bound at 0.42 (their value clamps and is left
  // out of the curve), and the rest give 0.42 back
  const auto curve = fit_gemm_curve(gemms, truth);
  REQUIRE_FALSE(curve.empty());
  for (const auto& [flops, eff] : curve) CHECK(eff == Approx(0.42).epsilon(1e-6));
  std::vector<GemmStepSample> empty;
  CHECK(fit_gemm_curve(empty, truth).empty());
}

TEST_CASE("calibrate fits: the chip from its peaks and the cluster file read back by the strict loader", "[reports][calibrate]") {
  const std::vector<GemmSample> gemm = {{64, 64, 64, 1.0, 1e9}, {512, 512, 512, 1.0, 3e9}};
  const std::vector<TriadSample> triad = {{1e6, 4e9}, {1e8, 1e9}};
  const ChipSpec chip0 = chip_from_peaks(gemm, triad, 5e9, 4e-7);
  CHECK(chip0.peak_flops_per_s.at("fp32") == 3e9);  // the best sgemm rate
  CHECK(chip0.memory_bytes_per_s == 4e9);           // the best triad rate
  REQUIRE(chip0.efficiency.memory_curve.size() == 2);
  CHECK(chip0.efficiency.memory_curve[0].second == 1.0);
  CHECK(chip0.efficiency.memory_curve[1].second == Approx(1e9 / 4e9));
  CHECK(chip0.efficiency.memory == Approx(0.25));  // the largest working set's fraction

  ChipSpec chip = chip0;
  chip.name = "test core";
  chip.source = "test";
  chip.memory_bytes = 8e9;
  chip.onchip_memory_bytes = 1e6;
  chip.efficiency.gemm = 0.5;
  chip.efficiency.attention_softmax = 0.125;
  chip.efficiency.ops["rglru.scan"] = 0.25;
  TopologySpec topo = load_cluster("cpu-local").topology;
  topo.kind = TopologyKind::islands;
  topo.islands = 1;
  topo.devices_per_island = 2;
  CalibrationMeasurements r;
  r.ranks = 2;
  r.gemm = gemm;
  r.triad = triad;
  const std::string text = calibrated_cluster_yaml("test-cluster", true, r, chip, topo, "host", "2026-01-01T00:00:00Z");
  const ClusterSpec back = parse_cluster_text(text, "calibrated.yaml");
  CHECK(back.name == "test-cluster");
  CHECK(back.devices() == 2);
  CHECK(back.chip.peak("fp32") == 3e9);
  CHECK(back.chip.memory_bytes_per_s == 4e9);
  CHECK(back.chip.efficiency.gemm == 0.5);
  CHECK(back.chip.efficiency.ops.at("rglru.scan") == 0.25);
  // a GEMM curve is written in place of the scalar (the loader takes one or the other)
  chip.efficiency.gemm_curve = {{1e6, 0.25}, {1e9, 0.5}};
  const ClusterSpec curved = parse_cluster_text(calibrated_cluster_yaml("test-cluster", true, r, chip, topo, "host", "2026-01-01T00:00:00Z"),
                                                "calibrated.yaml");
  CHECK(curved.chip.efficiency.gemm_curve == chip.efficiency.gemm_curve);
  CHECK(curved.chip.efficiency.gemm == 0.5);
  // the GEMV samples: each rate over the best triad's (4e9 B/s), at most 1, written and read back
  r.gemv = {{1e6, 6e9}, {1e8, 0.5e9}};
  chip.efficiency.gemv_memory_curve = fit_gemv_memory_curve(r.gemv, chip.memory_bytes_per_s);
  REQUIRE(chip.efficiency.gemv_memory_curve.size() == 2);
  CHECK(chip.efficiency.gemv_memory_curve[0] == std::pair<double, double>{1e6, 1.0});
  CHECK(chip.efficiency.gemv_memory_curve[1].second == Approx(0.5e9 / 4e9));
  const ClusterSpec gemv = parse_cluster_text(calibrated_cluster_yaml("test-cluster", true, r, chip, topo, "host", "2026-01-01T00:00:00Z"),
                                              "calibrated.yaml");
  CHECK(gemv.chip.efficiency.gemv_memory_curve == chip.efficiency.gemv_memory_curve);
  CHECK(fit_gemv_memory_curve({}, 4e9).empty());
  // the decode attention's memory curve: absent, no key (the triad's curve, as before); set, read back
  CHECK(text.find("decode_attention_memory_curve") == std::string::npos);
  CHECK(back.chip.efficiency.decode_attention_memory_curve.empty());
  chip.efficiency.decode_attention_memory_curve = {{2.5e5, 1.0}, {1.25e7, 0.02}};
  const ClusterSpec dattn = parse_cluster_text(calibrated_cluster_yaml("test-cluster", true, r, chip, topo, "host", "2026-01-01T00:00:00Z"),
                                               "calibrated.yaml");
  CHECK(dattn.chip.efficiency.decode_attention_memory_curve == chip.efficiency.decode_attention_memory_curve);
  CHECK(dattn.chip.efficiency.gemv_memory_curve == chip.efficiency.gemv_memory_curve);
  // the rows curve: absent, no key; set, read back; the measurements' samples and memory probe written
  CHECK(text.find("decode_attention_rows") == std::string::npos);
  CHECK(text.find("memory_probe_seconds") == std::string::npos);
  r.decode_attention_rows = {{1, 5e-9}, {2, 2.8e-9}, {4, 2.5e-9}};
  r.memory_probe_seconds = 0.0125;
  chip.efficiency.decode_attention_rows_curve = fit_decode_attention_rows_curve(r.decode_attention_rows, 4);
  const std::string rows_text = calibrated_cluster_yaml("test-cluster", true, r, chip, topo, "host", "2026-01-01T00:00:00Z");
  const ClusterSpec rows = parse_cluster_text(rows_text, "calibrated.yaml");
  REQUIRE(rows.chip.efficiency.decode_attention_rows_curve.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {  // the file holds 6 significant digits
    CHECK(rows.chip.efficiency.decode_attention_rows_curve[i].first == chip.efficiency.decode_attention_rows_curve[i].first);
    CHECK(rows.chip.efficiency.decode_attention_rows_curve[i].second ==
          Approx(chip.efficiency.decode_attention_rows_curve[i].second).epsilon(1e-5));
  }
  CHECK(rows_text.find("memory_probe_seconds: 0.0125") != std::string::npos);
  CHECK(rows_text.find("- [2, 2.8e-09]") != std::string::npos);
}

TEST_CASE("calibrate fits: the decode attention's rows curve, each G's rate over the reference G's", "[reports][calibrate]") {
  // rate = 1 / seconds per key and head; reference G = 4 (2.5 ns): G 1 at 2.5/5, G 2 at 2.5/2.8,
  // G 8 (2.3 ns, faster) held at 1
  const std::vector<DecodeAttentionRowsSample> samples = {{8, 2.3e-9}, {1, 5e-9}, {4, 2.5e-9}, {2, 2.8e-9}, {2, 9e-9}, {3, 0}};
  const auto curve = fit_decode_attention_rows_curve(samples, 4);
  REQUIRE(curve.size() == 4);  // sorted by G; the repeated G = 2 and the unmeasured G = 3 skipped
  CHECK(curve[0].first == 1);
  CHECK(curve[0].second == Approx(0.5).epsilon(1e-12));
  CHECK(curve[1].first == 2);
  CHECK(curve[1].second == Approx(2.5 / 2.8).epsilon(1e-12));
  CHECK(curve[2] == std::pair<double, double>{4, 1.0});
  CHECK(curve[3] == std::pair<double, double>{8, 1.0});
  // against G = 2: G 4 and 8 held at 1, G 1 at 2.8 / 5
  const auto two = fit_decode_attention_rows_curve(samples, 2);
  REQUIRE(two.size() == 4);
  CHECK(two[0].second == Approx(2.8 / 5).epsilon(1e-12));
  CHECK(two[2].second == 1.0);
  CHECK(fit_decode_attention_rows_curve({}, 4).empty());
  CHECK(fit_decode_attention_rows_curve(samples, 16).empty());  // the reference G not measured
  // the reference: C10's attention.decode step, mqa-tiny (H 4, one K/V head) at tensor 1: G = 4
  CHECK(decode_attention_reference_rows(calibration_benches(calibration_plan_set())) == 4);
  CHECK(decode_attention_reference_rows({}) == 0);
}

TEST_CASE("calibrate fits: the decode attention's memory curve from C10 (cache in L2) and C14 (several MB)", "[reports][calibrate]") {
  // Independent reference: "measured" times written as the roofline in closed form on a chip with
  // round numbers — C10 compute-bound, C14 reading its cache at 2 % of the peak rate.
  const auto plans = calibration_plan_set();
  auto benches = calibration_benches(plans);
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.peak_flops_per_s = {{"fp32", 1e11}};
  chip.vector_flops_per_s = 1e11;
  chip.memory_bytes_per_s = 1e11;
  chip.launch_overhead_seconds = 1e-6;
  chip.efficiency.ops = {{"attention.decode", 0.4}};
  chip.efficiency.attention_softmax = 0.2;
  chip.efficiency.memory_curve = {{1e5, 1.0}, {1e8, 0.2}};
  chip.efficiency.decode_attention_memory_curve.clear();
  KernelBench *c10 = nullptr, *c14 = nullptr;
  for (auto& k : benches) {
    if (k.plan == "C10" && k.op == ops::attention_decode) c10 = &k;
    if (k.cls == kDecodeAttentionMemoryClass) c14 = &k;
  }
  REQUIRE(c10 != nullptr);
  REQUIRE(c14 != nullptr);
  CHECK(c14->plan == "C14");
  // C14: three transformer-tiny layers (K/V heads 2, N 32) at batch 6, position 768 + 8: K/V
  // bytes per layer 2 × 2 × 32 × 777 keys × 6 × 4 B, the queries 6 × 4 heads × 32 × 4 B besides
  double read = 0, ws14 = 0;
  REQUIRE(c14->steps.size() == 3);
  for (const auto& s : c14->steps) {
    REQUIRE(is_decode_attention(s));
    read += s.bytes_read;
    ws14 = std::max(ws14, s.reuse_bytes);
  }
  CHECK(read == Approx(3 * (2.0 * 2 * 32 * 777 * 6 * 4 + 6.0 * 4 * 32 * 4)).epsilon(1e-12));
  CHECK(read > 7e6);  // several MB per rank: out of L2
  auto closed_form = [&](const KernelBench& k, double memory_fraction, double* ws) {
    double t = 0;
    for (const auto& s : k.steps) {
      *ws = std::max({*ws, s.bytes_read + s.bytes_written, s.reuse_bytes});
      const double compute = s.matmul_flops / (1e11 * 0.4) + s.vector_flops / (1e11 * 0.2);
      const double memory = (s.bytes_read + s.bytes_written) / (1e11 * memory_fraction);
      t += std::max(compute, memory) + 1e-6 * s.calls;
    }
    return t;
  };
  double ws10 = 0, unused = 0;
  closed_form(*c10, 1.0, &ws10);
  const double f10 = 1.0 + (0.2 - 1.0) * std::log(ws10 / 1e5) / std::log(1e3);  // the triad curve at C10's working set
  c10->seconds = closed_form(*c10, f10, &unused);
  c14->seconds = closed_form(*c14, 0.02, &unused);
  // C10 is compute-bound at the triad's rate, C14 is memory-bound at 2 %
  double c14_compute = 0;
  for (const auto& s : c14->steps) c14_compute += s.matmul_flops / (1e11 * 0.4) + s.vector_flops / (1e11 * 0.2) + 1e-6 * s.calls;
  REQUIRE(c14_compute < 0.5 * c14->seconds);
  const auto curve = fit_decode_attention_memory_curve(benches, chip);
  REQUIRE(curve.size() == 2);
  CHECK(curve[0].first == Approx(ws10).epsilon(1e-12));
  CHECK(curve[0].second == Approx(f10).epsilon(1e-9));
  CHECK(curve[1].first == Approx(ws14).epsilon(1e-12));
  CHECK(curve[1].second == Approx(0.02).epsilon(1e-6));
  CHECK(ws14 > 5 * ws10);  // C10: ~1.2 MB a token (the cache 264 KB), C14: ~10 MB
  CHECK(c14->efficiency == Approx(0.02).epsilon(1e-6));
  CHECK_FALSE(c14->clamped);
  // priced with the fitted curve, each benchmark costs its measured time
  chip.efficiency.decode_attention_memory_curve = curve;
  for (const KernelBench* k : {c10, c14}) {
    double t = 0;
    for (const auto& s : k->steps)
      if (is_decode_attention(s)) t += compute_seconds(s, chip, DType::fp32);
    CHECK(t == Approx(k->seconds).epsilon(1e-6));
  }
  CHECK(c10->clamped == false);  // (C10's own compute value: its `clamped` is attention.decode's fit's)
  // a compute value fitted to C10's time (fit_kernel_efficiencies, bisection): C10 stays at the
  // triad's point, its memory term is not moved up to its time
  bool clamped = false;
  std::vector<Step> c10_steps;
  for (const auto& s : c10->steps)
    if (is_decode_attention(s)) c10_steps.push_back(s);
  chip.efficiency.decode_attention_memory_curve.clear();
  const double own = fit_efficiency(c10_steps, chip, ops::attention_decode, c10->seconds * 1.1, &clamped);
  CHECK(own < 0.4);
  chip.efficiency.ops[ops::attention_decode] = own;
  c10->seconds *= 1.1;
  const auto refit = fit_decode_attention_memory_curve(benches, chip);
  REQUIRE(refit.size() == 2);
  CHECK(refit[0].second == Approx(f10).epsilon(1e-9));
  CHECK(refit[1].second == Approx(0.02).epsilon(1e-6));  // C14 memory-bound: its compute's value does not enter
  // without C14's time (one point only): no curve, the triad's as before
  c14->seconds = 0;
  CHECK(fit_decode_attention_memory_curve(benches, chip).empty());
}

TEST_CASE("validate's network drift: calibrate's all-reduce samples read back from its file, re-measured ratios", "[reports][validate]") {
  // A file as calibrate writes it, with all-reduce samples inside and outside the 64 KiB-8 MiB band.
  CalibrationMeasurements r;
  r.ranks = 2;
  r.gemm = {{64, 64, 64, 1.0, 1e9}};
  r.triad = {{1e6, 4e9}};
  r.comm.push_back(fit_collective("all_reduce", {{8, 2e-6}, {65536, 4e-5}, {1048576, 5e-4}, {8388608, 4e-3}, {16777216, 8e-3}}, 2));
  ChipSpec chip = chip_from_peaks(r.gemm, r.triad, 5e9, 4e-7);
  chip.name = "test core";
  chip.source = "test";
  chip.memory_bytes = 8e9;
  chip.onchip_memory_bytes = 1e6;
  TopologySpec topo = load_cluster("cpu-local").topology;
  const std::string path = (std::filesystem::temp_directory_path() / "scanshard-test-network-drift.yaml").string();
  {
    std::ofstream f(path);
    f << calibrated_cluster_yaml("test-cluster", false, r, chip, topo, "host", "2026-01-01T00:00:00Z");
  }
  const auto samples = calibrated_all_reduce_samples(path, 2);
  REQUIRE(samples.size() == 3);  // 8 B and 16 MiB are outside the band; 8 MiB (written 8.38861e+06) inside
  CHECK(samples[0].first == Approx(65536));  // the file holds 6 significant digits
  CHECK(samples[0].second == Approx(4e-5));
  CHECK(samples[1].first == Approx(1048576));
  CHECK(samples[1].second == Approx(5e-4));
  CHECK(calibrated_all_reduce_samples(path, 3).empty());  // calibrated on 2 ranks, not 3
  CHECK(calibrated_all_reduce_samples("cpu-local", 2).empty());  // a preset has no measurements
  std::filesystem::remove(path);

  CHECK(samples[2].first == Approx(8388608));
  // Now 4x and 2x faster: ratios 0.25 and 0.5 (the third not re-measured).
  const NetworkDrift d = network_drift(samples, {1e-5, 2.5e-4});
  REQUIRE(d.measured());
  CHECK(d.ratio_min == Approx(0.25));
  CHECK(d.ratio_max == Approx(0.5));
  CHECK(d.ratio_median == Approx(0.375));
  CHECK_FALSE(network_drift({}, {}).measured());

  // validate.json carries it (null when not measured).
  const ClusterSpec cluster = load_cluster("cpu-local");
  ValidationResult none;
  ValidationRunInfo info;
  info.network = d;
  auto doc = nlohmann::json::parse(validation_files(none, cluster, info)[0].second);
  CHECK(doc["network_drift"]["ratio_median"].get<double>() == Approx(0.375));
  CHECK(doc["network_drift"]["all_reduce_bytes"].size() == 2);
  doc = nlohmann::json::parse(validation_files(none, cluster, ValidationRunInfo{})[0].second);
  CHECK(doc["network_drift"].is_null());
  CHECK(doc["memory_drift"].is_null());
}

TEST_CASE("validate's memory drift: the memory probe now against calibrate's, ratios and the band", "[reports][validate]") {
  // calibrate's memory probe, written and read back from the measurements
  CalibrationMeasurements r;
  r.gemm = {{512, 512, 512, 0.0025, 2.0 * 512 * 512 * 512 / 0.0025}};
  r.triad = {{3e6, 4e10}, {1e8, 1e10}};
  r.memory_probe_seconds = 0.008;
  ChipSpec chip = chip_from_peaks(r.gemm, r.triad, 5e9, 4e-7);
  chip.name = "test core";
  chip.source = "test";
  chip.memory_bytes = 8e9;
  chip.onchip_memory_bytes = 1e6;
  const std::string path = (std::filesystem::temp_directory_path() / "scanshard-test-memory-drift.yaml").string();
  {
    std::ofstream f(path);
    f << calibrated_cluster_yaml("test-cluster", false, r, chip, load_cluster("cpu-local").topology, "host", "2026-01-01T00:00:00Z");
  }
  const double at_calibration = calibrated_memory_probe_seconds(path);
  std::filesystem::remove(path);
  CHECK(at_calibration == Approx(0.008));
  CHECK(calibrated_memory_probe_seconds("cpu-local") == 0);  // a preset has no measurements

  // before and after the runs: 0.010 and 0.014 s against 0.008: ratios 1.25 and 1.75
  const MemoryDrift d = memory_drift(at_calibration, {0.010, 0.014});
  REQUIRE(d.measured());
  CHECK(d.ratio_min == Approx(1.25));
  CHECK(d.ratio_max == Approx(1.75));
  CHECK(d.ratio_median == Approx(1.5));  // the mean of the two middle ones (stats::median of two)
  // an unmeasured sample (0: no reference on that rank) or NaN is left out; no reference: not measured
  const MemoryDrift one = memory_drift(0.008, {0.004, 0, std::nan("")});
  REQUIRE(one.seconds_now.size() == 1);
  CHECK(one.ratio_median == Approx(0.5));
  CHECK_FALSE(memory_drift(0, {0.01}).measured());
  CHECK_FALSE(memory_drift(0.008, {}).measured());
  // the band shared with the network drift: [0.67, 1.5] is quiet, beyond it a warning
  CHECK_FALSE(drift_outside_band(1.0));
  CHECK_FALSE(drift_outside_band(1.5));
  CHECK_FALSE(drift_outside_band(0.67));
  CHECK(drift_outside_band(1.51));
  CHECK(drift_outside_band(0.66));

  // validate.json carries it (null when not measured)
  ValidationRunInfo info;
  info.memory = d;
  const auto doc = nlohmann::json::parse(validation_files(ValidationResult{}, load_cluster("cpu-local"), info)[0].second);
  CHECK(doc["memory_drift"]["ratio_max"].get<double>() == Approx(1.75));
  CHECK(doc["memory_drift"]["seconds_now"].size() == 2);
  CHECK(doc["memory_drift"]["seconds_at_calibration"].get<double>() == Approx(0.008));
}
