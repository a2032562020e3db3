// tests/unit/test_report.cpp — the measuring loop through the real `scanshard` binary:
// calibrate writes a cluster file the strict loader accepts (1 rank, and 2 ranks under mpirun);
// report takes the median of the steps after the warm-up; the HTML report contains every chart
// (inline SVG, titles) and its CSV/JSON; a PATH without gnuplot gives the clear message, exit 2,
// and leaves no page behind; validate runs its 1-rank plans and writes its statistics.
#include <catch2/catch.hpp>

#include <algorithm>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/steps.hpp"
#include "reports/calibration.hpp"
#include "program/yaml_reader.hpp"
#include "tests/unit/scratch.hpp"

namespace fs = std::filesystem;

namespace {

using scanshard::testing::Result;
using scanshard::testing::Scratch;
using scanshard::testing::slurp;

// The trace `scanshard train --trace` writes for hawk-tiny under the plan around `steps` ({wall_seconds, ops: [{phase, op, name, seconds}]}): step indices, a loss,
// and each op called `calls` times per step (forward ops once per micro-batch).
struct TracePlan { std::string mesh; int ranks, global_batch, micro_batch, seq_len; };
nlohmann::json train_trace(const TracePlan& p, nlohmann::json steps, int calls) {
  for (std::size_t i = 0; i < steps.size(); ++i) {
    steps[i]["step"] = i;
    steps[i]["loss"] = 5.0;
    for (auto& op : steps[i]["ops"]) op["calls"] = calls;
  }
  return {{"model", "hawk-tiny"}, {"mesh", p.mesh}, {"ranks", p.ranks}, {"rank", 0}, {"global_batch", p.global_batch},
          {"micro_batch", p.micro_batch}, {"seq_len", p.seq_len}, {"dtype", "fp32"}, {"steps", steps}};
}

// Runs `prefix SCANSHARD_BIN args` in a shell (prefix: environment assignments or a launcher).
Result run(const std::string& args, const std::string& prefix = "") {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-report-io-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto out = dir / "out", err = dir / "err";
  const std::string cmd = prefix + " " + std::string(SCANSHARD_BIN) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
  fs::remove_all(dir);
  return r;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

bool positive_finite(double v) { return std::isfinite(v) && v > 0; }

void check_calibrated(const fs::path& file, int devices) {
  REQUIRE(fs::exists(file));
  const std::string text = slurp(file);
  CHECK_THAT(text, Catch::Contains("measured by scanshard calibrate on"));
  CHECK_THAT(text, Catch::Contains("measurements:"));
  CHECK_THAT(text, Catch::Contains("sgemm:"));
  const scanshard::ClusterSpec c = scanshard::load_cluster(file.string());  // strict loader: unknown keys would throw
  CHECK(c.name == "test-local");
  CHECK(c.devices() == devices);
  CHECK_THAT(c.source, Catch::Contains("measured"));
  const auto& chip = c.chip;
  CHECK(positive_finite(chip.peak("fp32")));
  CHECK(positive_finite(chip.vector_flops_per_s));
  CHECK(positive_finite(chip.memory_bytes));
  CHECK(positive_finite(chip.memory_bytes_per_s));
  CHECK(positive_finite(chip.onchip_memory_bytes));
  CHECK(std::isfinite(chip.launch_overhead_seconds));
  CHECK(chip.launch_overhead_seconds >= 0);
  // The fitted peak is the raw measurements' best sgemm rate (recomputed here from the file's
  // `measurements: sgemm: [m, n, k, seconds, flop/s]` rows, each rate also re-derived from its
  // shape and time).
  const YAML::Node sgemm = scanshard::load_yaml_file(file.string())["measurements"]["sgemm"];
  REQUIRE(sgemm.IsSequence());
  REQUIRE(sgemm.size() >= 1);
  double best = 0;
  for (const auto& row : sgemm) {
    const double m = row[0].as<double>(), n = row[1].as<double>(), k = row[2].as<double>(), s = row[3].as<double>();
    CHECK(row[4].as<double>() == Approx(2 * m * n * k / s).epsilon(1e-4));
    best = std::max(best, row[4].as<double>());
  }
  CHECK(chip.peak("fp32") == Approx(best).epsilon(1e-5));
  for (const char* op : {"wkv4.scan", "wkv6.scan", "wkv6.chunked"}) {  // the recurrence kernels measured on their own
    INFO(op);
    REQUIRE(chip.efficiency.ops.count(op) == 1);
    CHECK(positive_finite(chip.efficiency.ops.at(op)));
    CHECK(chip.efficiency.ops.at(op) <= 1.0);
  }
  CHECK(positive_finite(c.topology.island_link_bytes_per_s));
  CHECK(positive_finite(c.topology.island_latency_seconds));
}

// A validate.json as `scanshard validate` writes it, with known numbers.
void write_synthetic_validate(const fs::path& dir) {
  nlohmann::json plans = nlohmann::json::array();
  const char* fams[] = {"griffin", "hawk", "mqa"};
  for (int i = 0; i < 6; ++i) {
    const double measured = 0.010 * (i + 1), predicted = measured * (1.0 + 0.02 * (i - 2));
    nlohmann::json groups = nlohmann::json::array(
        {{{"group", "mlp"}, {"class", "gemm"}, {"predicted_seconds", 0.6 * predicted}, {"measured_seconds", 0.55 * measured}},
         {{"group", "rec.rglru"}, {"class", "scan"}, {"predicted_seconds", 0.2 * predicted}, {"measured_seconds", 0.25 * measured}},
         {{"group", "norm1"}, {"class", "norm"}, {"predicted_seconds", 0.1 * predicted}, {"measured_seconds", 0.1 * measured}},
         {{"group", "grads"}, {"class", "comm"}, {"predicted_seconds", 0.1 * predicted}, {"measured_seconds", 0.0}}});
    char id[8];
    std::snprintf(id, sizeof id, "P%02d", i + 1);
    plans.push_back({{"id", id}, {"model", std::string(fams[i % 3]) + "-tiny"}, {"family", fams[i % 3]}, {"mesh", i % 2 ? "data=2" : "1"},
                     {"ranks", i % 2 ? 2 : 1}, {"global_batch", 4}, {"micro_batch", 2}, {"seq_len", 128},
                     {"predicted_step_seconds", predicted}, {"measured_step_seconds", measured},
                     {"relative_error", (predicted - measured) / measured}, {"groups", groups}});
  }
  const nlohmann::json doc = {
      {"cluster", {{"name", "cpu-local"}, {"origin", "configs/clusters/cpu-local.yaml"}, {"source", "test"}, {"argument", "cpu-local"}}},
      {"ranks", 2}, {"steps", 4}, {"plans", plans}, {"skipped", nlohmann::json::array()},
      {"summary", {{"plans", 6}, {"median_abs_error", 0.02}, {"max_abs_error", 0.06}, {"median_signed_error", 0.01}, {"spearman", 1.0}}},
      {"summary_probe_scaled", {{"probe_seconds_at_calibration", 4e-4}, {"speed_factor_min", 0.875}, {"speed_factor_max", 1.25},
                                {"median_abs_error", 0.0125}, {"max_abs_error", 0.0375}, {"median_signed_error", 0.0}, {"spearman", 0.5}}},
      {"classes", {{"gemm", {{"plans", 6}, {"median_abs_error", 0.1}, {"max_abs_error", 0.2}, {"median_signed_error", 0.1}}}}}};
  std::ofstream(dir / "validate.json") << doc.dump(1);
}

const char* kChartTitles[] = {"Step-time breakdown per plan", "Predicted vs measured step time", "Published cluster measurements", "Pareto front",
                              "Memory per device", "Sequence-length sweep", "Where the time goes along the sweep"};

}  // namespace

TEST_CASE("calibrate --quick writes a cluster file the loader accepts", "[report][calibrate]") {
  Scratch s("calibrate");
  const auto file = s.dir / "local.yaml";
  const auto r = run("calibrate --quick --name test-local --out " + file.string());
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("wrote " + file.string()));
  check_calibrated(file, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  // No temporary file is left next to it, and simulate reads it like any preset.
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(s.dir)) files += e.is_regular_file();
  CHECK(files == 1);
  const auto plan = run("plan --model griffin-tiny --cluster " + file.string() + " --global-batch 4 --seq-len 64 --dtype fp32 --quiet");
  INFO(plan.err);
  CHECK(plan.code == 0);
}

