// tests/unit/test_published.cpp — the published-measurement suite (reports/published.hpp): the
// papers' FLOP formulas against the papers' own numbers, the suite file's error messages, the
// search for unstated plan keys against pricing every candidate, and the built-in suite's rows.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "program/yaml_reader.hpp"
#include "program/flop_conventions.hpp"
#include "program/presets.hpp"
#include "reports/chip_fit.hpp"
#include "reports/published.hpp"

using namespace scanshard;
using namespace scanshard::published;

TEST_CASE("Megatron's Eq. 3 is four forward passes of the layers plus three of the logits", "[published]") {
  // Narayanan et al. 2021 Appendix: a layer's forward is 24Bsh² + 4Bs²h FLOPs, the logits 2BshV;
  // full recomputation runs the layers' forward twice and their backward (2x) once, the logits
  // forward and backward once. Table 1's 1.7B row (137 TFLOP/s on 32 GPUs) is then 3.53 s.
  const double B = 512, s = 2048, l = 24, h = 2304, V = 51200;
  const double by_pass = 4 * l * (24 * B * s * h * h + 4 * B * s * s * h) + 3 * 2 * B * s * h * V;
  REQUIRE(megatron_eq3_flops(B, s, l, h, V) == Approx(by_pass).epsilon(1e-12));
  REQUIRE(megatron_eq3_flops(B, s, l, h, V) / (137e12 * 32) == Approx(3.53).epsilon(0.002));
}

TEST_CASE("PaLM's MFU formula gives the paper's 46.2 % for PaLM 540B", "[published]") {
  // Chowdhery et al. 2022 §4.1: 238.3K tokens/s on 6144 TPU v4 chips (275 TFLOP/s each) is
  // 46.2 % MFU with the attention term and 45.7 % without it.
  const double tokens_per_s = 238.3e3, peak = 6144 * 275e12;
  REQUIRE(palm_flops_per_token(540.35e9, 118, 48, 256, 2048) * tokens_per_s / peak == Approx(0.462).margin(0.0005));
  REQUIRE(6 * 540.35e9 * tokens_per_s / peak == Approx(0.457).margin(0.0005));
}

namespace {
const char* kRow = R"(id: test
source: "a test"
rows:
  - id: a
    where: "row 1"
    model: gpt-tiny
    cluster: dgx-a100-1
    plan: {mesh: {data: 8}, global_batch: 64, seq_len: 128}
    search: [micro_batch]
    published: {seconds_per_step: 0.5}
)";
std::string with(const std::string& from, const std::string& to) {
  std::string s = kRow;
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}
}  // namespace

TEST_CASE("a suite file's errors name the file, the key and the reason", "[published]") {
  REQUIRE(parse_suite(kRow, "t.yaml").size() == 1);
  auto fails = [](const std::string& text, const std::string& part) {
    INFO(text);
    REQUIRE_THROWS_WITH(parse_suite(text, "t.yaml"), Catch::Contains("t.yaml") && Catch::Contains(part));
  };
  fails(with("{seconds_per_step: 0.5}", "{seconds_per_step: 0.5, mfu: 0.4}"), "exactly one");
  fails(with("{seconds_per_step: 0.5}", "{seconds_per_step: -1}"), "positive");
  fails(with("{seconds_per_step: 0.5}", "{mfu: 0.4}"), "FLOP formula");
  fails(with("search: [micro_batch]", "search: [remat]"), "cannot be searched");
  fails(with("{seconds_per_step: 0.5}", "{relative_step_time: 1.1, relative_to: nowhere}"), "nowhere");
  fails(with("{seconds_per_step: 0.5}", "{relative_step_time: 1.1}"), "1 by definition");
  fails(with("cluster: dgx-a100-1", "cluster: no-such-cluster"), "no-such-cluster");
  fails(with("    where: \"row 1\"\n", ""), "where");
}

