// cli/validate_command.cpp — `scanshard validate`: run a built-in set of plans for real through the
// runner, line each measured trace up with the simulator's estimate for the same plan on the
// (calibrated) cluster op group by op group, and report how wrong the simulator is (DESIGN §7).
// Run as
//   mpirun -n 2 scanshard validate [--cluster C] [--out DIR] [--steps S] [--passes R] [--quick]
// or plainly (then only the 1-rank plans run; the others are listed as skipped).
//
// This file parses the arguments and prints. The plan set, the scoring and the files written are
// reports/validation.hpp; the round-robin runs (a plan with n devices on world ranks 0..n−1, the
// others in a sleeping barrier; --passes passes of --steps steps, the first of each a warm-up) are
// train/plan_runs.hpp. Plans with n > world size, and plans the runner refuses
// (train::check_supported), are skipped with the reason. Every rank runs one thread (one device
// = one core, as `scanshard calibrate` measures it). Measured = rank 0's traces: the median wall
// time of the steps after each warm-up, over all passes, and per op group the median of its
// seconds. The prediction uses the cluster sliced to the plan's n devices. Before each plan every
// rank runs the machine-speed probe (measure/probe.hpp) when the cluster file has a calibrated one.
// Before the runs, calibrate's all-reduce samples of 64 KiB-8 MiB are re-measured with the same
// benchmark (network drift, reports/validation.hpp NetworkDrift): printed, and a warning when the
// collectives run in another regime than at calibration. Before and after the runs, every rank
// runs the memory probe (measure/probe.hpp: a triad beyond the L3) against calibrate's (memory
// drift, reports/validation.hpp MemoryDrift): printed, and a warning outside the same band.
//
// Decode plans (reports/validation.hpp decode_plan_set) run in the same round robin: each run
// prefills its batch and decodes the plan's S tokens (not --steps; train/plan_runs.hpp); measured = the
// median decode step over all passes against sim/inference's per-token latency.
//
// Writes DIR/validate.json (everything), validate.csv (one row per plan), validate-groups.csv
// (per plan and op group), validate-classes.csv (per op class) and validate-decode.csv (one row
// per decode plan), atomically.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "measure/microbench.hpp"
#include "measure/probe.hpp"
#include "cli/published_command.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "reports/format.hpp"
#include "reports/progress.hpp"
#include "reports/validation.hpp"
#include "train/comm.hpp"
#include "train/plan_runs.hpp"

namespace scanshard {
namespace {

struct ValidateOptions {
  std::string cluster = "cpu-local";
  std::string out = "validate";
  std::string data;
  std::int64_t steps = 3;
  int passes = 3;
  bool quick = false;
  std::string plans = "all";         // which sets run: training, decode or all
  bool published = false;            // price the published-measurement suite instead (no MPI)
  std::vector<std::string> suites;   // --suite files for --published (default: the built-in suite)
  std::string fit;                   // --fit CHIP with --published: fit the chip's efficiencies to the suite
  std::vector<std::string> fit_keys; // --fit-keys (default: every key reports/chip_fit.hpp knows)
};

std::string pct(double e) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f %%", 100 * e);
  return b;
}

std::string abs_pct(double e) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f %%", 100 * e);
  return b;
}

std::string ms(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f ms", 1e3 * s);
  return b;
}

std::string tokens_per_s(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}

// The decode plans: per-token latency and tokens/s, predicted and measured, and their summary.
void print_decode(const ValidationResult& r) {
  if (r.decode_plans.empty()) return;
  Table t({"id", "decode plan", "predicted / token", "measured / token", "error", "predicted tok/s", "measured tok/s",
           "largest group error"},
          {false, false, true, true, true, true, true, false});
  for (const auto& pr : r.decode_plans) {
    const PlanCase& c = *pr.plan_case;
    const double B = static_cast<double>(c.decode->batch);
    const std::string worst = pr.worst_group.empty() ? "-" : pr.worst_group + " " + pct(pr.worst_group_error);
    t.add({c.id, describe_plan(c), ms(pr.cmp.predicted_step_seconds), ms(pr.cmp.measured_step_seconds), pct(pr.error),
           tokens_per_s(B / pr.cmp.predicted_step_seconds), tokens_per_s(B / pr.cmp.measured_step_seconds), worst});
  }
  std::cout << "\ndecoding (a step = one token of every sequence; tokens/s = batch / per-token latency):\n" << t.str() << "\n";
  Table ct({"op class (decode)", "plans", "median |error|", "max |error|", "bias (median)"}, {false, true, true, true, true});
  for (const auto& [cls, s] : r.decode_classes)
    ct.add({cls, std::to_string(s.count), abs_pct(s.median_abs), abs_pct(s.max_abs), pct(s.bias)});
  std::cout << ct.str() << "\n";
  const auto& e = r.decode.err;
  char summary[512];
  std::snprintf(summary, sizeof summary,
                "decode per-token latency over %zu plans: median |error| %.1f %%, max |error| %.1f %%, bias %+.1f %%; "
                "Spearman %.3f\ngoal (issue 26): median <= 5 %% -> %s\n",
                e.count, 100 * e.median_abs, 100 * e.max_abs, 100 * e.bias, r.decode.rho, e.median_abs <= 0.05 ? "met" : "not met");
  std::cout << summary;
  const auto& f = r.decode_fastest.err;
  std::snprintf(summary, sizeof summary,
                "(against each decode plan's fastest token instead of the median: median |error| %.1f %%, max %.1f %%, bias %+.1f %%)\n",
                100 * f.median_abs, 100 * f.max_abs, 100 * f.bias);
  std::cout << summary;
}