TEST_CASE("calibrate refuses a bad --out without writing anything", "[report][calibrate]") {
  Scratch s("calibrate-bad");
  auto r = run("calibrate --quick --out " + (s.dir / "no-such-dir" / "x.yaml").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("does not exist"));
  r = run("calibrate --quick --out " + (s.dir / "x.txt").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(".yaml"));
  CHECK(fs::is_empty(s.dir));
}

#ifdef SCANSHARD_MPIRUN
TEST_CASE("calibrate on 2 MPI ranks measures the collectives and fits the link", "[report][calibrate][mpi]") {
  Scratch s("calibrate-np2");
  const auto file = s.dir / "local2.yaml";
  const auto r = run("calibrate --quick --name test-local --out " + file.string(),
                     std::string("OMP_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n 2");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  check_calibrated(file, 2);
  const std::string text = slurp(file);
  for (const char* k : {"all_reduce:", "all_gather:", "reduce_scatter:", "send_recv:", "link_bytes_per_s:"})
    CHECK_THAT(text, Catch::Contains(k));
  CHECK_THAT(text, !Catch::Contains("NOT measured"));

  // The island link is the fit over the gradient all-reduces calibrate's training plans traced as
  // 2 replicas: every traced size is one of those plans' gradient all-reduces as the lowering
  // sizes it (comm_bytes of step_end's grads step at data = 2), and the topology carries that fit.
  const YAML::Node in_step = scanshard::load_yaml_file(file.string())["measurements"]["mpi_in_step"]["all_reduce"];
  REQUIRE(in_step.IsMap());
  std::vector<double> lowered;
  for (const auto& c : scanshard::calibration_plan_set()) {
    if (c.decode) continue;
    scanshard::Plan p = c.plan;
    p.mesh[scanshard::Axis::data] = 2;
    p.global_batch *= 2;
    for (const auto& st : scanshard::lower(c.model, p, 0).step_end)
      if (std::string(st.name) == scanshard::tensors::grads && st.comm == scanshard::CommKind::all_reduce) lowered.push_back(st.comm_bytes);
  }
  REQUIRE(in_step["traced"].size() >= 2);
  for (const auto& row : in_step["traced"]) {
    const double b = row[0].as<double>();
    INFO("traced all-reduce of " << b << " bytes");
    CHECK(std::any_of(lowered.begin(), lowered.end(), [&](double l) { return std::abs(l - b) <= 1e-5 * l; }));  // 6 digits in the file
    CHECK(positive_finite(row[1].as<double>()));
  }
  const auto cluster = scanshard::load_cluster(file.string());
  if (in_step["link_bytes_per_s"].as<double>() > 0)  // a noisy fit's non-positive slope keeps the placeholder link
    CHECK(cluster.topology.island_link_bytes_per_s == Approx(in_step["link_bytes_per_s"].as<double>()).epsilon(1e-5));
  if (in_step["link_latency_seconds"].as<double>() > 0)
    CHECK(cluster.topology.island_latency_seconds == Approx(in_step["link_latency_seconds"].as<double>() / 2).epsilon(1e-5));

  // validate with that file re-measures its all-reduce samples (network drift), prints and records it.
  const auto v = run("validate --quick --plans decode --passes 1 --cluster " + file.string() + " --out " + s.dir.string(),
                     std::string("OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n 2");
  INFO(v.out << v.err);
  REQUIRE(v.code == 0);
  CHECK_THAT(v.out, Catch::Contains("network drift: calibrate's all-reduce benchmark"));
  // the file has a calibrated probe, so a decode-only run says why no probe-scaled score is given
  CHECK_THAT(v.out, Catch::Contains("machine drift: the speed probe rescales training plans only, and none ran"));
  const auto j = nlohmann::json::parse(slurp(s.dir / "validate.json"));
  REQUIRE(j["network_drift"].is_object());
  CHECK(j["network_drift"]["all_reduce_bytes"].size() == 2);  // quick calibrate's 256 KiB and 1 MiB
  CHECK(j["network_drift"]["ratio_median"].get<double>() > 0);
  // and runs the memory probe before and after its runs against calibrate's
  CHECK_THAT(v.out, Catch::Contains("memory drift: the memory probe"));
  REQUIRE(j["memory_drift"].is_object());
  CHECK(j["memory_drift"]["seconds_now"].size() == 2);
  CHECK(j["memory_drift"]["seconds_at_calibration"].get<double>() > 0);
}
#endif

TEST_CASE("report reads the corpus's base trace (its bad variants are in tests/data/bad/report-trace-*)", "[report]") {
  // The positive control of the trace corpus: the file every report-trace fixture edits is valid.
  const std::string data = SCANSHARD_TEST_DATA;
  Scratch s("report-base-trace");
  const auto plan = s.dir / "plan.yaml";
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  const auto r = run("report --cluster " + data + "/clusters/one-core.yaml --plan " + plan.string() + " --trace " + data +
                     "/inputs/trace-ops-ok.json --out-dir " + s.dir.string());
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("2 steps, first skipped as warm-up"));
}

TEST_CASE("report takes the median wall time of the steps after the warm-up", "[report]") {
  Scratch s("report-median");
  const auto plan = s.dir / "plan.yaml", trace = s.dir / "trace.json";
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  // Warm-up 1 s (ignored), then 10, 30, 12 ms: the median is 12 ms (a mean would say 17.3 ms).
  nlohmann::json steps = nlohmann::json::array();
  for (double w : {1.0, 0.010, 0.030, 0.012})
    steps.push_back({{"wall_seconds", w}, {"ops", {{{"phase", "forward"}, {"op", "gated_mlp"}, {"name", "mlp"}, {"seconds", w / 2}}}}});
  std::ofstream(trace) << train_trace({"1", 1, 2, 2, 16}, steps, 1).dump();
  const auto r = run("report --cluster " + std::string(SCANSHARD_TEST_DATA) + "/clusters/one-core.yaml --plan " + plan.string() +
                     " --trace " + trace.string() + " --out-dir " + s.dir.string());
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(slurp(s.dir / "report.json"));
  CHECK(j["measured_step_seconds"].get<double>() == Approx(0.012));
  bool mlp = false;
  for (const auto& g : j["groups"])
    if (g["group"] == "mlp") {
      mlp = true;
      CHECK(g["measured_seconds"].get<double>() == Approx(0.006));
      CHECK(g["class"] == "gemm");
    }
  CHECK(mlp);
  CHECK_THAT(slurp(s.dir / "report.csv"), Catch::StartsWith("group,class,predicted_seconds,measured_seconds\n"));
}

TEST_CASE("report keeps the gradient sync and the gradient accumulation apart, each with its class", "[report]") {
  // Both steps concern the tensor "grads": the runner's accumulation (op grad_accumulate) and the
  // data-parallel all-reduce. One row per step kind, measured from the trace's op of each.
  Scratch s("report-grads");
  const auto plan = s.dir / "plan.yaml", trace = s.dir / "trace.json";
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 2}\nglobal_batch: 4\nseq_len: 16\n";
  nlohmann::json steps = nlohmann::json::array();
  for (int i = 0; i < 3; ++i)
    steps.push_back({{"wall_seconds", 0.02},
                     {"ops", {{{"phase", "backward"}, {"op", "grad_accumulate"}, {"name", "grads"}, {"seconds", 0.001}},
                              {{"phase", "forward"}, {"op", "all_reduce"}, {"name", "grads"}, {"seconds", 0.003}}}}});
  std::ofstream(trace) << train_trace({"data=2", 2, 4, 2, 16}, steps, 1).dump();
  const auto r = run("report --cluster cpu-local --plan " + plan.string() + " --trace " + trace.string() + " --out-dir " +
                     s.dir.string());
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(slurp(s.dir / "report.json"));
  int found = 0;
  for (const auto& g : j["groups"]) {
    if (g["group"] == "grads") {
      ++found;
      CHECK(g["class"] == "elementwise");
      CHECK(g["measured_seconds"].get<double>() == Approx(0.001));
      CHECK(g["predicted_seconds"].get<double>() > 0);
    } else if (g["group"] == "grads.sync") {
      ++found;
      CHECK(g["class"] == "comm");
      CHECK(g["measured_seconds"].get<double>() == Approx(0.003));
      CHECK(g["predicted_seconds"].get<double>() > 0);
    }
  }
  CHECK(found == 2);
}