TEST_CASE("a searched micro-batch is the fastest legal one that fits", "[published]") {
  const auto rows = parse_suite(kRow, "t.yaml");
  const Priced best = price_row(rows[0]);
  REQUIRE(best.priced);
  for (std::int64_t mb : {1, 2, 4, 8}) {  // the local batch is 8
    Plan p = rows[0].plan;
    p.micro_batch = mb;
    REQUIRE(best.estimate.step_seconds <= simulate(rows[0].model, p, rows[0].cluster).step_seconds);
  }
  REQUIRE(best.searched == "micro_batch=" + std::to_string(best.plan.micro_batch));
}

TEST_CASE("the built-in suite prices every row or names the plan rule it cannot meet", "[published]") {
  const auto rows = builtin_suite();
  REQUIRE(rows.size() >= 25);
  const auto priced = price_suite(rows);
  for (const auto& p : priced) {
    INFO(p.row->source_id << " " << p.row->id << ": " << p.why);
    if (!p.priced) {
      REQUIRE(p.why.find("rule") != std::string::npos);
      continue;
    }
    REQUIRE(std::isfinite(p.error));
    // a plan over memory is priced with a note; a layer timed alone is not held to the model's memory
    if (p.row->metric != Metric::layer_seconds) REQUIRE(p.estimate.memory.fits == p.why.empty());
    REQUIRE(p.published > 0);
  }
  const auto errs = source_errors(priced);
  REQUIRE(errs.back().source_id == "all");
  std::int64_t rows_scored = 0;
  for (std::size_t i = 0; i + 1 < errs.size(); ++i) rows_scored += errs[i].rows;
  REQUIRE(rows_scored == errs.back().rows);
}

TEST_CASE("Narayanan et al.'s 5.9B sweeps: throughput falls as pipeline or tensor parallelism replaces data parallelism", "[published]") {
  // Narayanan et al. 2021 §5.4.2-5.4.3 (Figures 14 and 15): a GPT model of 5.9B parameters (32
  // layers, 32 heads, hidden 3840) on 64 A100 GPUs, micro-batch 1, batch 128 and 512: "throughput
  // decreases as the pipeline-parallel size increases" and likewise for the tensor-parallel size,
  // each traded against data parallelism. Priced as Megatron ran it: full recomputation,
  // materialized attention, no gradient-sync overlap.
  ModelSpec m = load_model("gpt3-175b");
  m.width = 3840;
  m.depth = 32;
  m.heads = 32;
  m.head_dim = 120;
  m.vocab = 51200;
  const ClusterSpec c = load_cluster("dgx-a100-8");
  for (std::int64_t B : {128, 512}) {
    auto step = [&](const std::string& mesh) {
      Plan p;
      p.mesh = parse_mesh(mesh, "--mesh");
      p.global_batch = B;
      p.micro_batch = 1;
      p.seq_len = 2048;
      p.remat = Remat::block;
      p.attention = AttentionKernel::materialized;
      p.overlap = false;
      return simulate(m, p, c).step_seconds;
    };
    INFO("batch " << B);
    double last = 0;
    for (std::int64_t pp : {2, 4, 8, 16, 32}) {
      const double t = step("pipeline=" + std::to_string(pp) + ",data=" + std::to_string(64 / pp));
      CHECK(t > last);
      last = t;
    }
    last = 0;
    for (std::int64_t tp : {2, 4, 8, 16}) {
      const double t = step("tensor=" + std::to_string(tp) + ",data=" + std::to_string(64 / tp));
      CHECK(t > last);
      last = t;
    }
  }
}

namespace {
// Rows of two sources on one 8-GPU node, their "published" step times priced with a chip whose
// `gemm` top and `attention` are known (the truth the fit must find from the file's values).
std::vector<Row> synthetic_rows(const std::vector<double>& truth_s1, const std::vector<double>& truth_s2) {
  std::string text = "id: s\nsource: \"synthetic\"\nrows:\n";
  int i = 0;
  for (const char* seq : {"512", "2048", "8192"})
    for (const char* mesh : {"{data: 8}", "{data: 4, tensor: 2}"})
      text += std::string("  - {id: r") + std::to_string(i++) + ", where: w, model: mqa-100m, cluster: dgx-a100-1, plan: {mesh: " +
              mesh + ", global_batch: 8, micro_batch: 1, seq_len: " + seq + "}, published: {seconds_per_step: 1}}\n";
  auto rows = parse_suite(text, "s1.yaml");
  auto more = parse_suite(text, "s2.yaml");
  for (auto& r : rows) r.source_id = "s1";
  for (auto& r : more) r.source_id = "s2";
  const std::vector<std::string> keys = {"gemm", "attention"};
  auto set_truth = [&](std::vector<Row>& rs, const std::vector<double>& truth) {
    Fit t;
    t.keys = keys;
    t.values = truth;
    const auto priced = price_suite(with_fit(rs, "a100-sxm-80gb", t));
    for (std::size_t k = 0; k < rs.size(); ++k) rs[k].value = priced[k].predicted;
  };
  set_truth(rows, truth_s1);
  set_truth(more, truth_s2);
  rows.insert(rows.end(), more.begin(), more.end());
  return rows;
}
}  // namespace