void print_result(const ValidationResult& r, double probe_ref) {
  if (r.plans.empty()) return print_decode(r);
  Table t({"id", "plan", "predicted", "measured", "error", "largest group error"}, {false, false, true, true, true, false});
  for (const auto& pr : r.plans) {
    const PlanCase& c = *pr.plan_case;
    const std::string worst = pr.worst_group.empty() ? "-" : pr.worst_group + " " + pct(pr.worst_group_error);
    t.add({c.id, describe_plan(c), ms(pr.cmp.predicted_step_seconds), ms(pr.cmp.measured_step_seconds), pct(pr.error), worst});
    std::cout << "  " << c.id << " " << describe_plan(c) << ": predicted " << ms(pr.cmp.predicted_step_seconds)
              << ", measured " << ms(pr.cmp.measured_step_seconds) << " (" << pct(pr.error) << ")";
    if (probe_ref > 0) {
      char f[64];
      std::snprintf(f, sizeof f, "; machine probe %.2fx its calibration time", pr.speed_factor);
      std::cout << f;
    }
    std::cout << "\n" << std::flush;
  }
  std::cout << "\n" << t.str() << "\n";
  Table ct({"op class", "plans", "median |error|", "max |error|", "bias (median)"}, {false, true, true, true, true});
  for (const auto& [cls, s] : r.classes)
    ct.add({cls, std::to_string(s.count), abs_pct(s.median_abs), abs_pct(s.max_abs), pct(s.bias)});
  std::cout << ct.str() << "\n";
  const auto& step_err = r.primary.err;
  const double rho = r.primary.rho;
  char summary[512];
  std::snprintf(summary, sizeof summary,
                "step time over %zu plans: median |error| %.1f %%, max |error| %.1f %%, bias %+.1f %% (predicted vs measured); "
                "Spearman rank correlation of plan order %.3f\n"
                "goal (issue 9): median <= 3 %%, max <= 10 %%, Spearman >= 0.95 -> %s\n",
                step_err.count, 100 * step_err.median_abs, 100 * step_err.max_abs, 100 * step_err.bias, rho,
                step_err.median_abs <= 0.03 && step_err.max_abs <= 0.10 && rho >= 0.95 ? "met" : "not met");
  std::cout << summary;
  // Secondary view: against the fastest measured step of each plan (what the plan costs when
  // other processes leave the cores alone; the primary numbers use the median, as measured).
  std::snprintf(summary, sizeof summary,
                "(against each plan's fastest step instead of the median: median |error| %.1f %%, max %.1f %%, bias %+.1f %%, "
                "Spearman %.3f)\n",
                100 * r.fastest.err.median_abs, 100 * r.fastest.err.max_abs, 100 * r.fastest.err.bias, r.fastest.rho);
  std::cout << summary;
  print_decode(r);
}

// calibrate's all-reduce samples re-measured now, the same benchmark on the same ranks (every rank
// calls it; the same decision on every rank: the file is read by each).
NetworkDrift measure_network_drift(const mpi::Comm& world, const std::string& cluster_arg, bool quick) {
  if (world.size() < 2) return {};
  const auto calibration = calibrated_all_reduce_samples(cluster_arg, world.size());
  std::vector<double> now;
  for (const auto& [bytes, seconds] : calibration) now.push_back(measure::time_all_reduce(world, bytes, quick));
  return network_drift(calibration, now);
}