TEST_CASE("report --html of decode plans alone: their charts, latency and tokens/s table, no training cards", "[report][html]") {
  // validate --plans decode: no training plan ran; two decode plans at 1.25x and 0.8x their
  // prediction (errors +25 % and -20 %), batch 4: tokens/s = 4 / seconds per token.
  Scratch s("report-decode");
  nlohmann::json plans = nlohmann::json::array();
  const double measured[2] = {0.0004, 0.0025}, predicted[2] = {0.0005, 0.002};
  for (int i = 0; i < 2; ++i)
    plans.push_back({{"id", i ? "D02" : "D01"}, {"model", "mqa-tiny"}, {"family", "mqa"}, {"mesh", "1"}, {"ranks", 1},
                     {"description", std::string("mqa-tiny decode tensor=1 B=4 P=") + (i ? "2048" : "64") + " S=32"},
                     {"batch", 4}, {"prompt_len", i ? 2048 : 64}, {"sample_len", 32},
                     {"predicted_seconds_per_token", predicted[i]}, {"measured_seconds_per_token", measured[i]},
                     {"groups", nlohmann::json::array({{{"group", "attn.core"}, {"class", "attention"},
                                                        {"predicted_seconds", 0.5 * predicted[i]}, {"measured_seconds", 0.5 * measured[i]}}})}});
  const nlohmann::json doc = {
      {"cluster", {{"name", "cpu-local"}, {"origin", "configs/clusters/cpu-local.yaml"}, {"source", "test"}, {"argument", "cpu-local"}}},
      {"ranks", 1}, {"steps", 3}, {"plans", nlohmann::json::array()}, {"skipped", nlohmann::json::array()},
      {"summary", {{"plans", 0}, {"median_abs_error", 0.0}, {"max_abs_error", 0.0}}},
      {"decode", {{"plans", plans}, {"summary", {{"plans", 2}, {"median_abs_error", 0.225}, {"max_abs_error", 0.25}}},
                  {"classes", {{"attention", {{"plans", 2}, {"median_abs_error", 0.225}, {"max_abs_error", 0.25}, {"median_signed_error", 0.025}}}}}}}};
  std::ofstream(s.dir / "validate.json") << doc.dump(1);
  const auto page = s.dir / "out" / "r.html";
  const auto r = run("report --validate " + s.dir.string() + " --html " + page.string() + " --sweep-seq 2048,4096");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  const std::string html = slurp(page);
  CHECK_THAT(html, Catch::Contains("Decoding: per-token latency and throughput"));
  CHECK_THAT(html, Catch::Contains("Predicted vs measured time per token"));
  CHECK_THAT(html, Catch::Contains("op class (decode)"));
  CHECK(html.find("Predicted vs measured step time") == std::string::npos);  // no training charts
  CHECK(html.find("plans compared") == std::string::npos);                   // nor their cards
  CHECK(count(html, "<svg") == 2 + 5);  // the decode pair and the five charts that need no plan
  CHECK_THAT(html, Catch::Contains("+25.0 %"));
  CHECK_THAT(html, Catch::Contains("-20.0 %"));
  CHECK_THAT(html, Catch::Contains("<td>8000</td><td>10000</td>"));  // D01: 4 / 0.5 ms, 4 / 0.4 ms
  const std::string csv = slurp(page.parent_path() / "r-decode-scatter.csv");
  CHECK_THAT(csv, Catch::StartsWith("id,plan,model,family,mesh,batch,prompt_len,sample_len,"));
  CHECK(count(csv, "\n") == 3);
}