TEST_CASE("a chip's GEMM curve is reshaped as top · (e_i / e_top)^p", "[published][fit]") {
  ChipSpec c = load_cluster("dgx-a100-1").chip;
  REQUIRE(c.preset == "a100-sxm-80gb");
  c.efficiency.gemm_curve = {{1.0e8, 0.15}, {2.0e9, 0.5}, {1.0e12, 0.85}};  // the preset has none (a flat rate)
  const auto before = c.efficiency.gemm_curve;
  set_chip_values(c, {"gemm", "gemm_shape", "attention"}, {0.6, 2.0, 0.25});
  for (std::size_t i = 0; i < before.size(); ++i)
    REQUIRE(c.efficiency.gemm_curve[i].second == Approx(0.6 * std::pow(before[i].second / before.back().second, 2.0)));
  REQUIRE(c.efficiency.gemm_at(1e15) == Approx(0.6));
  REQUIRE(c.efficiency.attention == 0.25);
  REQUIRE(chip_value(c, "attention") == 0.25);
  REQUIRE_THROWS_WITH(set_chip_values(c, {"gemm_speed"}, {1.0}), Catch::Contains("gemm_speed") && Catch::Contains("one of"));
}

TEST_CASE("fitting a chip recovers the efficiencies that made the step times", "[published][fit]") {
  const auto rows = synthetic_rows({0.70, 0.30}, {0.70, 0.30});
  const ChipSpec file = rows.front().cluster.chip;
  REQUIRE(file.efficiency.gemm_at(1e15) != Approx(0.70).epsilon(0.05));  // the fit has somewhere to go
  const Fit f = fit_chip(rows, "a100-sxm-80gb", {"gemm", "attention"});
  CHECK(f.rows == 12);
  CHECK(f.values[0] == Approx(0.70).epsilon(0.02));
  CHECK(f.values[1] == Approx(0.30).epsilon(0.05));
  CHECK(f.mean_abs < 0.005);
  // rows of another chip are not fitted
  REQUIRE_THROWS_WITH(fit_chip(rows, "tpu-v3", {"gemm"}), Catch::Contains("tpu-v3"));
}

TEST_CASE("leave-one-source-out prices each source with a fit that did not see it", "[published][fit]") {
  // s2's step times come from a different chip than s1's: fitted on s1 alone, s2 is off by about
  // the difference; fitted on s2 alone, s1 likewise — while one fit of both sits between them.
  const auto rows = synthetic_rows({0.70, 0.30}, {0.50, 0.30});
  const auto holds = leave_one_source_out(rows, "a100-sxm-80gb", {"gemm", "attention"});
  REQUIRE(holds.size() == 2);
  REQUIRE(holds[0].source_id == "s1");
  REQUIRE(holds[0].fit.values[0] == Approx(0.50).epsilon(0.03));  // s1 held out: fitted on s2
  REQUIRE(holds[1].fit.values[0] == Approx(0.70).epsilon(0.03));
  CHECK(holds[0].bias > 0.05);   // s1's GEMMs are faster than s2's fit says: priced too slow
  CHECK(holds[1].bias < -0.05);
  const Fit both = fit_chip(rows, "a100-sxm-80gb", {"gemm", "attention"});
  CHECK(both.mean_abs < std::min(holds[0].mean_abs, holds[1].mean_abs));
}