// "<label>: <subject> ran Ax to Bx its time at calibration (median Cx)", and `warning` when the
// median is outside the drift band (kDriftWarnLow/High); without a measurement, why not.
void print_drift(const char* label, bool measured, const std::string& not_checked, const std::string& subject, double lo, double hi,
                 double median, const char* warning) {
  if (!measured) {
    std::cout << label << ": not checked (" << not_checked << "; pass the file `scanshard calibrate` wrote)\n";
    return;
  }
  char line[512];
  std::snprintf(line, sizeof line, "%s: %s ran %.2fx to %.2fx its time at calibration (median %.2fx)", label, subject.c_str(), lo, hi,
                median);
  std::cout << line << (drift_outside_band(median) ? std::string(" -- ") + warning : std::string()) << "\n";
}

void print_network_drift(const NetworkDrift& d, const std::string& cluster_name) {
  char subject[128] = "";
  if (d.measured())
    std::snprintf(subject, sizeof subject, "calibrate's all-reduce benchmark (%.0f KiB to %.0f KiB)", d.bytes.front() / 1024,
                  d.bytes.back() / 1024);
  print_drift("network drift", d.measured(), cluster_name + " has no all-reduce samples calibrated on this many ranks", subject,
              d.ratio_min, d.ratio_max, d.ratio_median,
              "the collectives run in another regime than calibrated: the comm groups' predictions are off by about that "
              "factor; rerun calibrate (on a VM the shared-memory all-reduce can change speed 3-4x between launches)");
}

// The memory probe on every rank at once (after a barrier), mean over ranks; 0 without a
// calibrated reference (the same decision on every rank: the file is read by each).
double measure_memory_probe(const mpi::Comm& world, double reference) {
  if (!(reference > 0)) return 0;
  world.barrier();
  std::vector<double> v = {memory_probe_seconds()};
  measure::mean_over_ranks(world, v);
  return v[0];
}