TEST_CASE("report --html contains every chart as inline SVG with its CSV and JSON", "[report][html]") {
  Scratch s("report-html");
  write_synthetic_validate(s.dir);
  const auto page = s.dir / "out" / "efficiency.html";
  fs::create_directories(page.parent_path());
  const auto r = run("report --validate " + s.dir.string() + " --html " + page.string() + " --sweep-seq 2048,4096,8192");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains(page.string()));
  const std::string html = slurp(page);
  CHECK_THAT(html, Catch::StartsWith("<!DOCTYPE html>"));
  CHECK(count(html, "<svg") == 7);
  CHECK(count(html, "</svg>") == 7);
  CHECK(html.find("<?xml") == std::string::npos);  // prologs stripped: the SVG is inlined
  for (const char* title : kChartTitles) CHECK_THAT(html, Catch::Contains(title));
  // Axis labels with units.
  for (const char* label : {"time per training step (ms)", "measured step time (ms", "predicted step time (ms)",
                            "memory per device (", "step time (ms)", "sequence length (tokens"})
    CHECK_THAT(html, Catch::Contains(label));
  CHECK_THAT(html, Catch::Contains("y = x"));
  CHECK_THAT(html, Catch::Contains("Machine drift"));  // validate's probe summary, numbers as written
  CHECK_THAT(html, Catch::Contains("0.875&times; to 1.25&times;"));
  CHECK_THAT(html, Catch::Contains("10 % band"));
  // Self-contained: no external scripts or stylesheets.
  CHECK(html.find("<script src") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
  // Every chart's data next to the page, linked from it.
  for (const char* csv : {"breakdown", "scatter", "published", "pareto", "memory", "sweep"}) {
    const auto f = page.parent_path() / (std::string("efficiency-") + csv + ".csv");
    INFO(f);
    REQUIRE(fs::exists(f));
    const std::string text = slurp(f);
    CHECK(count(text, "\n") >= 3);
    CHECK_THAT(html, Catch::Contains(f.filename().string()));
  }
  CHECK_THAT(slurp(page.parent_path() / "efficiency-scatter.csv"), Catch::Contains("P06,"));
  const auto sweep = slurp(page.parent_path() / "efficiency-sweep.csv");
  for (const char* m : {"mqa-1.3b,", "griffin-1.3b,", "hawk-1.3b,", "rwkv6-1.6b,"}) CHECK_THAT(sweep, Catch::Contains(m));
  const auto j = nlohmann::json::parse(slurp(page.parent_path() / "efficiency.json"));
  CHECK(j["sweep"]["points"].size() == 12);  // 4 models x 3 lengths
  CHECK(j["pareto"]["front"].size() >= 1);
  // The published suite's section: one row per source and "all", the rows of the built-in suite.
  CHECK_THAT(html, Catch::Contains("published seconds per step"));
  CHECK(j["published_sources"].back()["source"] == "all");
  CHECK_THAT(slurp(page.parent_path() / "efficiency-published.csv"), Catch::Contains("narayanan2021-table1,gpt-1.7b,"));
  // Nothing temporary left behind.
  for (const auto& e : fs::directory_iterator(page.parent_path())) CHECK(e.path().filename().string().front() != '.');
}

