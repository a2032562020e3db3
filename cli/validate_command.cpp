// cli/validate_command.cpp — `scanshard validate`: run a built-in set of plans for real through the
// runner, line each measured trace up with the simulator's estimate for the same plan on the
// (calibrated) cluster op group by op group, and report how wrong the simulator is (DESIGN §7):
// median and max |relative error| of the step time and per op class, and the Spearman rank
// correlation of the plans' order. Run as
//   mpirun -n 2 scanshard validate [--cluster C] [--out DIR] [--steps S] [--passes R] [--quick]
// or plainly (then only the 1-rank plans run; the others are listed as skipped).
//
// Ranks: a plan whose mesh has n devices runs on world ranks 0..n−1 (a communicator split off
// the world); the other ranks wait in a sleeping barrier, so a 1-rank plan has its core to itself
// as the simulator assumes. Plans with n > world size, and plans the runner refuses
// (train::check_supported), are skipped with the reason. Every rank runs one thread (one device
// = one core, as `scanshard calibrate` measures it). The set runs in --passes round-robin passes
// (every plan once per pass, --steps steps, the first a warm-up), so that the machine's slow
// minutes fall on one run of many plans instead of every run of the few plans that happened to
// run then. Measured = rank 0's traces: the median wall time of the steps after each warm-up,
// over all passes, and per op group the median of its seconds.
// The prediction uses the cluster sliced to the plan's n devices.
//
// The plan set varies what the runner executes: family (griffin / hawk / mqa / rwkv4 / rwkv6 / a GPT-style transformer — a
// family the runner does not run yet is listed as skipped with its reason), width and depth,
// sequence length, batch, micro-batch, mesh axes at 1–2 ranks (data, fsdp with ZeRO 0–3,
// tensor, sequence with the ring or all-gather carry or ring attention, pipeline with 1F1B or
// GPipe), remat policy (the executor re-runs the
// forward steps the lowering lists as recompute). The scan algorithm stays `sequential`: the
// executor runs the same fused scan kernel whatever the plan says (only the simulator's price
// changes), so comparing an unfused or associative prediction with it would measure nothing.
// Likewise every plan says overlap: false and fp32, because that is how the runner executes it
// (gradient reduction after the last backward; fp32 everywhere).
// Plans the runner refuses today (e.g. ZeRO-3 before it lands) are listed as skipped.
//
// Machine drift: on a shared VM the same plan's step time moves by 20–30 % over minutes with no
// code change, while the cluster file was measured earlier. Before each plan every rank runs the
// machine-speed probe (cli/probe.hpp); with the probe calibrate recorded, each plan gets a speed
// factor (probe now / probe at calibration) and a second summary scores predictions multiplied
// by it. One measured number per plan, the same formula for all: not a fitted correction. The
// primary statistics stay unscaled.
//
// Writes DIR/validate.json (everything), validate.csv (one row per plan), validate-groups.csv
// (per plan and op group) and validate-classes.csv (per op class), atomically.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include <mpi.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/compare.hpp"
#include "cli/format.hpp"
#include "cli/probe.hpp"
#include "cli/published_command.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/stats.hpp"
#include "train/comm.hpp"
#include "train/runner.hpp"