void print_memory_drift(const MemoryDrift& d, const std::string& cluster_name) {
  print_drift("memory drift", d.measured(), cluster_name + " has no calibrated memory probe",
              "the memory probe (a triad over 96 MiB on every rank at once, before and after the runs)", d.ratio_min, d.ratio_max,
              d.ratio_median,
              "the memory bus runs at another speed than calibrated: the memory-bound predictions (decode weight streaming, "
              "the decode attention beyond L2) are off by about that factor; rerun calibrate");
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
    if (o.plans != "training" && o.plans != "decode" && o.plans != "all")
      throw ConfigError("--plans: '" + o.plans + "' is not training, decode or all");
    if (o.plans != "decode") cases = validation_plan_set(o.quick);
    std::int64_t longest = 0;
    for (const auto& c : cases) longest = std::max(longest, c.plan.seq_len);
    if (o.plans != "training")
      for (auto& c : decode_plan_set(o.quick)) cases.push_back(std::move(c));  // their prompts cycle through the data
    data = train::load_bytes(o.data.empty() ? train::default_corpus_path() : o.data, longest + 2);
  });

  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  const double probe_ref = calibrated_probe_seconds(o.cluster);
  const NetworkDrift network = measure_network_drift(world, o.cluster, o.quick);
  const double memory_probe_ref = calibrated_memory_probe_seconds(o.cluster);
  const double memory_probe_before = measure_memory_probe(world, memory_probe_ref);
  const double load_start = load_average_1min();
  if (rank == 0) {
    const auto decoding = std::count_if(cases.begin(), cases.end(), [](const PlanCase& c) { return c.decode.has_value(); });
    std::cout << "validate: " << cases.size() - static_cast<std::size_t>(decoding) << " training plans, " << o.passes
              << " passes of " << o.steps << " steps each (first = warm-up), and " << decoding
              << " decode plans (a prefill, then one step per sampled token), " << W
              << " rank(s), one thread each; predicted on " << cluster.name << " (" << cluster.origin << ")\n";
    if (cluster.source.find("placeholder") != std::string::npos)
      std::cout << "note: " << cluster.name << " is an uncalibrated placeholder; run `mpirun -n 2 scanshard calibrate` and pass "
                   "--cluster cpu-local.yaml\n";
    std::cout << std::flush;
  }

  // Which plans run: the same decision on every rank.
  ValidationRunInfo info;
  std::vector<train::PlanToRun> to_run;
  for (const auto& c : cases) {
    const std::string why = train::why_not_runnable(c.model, c.plan, W, cluster, c.decode ? &*c.decode : nullptr);
    to_run.push_back({&c.model, &c.plan, why.empty(), c.decode ? &*c.decode : nullptr});
    if (!why.empty() && rank == 0) {
      info.skipped.push_back(c.id + " (" + describe_plan(c) + "): " + why);
      std::cout << "  " << c.id << " skipped: " << why << "\n" << std::flush;
    }
  }

  train::RoundRobinOptions rr;
  rr.passes = o.passes;
  rr.train.steps = o.steps;
  if (probe_ref > 0) rr.probe = [] { return machine_probe_seconds(); };  // against a calibrated probe only
  rr.pass_done = [&](int pass, double secs) {
    std::cout << "  pass " << pass + 1 << "/" << o.passes << " done (" << std::lround(secs) << " s)\n" << std::flush;
  };
  // Progress per plan run, with the time left at the pace so far (reports/progress.hpp).
  const double runs_total = static_cast<double>(o.passes) *
                            static_cast<double>(std::count_if(to_run.begin(), to_run.end(), [](const auto& t) { return t.run; }));
  const auto t_runs = std::chrono::steady_clock::now();
  double runs_done = 0;
  rr.run_done = [&](int, std::size_t i) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_runs).count();
    std::cout << "    " << progress_line("run", ++runs_done, runs_total, elapsed) << " (" << cases[i].id << ")\n" << std::flush;
  };
  const auto runs = train::run_round_robin(to_run, data, rr, world);
  const MemoryDrift memory = memory_drift(memory_probe_ref, {memory_probe_before, measure_memory_probe(world, memory_probe_ref)});
  if (rank != 0) return;

  std::vector<PlanMeasurement> measured(cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    for (const auto& trace : runs[i].traces) {
      const auto steps = measured_steps(trace);
      measured[i].steps.insert(measured[i].steps.end(), steps.begin() + 1, steps.end());  // after each run's warm-up (decode: the prefill)
    }
    measured[i].probes = runs[i].probes;
  }
  const ValidationResult r = score_validation(cases, measured, cluster, probe_ref);
  print_result(r, probe_ref);
  if (r.probe_scaled) {
    const Score& sc = *r.probe_scaled;
    char summary[512];
    std::snprintf(summary, sizeof summary,
                  "machine drift: the speed probe ran %.2fx to %.2fx its time at calibration (median %.2fx); with each "
                  "prediction scaled by its plan's probe: median |error| %.1f %%, max %.1f %%, bias %+.1f %%, Spearman %.3f\n",
                  r.speed_min, r.speed_max, r.speed_median, 100 * sc.err.median_abs, 100 * sc.err.max_abs, 100 * sc.err.bias,
                  sc.rho);
    std::cout << summary;
  } else if (probe_ref > 0 && r.plans.empty()) {
    std::cout << "machine drift: the speed probe rescales training plans only, and none ran\n";
  } else {
    std::cout << "machine drift: not checked (" << cluster.name
              << " has no calibrated probe; pass the file `scanshard calibrate` wrote)\n";
  }
  print_network_drift(network, cluster.name);
  print_memory_drift(memory, cluster.name);
  const double load_end = load_average_1min();
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  std::cout << "machine load (1-min average): " << load_start << " at the start, " << load_end << " at the end, on " << cores
            << " cores, " << W << " of them ours";
  if (std::max(load_start, load_end) > cores)
    std::cout << " -- other processes competed for the cores: measured times are inflated and noisy";
  std::cout << "\n";
  for (const auto& s : info.skipped) std::cout << "skipped " << s << "\n";
  const bool decode_csv = !r.decode_plans.empty();

  info.cluster_argument = looks_like_path(o.cluster) ? std::filesystem::absolute(o.cluster).string() : o.cluster;
  info.ranks = W;
  info.steps = o.steps;
  info.passes = o.passes;
  info.quick = o.quick;
  info.load_start = load_start;
  info.load_end = load_end;
  info.cores = cores;
  info.probe_at_calibration = probe_ref;
  info.network = network;
  info.memory = memory;
  make_output_directory(o.out, "--out");
  std::vector<std::pair<std::string, std::string>> files;
  for (auto& [name, text] : validation_files(r, cluster, info)) files.push_back({o.out + "/" + name, std::move(text)});
  write_output_files(files);
  std::cout << "wrote " << o.out << "/validate.json, validate.csv, validate-groups.csv, validate-classes.csv"
            << (decode_csv ? ", validate-decode.csv" : "")
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
  cmd->add_flag("--quick", o->quick, "every third training plan and every other decode plan");
  cmd->add_option("--plans", o->plans, "which plan sets run: training, decode or all")->capture_default_str();
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