TEST_CASE("report --html without gnuplot on PATH: clear message, exit 2, no page", "[report][html]") {
  Scratch s("report-nognuplot");
  write_synthetic_validate(s.dir);
  const auto page = s.dir / "page.html";
  const auto r = run("report --validate " + s.dir.string() + " --html " + page.string(), "PATH=" + (s.dir / "empty-bin").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("gnuplot not found on PATH"));
  CHECK_THAT(r.err, Catch::Contains("Nothing was written"));
  CHECK_FALSE(fs::exists(page));
  for (const auto& e : fs::directory_iterator(s.dir)) CHECK(e.path().filename() == "validate.json");
}

TEST_CASE("report --html input errors exit 2", "[report][html]") {
  Scratch s("report-html-bad");
  CHECK(run("report --validate " + (s.dir / "missing").string() + " --html " + (s.dir / "p.html").string()).code == 2);
  std::ofstream(s.dir / "validate.json") << "{\"plans\": 3}";
  const auto r = run("report --validate " + s.dir.string() + " --html " + (s.dir / "p.html").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("not the output of `scanshard validate`"));
  CHECK(run("report --html " + (s.dir / "p.html").string()).code == 2);  // no --validate
  CHECK(run("report").code == 2);                                       // neither mode
  CHECK_FALSE(fs::exists(s.dir / "p.html"));
}