namespace scanshard {
namespace {

// One set of predictions against one set of measurements: |relative error| summary and the
// Spearman correlation of plan order (NaN, JSON null, below two plans).
struct Score {
  stats::ErrorSummary err;
  double rho = std::nan("");
  [[nodiscard]] nlohmann::json json() const {
    return {{"median_abs_error", err.median_abs}, {"max_abs_error", err.max_abs}, {"median_signed_error", err.bias},
            {"spearman", std::isnan(rho) ? nlohmann::json() : nlohmann::json(rho)}};
  }
};
Score score(const std::vector<double>& predicted, const std::vector<double>& measured) {
  return {stats::summarize_errors(predicted, measured),
          predicted.size() >= 2 ? stats::spearman(predicted, measured) : std::nan("")};
}

// The probe `scanshard calibrate` recorded in the cluster file (measurements: probe_seconds),
// or 0: presets and older files have none. `measurements:` is free-form, so it is read here
// rather than by the strict loader; a malformed value just means no reference.
double calibrated_probe_seconds(const std::string& cluster_arg) {
  if (!looks_like_path(cluster_arg)) return 0;
  try {
    const YAML::Node m = YAML::LoadFile(cluster_arg)["measurements"];
    const double v = m && m["probe_seconds"] ? m["probe_seconds"].as<double>() : 0;
    return std::isfinite(v) && v > 0 ? v : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

struct ValidateOptions {
  std::string cluster = "cpu-local";
  std::string out = "validate";
  std::string data;
  std::int64_t steps = 3;
  int passes = 3;
  bool quick = false;
  bool published = false;            // price the published-measurement suite instead (no MPI)
  std::vector<std::string> suites;   // --suite files for --published (default: the built-in suite)
  std::string fit;                   // --fit CHIP with --published: fit the chip's efficiencies to the suite
  std::vector<std::string> fit_keys; // --fit-keys (default: every key reports/chip_fit.hpp knows)
};

struct PlanCase {
  std::string id;
  ModelSpec model;
  Plan plan;
};

// A preset with a different width / depth (recurrent width and MLP width follow the width).
ModelSpec variant(const std::string& preset, std::int64_t width, std::int64_t depth) {
  ModelSpec m = load_model(preset);
  if (width == m.width && depth == m.depth) return m;
  std::ostringstream y;
  y << "name: " << preset << "-w" << width << "-l" << depth << "\n"
    << "family: " << to_string(m.family) << "\n"
    << "width: " << width << "\ndepth: " << depth << "\nvocab: " << m.vocab << "\n"
    << "mlp_expansion: 3\ntied_embeddings: true\n";
  if (m.family != Family::mqa)
    y << "recurrent_width: " << width << "\ngate_blocks: " << m.gate_blocks << "\nconv_width: " << m.conv_width << "\n";
  if (m.family != Family::hawk)
    y << "heads: " << width / 32 << "\nhead_dim: 32\nkv_heads: 1\nwindow: " << m.window << "\n";
  return parse_model(parse_yaml(y.str(), "validate: " + preset + " variant"), "validate: " + preset + " variant");
}

struct Knobs {
  int zero = 0;
  Remat remat = Remat::none;
  CarryScheme carry = CarryScheme::ring;
  Schedule schedule = Schedule::one_f_one_b;
};

Plan make_plan(const std::string& mesh, std::int64_t global_batch, std::int64_t micro_batch, std::int64_t seq_len, Knobs k) {
  Plan p;
  p.mesh = parse_mesh(mesh, "validate");
  p.global_batch = global_batch;
  p.micro_batch = micro_batch;
  p.seq_len = seq_len;
  p.zero_stage = k.zero;
  p.remat = k.remat;
  p.carry = k.carry;
  p.schedule = k.schedule;
  p.param_dtype = p.act_dtype = DType::fp32;  // the runner computes in fp32
  p.overlap = false;  // the runner reduces gradients after the last backward, not during it
  return p;
}

// The built-in plan set (see the file comment), 51 plans. --quick: every third plan.
std::vector<PlanCase> plan_set(bool quick) {
  const ModelSpec g = load_model("griffin-tiny"), h = load_model("hawk-tiny"), q = load_model("mqa-tiny");
  const ModelSpec r4 = load_model("rwkv4-tiny"), r6 = load_model("rwkv6-tiny"), gpt = load_model("gpt-tiny");
  const ModelSpec gw = variant("griffin-tiny", 256, 3), hw = variant("hawk-tiny", 256, 2), qw = variant("mqa-tiny", 256, 2),
                  gd = variant("griffin-tiny", 128, 6);
  const Knobs none{}, z1{1}, z2{2}, z3{3}, blk{0, Remat::block}, sel{0, Remat::elementwise},
      gather{0, Remat::none, CarryScheme::allgather}, gpipe{0, Remat::none, CarryScheme::ring, Schedule::gpipe};
  struct Row { const ModelSpec* m; const char* mesh; std::int64_t G, mb, T; Knobs k; };
  const std::vector<Row> rows = {
      {&g, "data=1", 4, 4, 128, none},   {&g, "data=1", 8, 4, 128, none},     {&g, "data=1", 4, 2, 256, none},
      {&g, "data=2", 8, 4, 128, none},   {&g, "fsdp=2", 8, 4, 128, z1},       {&g, "data=2", 16, 4, 64, none},
      {&g, "data=2", 4, 1, 256, none},   {&g, "data=1", 16, 8, 32, none},     {&g, "tensor=2", 4, 4, 128, none},
      {&g, "sequence=2", 4, 4, 128, none}, {&g, "sequence=2", 4, 2, 256, gather}, {&g, "data=1", 4, 4, 128, blk},
      {&g, "data=1", 4, 4, 128, sel},    {&g, "fsdp=2", 8, 2, 128, z2},       {&g, "fsdp=2", 8, 4, 128, z3},
      {&h, "data=1", 4, 4, 128, none},   {&h, "data=1", 8, 8, 64, none},      {&h, "data=2", 8, 2, 128, none},
      {&h, "fsdp=2", 4, 2, 256, none},   {&h, "sequence=2", 4, 2, 256, none}, {&h, "data=2", 8, 4, 128, blk},
      {&q, "data=1", 4, 4, 128, none},   {&q, "data=1", 2, 2, 512, none},     {&q, "data=2", 8, 4, 128, none},
      {&q, "fsdp=2", 4, 1, 256, z1},     {&q, "data=2", 4, 2, 256, none},     {&q, "tensor=2", 4, 4, 128, none},
      {&gw, "data=1", 4, 4, 128, none},  {&gw, "data=2", 8, 4, 128, none},    {&gw, "tensor=2", 4, 2, 128, none},
      {&hw, "data=1", 4, 2, 128, none},  {&hw, "data=2", 4, 2, 256, none},    {&qw, "data=1", 4, 4, 128, none},
      {&qw, "data=2", 8, 2, 128, none},  {&gd, "data=2", 8, 4, 128, none},    {&gd, "data=1", 4, 4, 128, blk},
      {&h, "pipeline=2", 4, 1, 128, none}, {&q, "pipeline=2", 8, 2, 128, gpipe}, {&gd, "pipeline=2", 8, 2, 128, none},
      {&r4, "data=1", 4, 4, 128, none},  {&r4, "data=2", 8, 4, 128, none},    {&r4, "tensor=2", 4, 4, 128, none},
      {&r6, "data=1", 4, 4, 128, none},  {&r6, "data=2", 8, 4, 128, none},    {&r6, "tensor=2", 4, 2, 128, none},
      {&q, "sequence=2", 4, 4, 128, none}, {&r4, "sequence=2", 4, 2, 128, gather},
      {&r6, "sequence=2", 4, 4, 128, none}, {&gpt, "data=1", 8, 8, 128, none}, {&gpt, "tensor=2", 8, 4, 128, none},
      {&gpt, "data=2", 8, 4, 128, blk},
  };
  std::vector<PlanCase> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (quick && i % 3 != 0) continue;
    char id[8];
    std::snprintf(id, sizeof id, "P%02zu", i + 1);
    PlanCase c{id, *rows[i].m, make_plan(rows[i].mesh, rows[i].G, rows[i].mb, rows[i].T, rows[i].k)};
    c.plan.model = c.model.name;
    out.push_back(std::move(c));
  }
  return out;
}

// A barrier that does not spin: ranks with nothing to run sleep between tests, leaving their core
// to the ranks that are measuring.
void quiet_barrier(const mpi::Comm& w) {
  MPI_Request req;
  SCANSHARD_MPI(MPI_Ibarrier(w.raw(), &req));
  for (;;) {
    int done = 0;
    SCANSHARD_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::string describe_plan(const PlanCase& c) { return c.model.name + " " + plan_summary(c.plan, true, c.model.has_scan()); }

std::string pct(double e) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f %%", 100 * e);
  return b;
}

std::string ms(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f ms", 1e3 * s);
  return b;
}

void run_validate(const ValidateOptions& o) {
  const MpiSession session;
  const mpi::Comm world = mpi::Comm::world();
  const int rank = world.rank(), W = world.size();

  // Input checks: deterministic, the same on every rank, before any communication.
  ClusterSpec cluster;
  std::vector<PlanCase> cases;
  std::vector<std::uint8_t> data;
  check_inputs_on_every_rank(rank, [&] {
    if (o.steps < 2) throw ConfigError("--steps: must be at least 2 (the first step of each pass is a warm-up)");
    if (o.passes < 1) throw ConfigError("--passes: must be at least 1");
    check_output_directory(o.out, "--out");
    cluster = load_cluster(o.cluster, "--cluster");
    cases = plan_set(o.quick);
    std::int64_t longest = 0;
    for (const auto& c : cases) longest = std::max(longest, c.plan.seq_len);
    data = train::load_bytes(o.data.empty() ? train::default_corpus_path() : o.data, longest + 2);
  });

  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  const double probe_ref = calibrated_probe_seconds(o.cluster);
  const double load_start = load_average_1min();
  if (rank == 0) {
    std::cout << "validate: " << cases.size() << " plans, " << o.passes << " passes of " << o.steps
              << " steps each (first = warm-up), " << W
              << " rank(s), one thread each; predicted on " << cluster.name << " (" << cluster.origin << ")\n";
    if (cluster.source.find("placeholder") != std::string::npos)
      std::cout << "note: " << cluster.name << " is an uncalibrated placeholder; run `mpirun -n 2 scanshard calibrate` and pass "
                   "--cluster cpu-local.yaml\n";
    std::cout << std::flush;
  }

  nlohmann::json plans_json = nlohmann::json::array();
  std::vector<double> pred_steps, meas_steps, fastest_steps, speed;
  std::vector<stats::ClassSample> class_samples;
  Table t({"id", "plan", "predicted", "measured", "error", "largest group error"}, {false, false, true, true, true, false});
  std::string csv = "id,model,family,mesh,zero_stage,remat,carry,ranks,global_batch,micro_batch,seq_len,predicted_seconds,"
                    "measured_seconds,relative_error\n";
  std::string groups_csv = "id,group,class,predicted_seconds,measured_seconds\n";
  std::vector<std::string> skipped;
  train::Options opt;
  opt.steps = o.steps;

  // Which plans run: the same decision on every rank.
  std::vector<std::string> why_skipped(cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::int64_t n = c.plan.mesh.devices();
    std::string& why = why_skipped[i];
    if (n > W) {
      why = "needs " + std::to_string(n) + " ranks (run under mpirun -n " + std::to_string(n) + ")";
    } else {
      try {
        train::check_supported(c.model, c.plan, n);
        check_plan(c.model, c.plan, cluster_slice(cluster, n, "--cluster").devices());
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    if (!why.empty() && rank == 0) {
      skipped.push_back(c.id + " (" + describe_plan(c) + "): " + why);
      std::cout << "  " << c.id << " skipped: " << why << "\n" << std::flush;
    }
  }

  // Round-robin passes: every plan runs once per pass (its first step a warm-up), so a slow
  // minute of the machine touches one run of many plans rather than every run of a few.
  struct Runs {
    std::vector<MeasuredStep> steps;  // after each run's warm-up
    std::vector<double> probes;       // machine probe before each run (seconds)
  };
  std::vector<Runs> runs(cases.size());
  try {
    for (int pass = 0; pass < o.passes; ++pass) {
      const auto pass_start = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < cases.size(); ++i) {
        if (!why_skipped[i].empty()) continue;
        const auto& c = cases[i];
        const std::int64_t n = c.plan.mesh.devices();
        double probe_now = std::nan("");
        if (probe_ref > 0) {  // against a calibrated probe only; every rank at once, as calibrate ran it
          std::vector<double> probe = {machine_probe_seconds()};
          world.allreduce_sum(std::span<double>(probe));
          probe_now = probe[0] / W;
        }
        const mpi::Comm sub = world.split(rank < n ? 0 : 1, rank);
        train::Result res;
        if (rank < n) res = train::run(c.model, c.plan, data, opt, &sub);
        quiet_barrier(world);
        if (rank != 0) continue;
        const auto measured = measured_steps(res.trace);
        runs[i].steps.insert(runs[i].steps.end(), measured.begin() + 1, measured.end());
        runs[i].probes.push_back(probe_now);
      }
      if (rank == 0) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - pass_start).count();
        std::cout << "  pass " << pass + 1 << "/" << o.passes << " done (" << std::lround(secs) << " s)\n" << std::flush;
      }
    }
  } catch (const std::exception& e) {
    if (W == 1) throw;
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (rank != 0) return;

  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (!why_skipped[i].empty()) continue;
    const auto& c = cases[i];
    const std::int64_t n = c.plan.mesh.devices();
    const double probe_now = probe_ref > 0 ? stats::median(runs[i].probes) : std::nan("");
    const ClusterSpec cs = cluster_slice(cluster, n, "--cluster");
    const Comparison cmp = compare(c.model, c.plan, cs, runs[i].steps, /*warm_up=*/false);
    const double err = stats::relative_error(cmp.predicted_step_seconds, cmp.measured_step_seconds);
    pred_steps.push_back(cmp.predicted_step_seconds);
    meas_steps.push_back(cmp.measured_step_seconds);
    fastest_steps.push_back(cmp.fastest_step_seconds);
    speed.push_back(probe_ref > 0 ? probe_now / probe_ref : std::nan(""));
    std::string worst = "-";
    double worst_share = 0;
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : cmp.groups) {
      groups.push_back({{"group", g.group}, {"class", g.cls}, {"predicted_seconds", g.predicted}, {"measured_seconds", g.measured}});
      groups_csv += c.id + "," + g.group + "," + g.cls + "," + std::to_string(g.predicted) + "," + std::to_string(g.measured) + "\n";
      if (g.predicted > 0 && g.measured > 0) {
        const double share = std::abs(g.predicted - g.measured);  // seconds it contributes to the step error
        if (share > worst_share) {
          worst_share = share;
          worst = g.group + " " + pct(stats::relative_error(g.predicted, g.measured));
        }
      }
    }
    nlohmann::json by_class = nlohmann::json::object();
    for (const auto& [cls, pr] : cmp.predicted_by_class) {
      const double me = cmp.measured_by_class.at(cls);
      class_samples.push_back({cls, pr, me});
      by_class[cls] = {{"predicted_seconds", pr}, {"measured_seconds", me}};
    }
    nlohmann::json buckets = nlohmann::json::object();
    for (int b = 0; b < kBucketCount; ++b) buckets[to_string(static_cast<Bucket>(b))] = cmp.estimate.seconds[b];
    const auto& mem = cmp.estimate.memory;
    plans_json.push_back({{"id", c.id}, {"model", c.model.name}, {"family", to_string(c.model.family)},
                          {"mesh", c.plan.mesh.describe()}, {"ranks", n}, {"description", describe_plan(c)},
                          {"zero_stage", c.plan.zero_stage}, {"remat", to_string(c.plan.remat)}, {"carry", to_string(c.plan.carry)}, {"global_batch", c.plan.global_batch},
                          {"micro_batch", c.plan.micro_batch}, {"seq_len", c.plan.seq_len},
                          {"plan_yaml", plan_to_yaml(c.plan)}, {"cluster", cs.name},
                          {"predicted_step_seconds", cmp.predicted_step_seconds},
                          {"measured_step_seconds", cmp.measured_step_seconds}, {"relative_error", err},
                          {"fastest_step_seconds", cmp.fastest_step_seconds},
                          {"steps_measured", cmp.steps_used}, {"groups", groups}, {"classes", by_class},
                          {"probe_seconds", probe_now},
                          {"speed_factor", probe_ref > 0 ? nlohmann::json(probe_now / probe_ref) : nlohmann::json()},
                          {"predicted_buckets_seconds", buckets},
                          {"memory_bytes", {{"params", mem.params_bytes}, {"grads", mem.grads_bytes},
                                            {"optimizer", mem.optimizer_bytes}, {"activations", mem.activations_bytes},
                                            {"scan_state", mem.state_bytes}, {"buffers", mem.buffers_bytes},
                                            {"total", mem.total_bytes}}}});
    char row[512];
    std::snprintf(row, sizeof row, "%s,%s,%s,\"%s\",%d,%s,%s,%lld,%lld,%lld,%lld,%.9g,%.9g,%.6g\n", c.id.c_str(),
                  c.model.name.c_str(), to_string(c.model.family), c.plan.mesh.describe().c_str(), c.plan.zero_stage,
                  to_string(c.plan.remat), to_string(c.plan.carry), static_cast<long long>(n),
                  static_cast<long long>(c.plan.global_batch), static_cast<long long>(c.plan.micro_batch),
                  static_cast<long long>(c.plan.seq_len), cmp.predicted_step_seconds, cmp.measured_step_seconds, err);
    csv += row;
    t.add({c.id, describe_plan(c), ms(cmp.predicted_step_seconds), ms(cmp.measured_step_seconds), pct(err), worst});
    std::cout << "  " << c.id << " " << describe_plan(c) << ": predicted " << ms(cmp.predicted_step_seconds) << ", measured "
              << ms(cmp.measured_step_seconds) << " (" << pct(err) << ")";
    if (probe_ref > 0) {
      char f[64];
      std::snprintf(f, sizeof f, "; machine probe %.2fx its calibration time", probe_now / probe_ref);
      std::cout << f;
    }
    std::cout << "\n" << std::flush;
  }
  if (pred_steps.empty()) throw std::runtime_error("validate: every plan was skipped; nothing to compare");

  // Statistics.
  const Score primary = score(pred_steps, meas_steps);
  const auto& step_err = primary.err;
  const double rho = primary.rho;
  const auto class_err = stats::errors_by_class(class_samples);
  // Secondary view: against the fastest measured step of each plan (what the plan costs when
  // other processes leave the cores alone; the primary numbers use the median, as measured).
  const Score fastest = score(pred_steps, fastest_steps);
  std::cout << "\n" << t.str() << "\n";
  Table ct({"op class", "plans", "median |error|", "max |error|", "bias (median)"}, {false, true, true, true, true});
  nlohmann::json classes_json = nlohmann::json::object();
  std::string classes_csv = "class,plans,median_abs_error,max_abs_error,median_signed_error\n";
  auto abs_pct = [](double e) { char b[32]; std::snprintf(b, sizeof b, "%.1f %%", 100 * e); return std::string(b); };
  for (const auto& [cls, s] : class_err) {
    ct.add({cls, std::to_string(s.count), abs_pct(s.median_abs), abs_pct(s.max_abs), pct(s.bias)});
    classes_json[cls] = {{"plans", s.count}, {"median_abs_error", s.median_abs}, {"max_abs_error", s.max_abs}, {"median_signed_error", s.bias}};
    char row[256];
    std::snprintf(row, sizeof row, "%s,%zu,%.6g,%.6g,%.6g\n", cls.c_str(), s.count, s.median_abs, s.max_abs, s.bias);
    classes_csv += row;
  }
  std::cout << ct.str() << "\n";
  char summary[512];
  std::snprintf(summary, sizeof summary,
                "step time over %zu plans: median |error| %.1f %%, max |error| %.1f %%, bias %+.1f %% (predicted vs measured); "
                "Spearman rank correlation of plan order %.3f\n"
                "goal (issue 9): median <= 3 %%, max <= 10 %%, Spearman >= 0.95 -> %s\n",
                step_err.count, 100 * step_err.median_abs, 100 * step_err.max_abs, 100 * step_err.bias, rho,
                step_err.median_abs <= 0.03 && step_err.max_abs <= 0.10 && rho >= 0.95 ? "met" : "not met");
  std::cout << summary;
  std::snprintf(summary, sizeof summary,
                "(against each plan's fastest step instead of the median: median |error| %.1f %%, max %.1f %%, bias %+.1f %%, "
                "Spearman %.3f)\n",
                100 * fastest.err.median_abs, 100 * fastest.err.max_abs, 100 * fastest.err.bias, fastest.rho);
  std::cout << summary;
  nlohmann::json drift_json;  // null without a calibrated probe
  if (probe_ref > 0) {
    std::vector<double> scaled(pred_steps.size());
    for (std::size_t i = 0; i < scaled.size(); ++i) scaled[i] = pred_steps[i] * speed[i];
    const Score sc = score(scaled, meas_steps);
    const auto [lo, hi] = std::minmax_element(speed.begin(), speed.end());
    std::snprintf(summary, sizeof summary,
                  "machine drift: the speed probe ran %.2fx to %.2fx its time at calibration (median %.2fx); with each "
                  "prediction scaled by its plan's probe: median |error| %.1f %%, max %.1f %%, bias %+.1f %%, Spearman %.3f\n",
                  *lo, *hi, stats::median(speed), 100 * sc.err.median_abs, 100 * sc.err.max_abs, 100 * sc.err.bias, sc.rho);
    std::cout << summary;
    drift_json = sc.json();
    drift_json["probe_seconds_at_calibration"] = probe_ref;
    drift_json["speed_factor_min"] = *lo;
    drift_json["speed_factor_max"] = *hi;
  } else {
    std::cout << "machine drift: not checked (" << cluster.name
              << " has no calibrated probe; pass the file `scanshard calibrate` wrote)\n";
  }
  const double load_end = load_average_1min();
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  std::cout << "machine load (1-min average): " << load_start << " at the start, " << load_end << " at the end, on " << cores
            << " cores, " << W << " of them ours";
  if (std::max(load_start, load_end) > cores)
    std::cout << " -- other processes competed for the cores: measured times are inflated and noisy";
  std::cout << "\n";
  for (const auto& s : skipped) std::cout << "skipped " << s << "\n";

  nlohmann::json summary_json = primary.json();
  summary_json["plans"] = step_err.count;
  summary_json["mean_abs_error"] = step_err.mean_abs;
  const nlohmann::json doc = {
      {"cluster", {{"name", cluster.name}, {"origin", cluster.origin}, {"source", cluster.source},
                   {"argument", looks_like_path(o.cluster) ? std::filesystem::absolute(o.cluster).string() : o.cluster}}},
      {"ranks", W},
      {"steps", o.steps},
      {"passes", o.passes},
      {"load_average", {{"start", load_start}, {"end", load_end}, {"cores", cores}}},
      {"quick", o.quick},
      {"plans", plans_json},
      {"skipped", skipped},
      {"summary", summary_json},
      {"summary_fastest_step", fastest.json()},
      {"summary_probe_scaled", drift_json},
      {"classes", classes_json}};
  make_output_directory(o.out, "--out");
  write_output_files({{o.out + "/validate.json", doc.dump(2) + "\n"}, {o.out + "/validate.csv", csv},
                      {o.out + "/validate-groups.csv", groups_csv}, {o.out + "/validate-classes.csv", classes_csv}});
  std::cout << "wrote " << o.out << "/validate.json, validate.csv, validate-groups.csv, validate-classes.csv"
            << " (render with `scanshard report --validate " << o.out << " --html FILE`)\n";
}

}  // namespace

void register_validate_command(CLI::App& app) {
  auto o = std::make_shared<ValidateOptions>();
  auto* cmd = app.add_subcommand("validate", "run a built-in set of plans for real and compare each with the simulator "
                                             "(mpirun -n 2 scanshard validate)");
  cmd->add_option("--cluster", o->cluster, "cluster to predict on: preset or YAML (e.g. the file `scanshard calibrate` wrote)")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "directory for validate.json and the CSV files")->capture_default_str();
  cmd->add_option("--steps", o->steps, "training steps per plan and pass (the first of each is a warm-up)")->capture_default_str();
  cmd->add_option("--passes", o->passes, "rounds over the plan set; each plan's numbers are medians over all its passes")
      ->capture_default_str();
  cmd->add_option("--data", o->data, "training data, read as bytes (default: the repository's data/corpus.txt)");
  cmd->add_flag("--quick", o->quick, "every third plan of the set");
  cmd->add_flag("--published", o->published,
                "price the published cluster measurements (configs/published/: Megatron-LM, Llama 3, Griffin, ...) and "
                "report predicted against published per row and source; no MPI, nothing runs");
  cmd->add_option("--suite", o->suites, "with --published: suite YAML files to price instead of the built-in ones");
  cmd->add_option("--fit", o->fit,
                  "with --published: fit one chip's efficiency numbers (e.g. a100-sxm-80gb) to the suite rows that use it, "
                  "with leave-one-source-out errors");
  cmd->add_option("--fit-keys", o->fit_keys, "with --fit: the keys to fit (gemm, gemm_shape, attention, elementwise, norm, memory, "
                                             "network, launch_overhead_seconds; default all)")
      ->delimiter(',');
  cmd->callback([o, cmd] {
    if (o->published) return run_published(o->suites, cmd->count("--out") ? o->out : "", o->fit, o->fit_keys);
    if (!o->suites.empty()) throw ConfigError("--suite: only with --published");
    if (!o->fit.empty() || !o->fit_keys.empty()) throw ConfigError("--fit, --fit-keys: only with --published");
    run_validate(*o);
  });
}

}  // namespace scanshard