TEST_CASE("validate --quick runs the 1-rank plans, skips the rest and writes its statistics", "[report][validate]") {
  Scratch s("validate");
  const auto out = s.dir / "v";
  const auto r = run("validate --quick --steps 2 --passes 2 --cluster cpu-local --out " + out.string(), "OMP_NUM_THREADS=1");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("Spearman"));
  CHECK_THAT(r.out, Catch::Contains("skipped"));  // 2-rank plans on 1 rank
  const auto j = nlohmann::json::parse(slurp(out / "validate.json"));
  REQUIRE(j["plans"].size() >= 3);
  for (const auto& p : j["plans"]) {
    CHECK(p["ranks"] == 1);
    CHECK(p["measured_step_seconds"].get<double>() > 0);
    CHECK(p["predicted_step_seconds"].get<double>() > 0);
    CHECK(p["steps_measured"] == 2);  // one step after the warm-up of each of the 2 passes
    CHECK(std::abs(p["relative_error"].get<double>() -
                   (p["predicted_step_seconds"].get<double>() / p["measured_step_seconds"].get<double>() - 1)) < 1e-9);
  }
  CHECK(j["skipped"].size() >= 1);
  // The summary is the per-plan errors' median and max |error|, recomputed here.
  std::vector<double> abs_errors;
  for (const auto& p : j["plans"]) abs_errors.push_back(std::abs(p["relative_error"].get<double>()));
  std::sort(abs_errors.begin(), abs_errors.end());
  const std::size_t n = abs_errors.size();
  const double median = n % 2 ? abs_errors[n / 2] : (abs_errors[n / 2 - 1] + abs_errors[n / 2]) / 2;
  CHECK(j["summary"]["median_abs_error"].get<double>() == Approx(median).epsilon(1e-9));
  CHECK(j["summary"]["max_abs_error"].get<double>() == Approx(abs_errors.back()).epsilon(1e-9));
  for (const char* f : {"validate.csv", "validate-groups.csv", "validate-classes.csv"}) CHECK(fs::exists(out / f));
  CHECK(run("validate --steps 1 --out " + out.string()).code == 2);  // the only step would be the warm-up
  CHECK(run("validate --passes 0 --out " + out.string()).code == 2);
}

TEST_CASE("report puts the ranks' waits where the trace measures them: the groups add up to the step", "[report]") {
  // Rank 0's trace measures every wait inside the op that waits: a pipeline's stage 0 waits for
  // the later stages in its gradient receives, and on any mesh the ranks wait for the slowest at
  // each collective (the sync wait, priced with the chip's compute_jitter). So the predicted
  // groups account for the whole predicted step, as the measured ones account for the wall time.
  Scratch s("report-waits");
  const auto cluster = s.dir / "jittery.yaml";
  std::ofstream(cluster) << "name: jittery\nsource: test\nchip:\n" << [] {
    std::istringstream chip(slurp(fs::path(SCANSHARD_TEST_DATA) / "../../configs/chips/cpu-core.yaml"));
    std::string line, out;
    while (std::getline(chip, line)) out += "  " + line + "\n";
    return out + "  compute_jitter: 0.05\n";
  }() << "topology: {kind: islands, islands: 1, devices_per_island: 2, island_link_bytes_per_s: 5.0e9, "
         "island_latency_seconds: 1.0e-6, network_bytes_per_s: 5.0e9, network_latency_seconds: 1.0e-6}\n";
  for (auto [mesh, name] : {std::pair{"pipeline: 2", "pipeline=2"}, std::pair{"data: 2", "data=2"}, std::pair{"tensor: 2", "tensor=2"}}) {
    INFO(mesh);
    const auto plan = s.dir / "plan.yaml", trace = s.dir / "trace.json", out = s.dir / "out";
    std::ofstream(plan) << "model: hawk-tiny\nmesh: {" << mesh << "}\nglobal_batch: 4\nmicro_batch: 1\nseq_len: 64\noverlap: false\n";
    nlohmann::json steps = nlohmann::json::array();
    for (int i = 0; i < 3; ++i)
      steps.push_back({{"wall_seconds", 0.02}, {"ops", {{{"phase", "forward"}, {"op", "gated_mlp"}, {"name", "mlp"}, {"seconds", 0.004}}}}});
    const int micro_batches = std::string(name) == "data=2" ? 2 : 4;  // 4 sequences over the replicas, 1 per micro-batch
    std::ofstream(trace) << train_trace({name, 2, 4, 1, 64}, steps, micro_batches).dump();
    const auto r = run("report --cluster " + cluster.string() + " --plan " + plan.string() + " --trace " + trace.string() +
                       " --out-dir " + out.string());
    INFO(r.err);
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(slurp(out / "report.json"));
    double sum = 0, comm = 0;
    for (const auto& g : j["groups"]) {
      sum += g["predicted_seconds"].get<double>();
      if (g["class"] == "comm") comm += g["predicted_seconds"].get<double>();
    }
    CHECK(sum == Approx(j["predicted_step_seconds"].get<double>()).epsilon(1e-9));
    CHECK(comm > 0);
  }
}
