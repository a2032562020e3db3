// cli/calibrate_command.cpp — `scanshard calibrate`: measure this machine and write it as a cluster
// YAML (DESIGN §7) that `simulate`, `plan`, `validate` and `report` read like any preset. Run as
//   mpirun -n N scanshard calibrate [--out cpu-local.yaml] [--name cpu-local] [--quick]
// or plainly (one rank: no network measurements; the link numbers stay the cpu-local preset's
// placeholders and `source:` says so). One rank = one core = one device, so every benchmark runs
// single-threaded (OpenMP and OpenBLAS), on all ranks at once (as they will when training).
//
// This file parses the arguments, runs the phases in order and prints. What is measured and how:
// measure/microbench.hpp (sgemm, STREAM triad, FMA loop, launch overhead, the executor on
// calibrate's own small plans for the per-class values and the GEMM curve, MPI collectives,
// jitter) and measure/probe.hpp (validate's drift references: the in-cache and the memory probe). What
// it becomes in the cluster file: reports/calibration.hpp (peaks, the memory curve, class and
// kernel efficiencies by bisection on the roofline price, collective fits through the simulator's
// formulas, compute_jitter, the YAML text). The peaks are the best of repeated runs (a cluster
// file describes the hardware, not the moment's load, recorded under measurements:
// load_average_1min); each trace cell's and each collective's time the median call. The text is read back
// by the strict cluster loader, then written to --out atomically (program/output_file.hpp).
// --quick: fewer shapes and repetitions, one pass of 2 steps per calibration plan, messages up to
// 1 MiB (seconds, for tests).
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <mpi.h>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "reports/calibration.hpp"
#include "reports/compare.hpp"
#include "reports/format.hpp"
#include "reports/progress.hpp"
#include "measure/microbench.hpp"
#include "measure/probe.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "train/comm.hpp"

namespace scanshard {
namespace {

struct CalibrateOptions {
  std::string out = "cpu-local.yaml";
  std::string name = "cpu-local";
  bool quick = false;
};

// ─── the cluster file ───────────────────────────────────────────────────────────────────────────

std::string hostname() {
  char h[256] = {0};
  if (::gethostname(h, sizeof h - 1) != 0) return "unknown-host";
  return h;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[64];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

void run_calibrate(const CalibrateOptions& o) {
  const MpiSession session;
  const mpi::Comm world = mpi::Comm::world();
  const int rank = world.rank();

  // Input checks: the same on every rank, before any communication.
  namespace fs = std::filesystem;
  const fs::path out_path(o.out);
  ClusterSpec placeholder;
  check_inputs_on_every_rank(rank, [&] {
    if (o.name.empty()) throw ConfigError("--name: must not be empty");
    if (!looks_like_path(o.out) || !(o.out.ends_with(".yaml") || o.out.ends_with(".yml")))
      throw ConfigError("--out: '" + o.out + "' must name a .yaml file");
    check_output_file(o.out);
    placeholder = load_cluster("cpu-local");
  });

  try {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    const double t_start = now_seconds();
    CalibrationMeasurements r;
    r.ranks = world.size();
    r.load_start = load_average_1min();
    // Progress per phase with the time left (reports/progress.hpp), the phases weighted by their
    // share of one `calibrate --quick` run at 2 ranks on the 2-core development machine under load
    // (2026-12-06: sgemm 4.9 s, triad 0.9, vector 3.9, kernels 14.5, mpi 39.0): a rough guide,
    // refined as the phases finish.
    struct PhaseWeight { const char* name; double weight; };
    std::vector<PhaseWeight> phases = {{"sgemm", 4.9}, {"triad", 0.9}, {"vector", 3.9}, {"kernels", 29.0}};
    if (r.ranks > 1) phases.push_back({"mpi", 39.0});
    double total_weight = 0, done_weight = 0, t_phase = t_start;
    for (const auto& ph : phases) total_weight += ph.weight;
    std::size_t next_phase = 0;
    auto phase = [&] {  // the previous phase's seconds, then the next phase (with the time left)
      const double t = now_seconds();
      if (rank == 0 && next_phase > 0) std::cout << "  done in " << format_seconds(t - t_phase) << "\n";
      if (next_phase > 0) done_weight += phases[next_phase - 1].weight;
      if (rank == 0 && next_phase < phases.size())
        std::cout << fraction_line("  " + std::string(phases[next_phase].name) + ": phase " + std::to_string(next_phase + 1) + "/" +
                                       std::to_string(phases.size()) + ";",
                                   done_weight / total_weight, t - t_start)
                  << "\n" << std::flush;
      ++next_phase;
      t_phase = t;
    };
    if (rank == 0)
      std::cout << "calibrate: " << r.ranks << " rank(s), one thread each" << (o.quick ? ", --quick" : "") << "\n" << std::flush;

    world.barrier();
    phase();
    r.gemm = measure::bench_sgemm(o.quick);
    {
      std::vector<double> v;
      for (const auto& g : r.gemm) v.push_back(g.seconds);
      measure::mean_over_ranks(world, v);
      for (std::size_t i = 0; i < v.size(); ++i)
        r.gemm[i] = {r.gemm[i].m, r.gemm[i].n, r.gemm[i].k, v[i], 2.0 * double(r.gemm[i].m * r.gemm[i].n * r.gemm[i].k) / v[i]};
    }
    world.barrier();
    phase();
    r.triad = measure::bench_triad(o.quick);
    {
      std::vector<double> v;
      for (const auto& t : r.triad) v.push_back(t.bytes / t.bytes_per_s);
      measure::mean_over_ranks(world, v);
      for (std::size_t i = 0; i < v.size(); ++i) r.triad[i].bytes_per_s = r.triad[i].bytes / v[i];
      std::vector<double> sizes;
      for (const auto& t : r.triad) sizes.push_back(t.bytes);
      r.gemv = measure::bench_gemv(sizes, o.quick);
      std::vector<double> g;
      for (const auto& t : r.gemv) g.push_back(t.bytes / t.bytes_per_s);
      measure::mean_over_ranks(world, g);
      for (std::size_t i = 0; i < g.size(); ++i) r.gemv[i].bytes_per_s = r.gemv[i].bytes / g[i];
    }
    world.barrier();
    const double memory_probe_triad = memory_probe_seconds();  // validate's memory-drift reference, with the triad's minute
    world.barrier();
    world.barrier();
    phase();
    {
      std::vector<double> v = {1.0 / measure::bench_vector_flops(o.quick), measure::bench_launch_overhead()};
      r.decode_attention_rows = measure::bench_decode_attention_rows(o.quick);
      for (const auto& d : r.decode_attention_rows) v.push_back(d.seconds_per_key_head);
      measure::mean_over_ranks(world, v);
      r.vector_flops = 1.0 / v[0];
      r.launch = v[1];
      for (std::size_t i = 0; i < r.decode_attention_rows.size(); ++i) r.decode_attention_rows[i].seconds_per_key_head = v[2 + i];
    }
    world.barrier();

    const std::string host = hostname(), date = utc_now();
    ChipSpec chip = chip_from_peaks(r.gemm, r.triad, r.vector_flops, r.launch);
    chip.efficiency.gemv_memory_curve = fit_gemv_memory_curve(r.gemv, chip.memory_bytes_per_s);
    chip.name = "CPU core (" + host + ", calibrated)";
    chip.source = "measured by scanshard calibrate on " + host + " at " + date;
    const double phys = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    const int cores = std::max(1u, std::thread::hardware_concurrency());
    const std::int64_t devices = r.ranks > 1 ? r.ranks : cores;
    chip.memory_bytes = phys > 0 ? phys / double(devices) : placeholder.chip.memory_bytes;
    const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
    chip.onchip_memory_bytes = l2 > 0 ? double(l2) : placeholder.chip.onchip_memory_bytes;

    // Per-class efficiencies, in dependency order.
    phase();  // the executor on calibrate's own plans
    const auto plans = calibration_plan_set();
    r.kernels = calibration_benches(plans);
    r.gemm_steps = gemm_step_samples(plans);
    chip.efficiency.decode_attention_rows_curve =  // before C10's fit, relative to its G
        fit_decode_attention_rows_curve(r.decode_attention_rows, decode_attention_reference_rows(r.kernels));
    const measure::KernelTiming timing = measure::time_calibration_plans(world, plans, r.kernels, r.gemm_steps, o.quick);
    r.rank_kernel_seconds = timing.rank_kernel_seconds;
    r.probe_seconds = timing.probe_seconds;  // validate's drift reference: the kernels' minutes
    {  // the memory probe again, in the kernels' minutes (C14's cache, the decode plans): both runs' mean
      world.barrier();
      std::vector<double> v = {memory_probe_triad, memory_probe_seconds()};
      measure::mean_over_ranks(world, v);
      r.memory_probe_seconds = (v[0] + v[1]) / 2;
    }
    // The per-call cost the decode benchmarks show (fit_call_seconds) and the class values depend
    // on each other (every step's price includes its calls' cost): two rounds settle them.
    for (int round = 0; round < 2; ++round) {
      fit_kernel_efficiencies(r.kernels, chip);
      chip.launch_overhead_seconds = fit_call_seconds(r.kernels, chip, r.launch);
    }
    fit_kernel_efficiencies(r.kernels, chip);
    chip.efficiency.gemm_curve = fit_gemm_curve(r.gemm_steps, chip);
    if (!chip.efficiency.gemm_curve.empty()) chip.efficiency.gemm = chip.efficiency.gemm_curve.back().second;

    TopologySpec topo = placeholder.topology;
    topo.kind = TopologyKind::islands;
    topo.islands = 1;
    topo.devices_per_island = devices;
    if (r.ranks > 1) {
      phase();
      r.comm = measure::bench_mpi(world, o.quick);
      r.comm_back_to_back = measure::bench_all_reduce_back_to_back(world, o.quick);
      if (r.comm_back_to_back.link_latency_seconds > 0)
        topo.island_latency_back_to_back_seconds = island_hop_latency_seconds(r.comm_back_to_back);
      // The training plans as replicas: the loss all-reduce's wait (jitter, the first plan's) and
      // the gradient all-reduces as a step runs them, which the island link is fitted from (the
      // benchmark's hot-cache collectives ran up to 3x faster: docs/validation.md, runs Q/R).
      const auto replicas = measure::run_replica_plans(world, plans, o.quick);
      const CommFit& bench = r.comm.front();
      const auto first = std::find_if(replicas.begin(), replicas.end(), [](const auto& runs) { return !runs.empty(); });
      if (first != replicas.end()) r.jitter = measure::measure_jitter(world, *first, bench.samples.front().second);
      chip.compute_jitter = r.jitter.jitter;
      r.traced_all_reduce = measure::traced_all_reduce(world, replicas);
      r.comm_in_step = fit_collective_in_step(bench, r.traced_all_reduce, r.ranks);
      const CommFit& ar = r.comm_in_step;
      if (ar.link_bytes_per_s > 0) topo.island_link_bytes_per_s = topo.network_bytes_per_s = ar.link_bytes_per_s;
      if (ar.link_latency_seconds > 0) topo.island_latency_seconds = topo.network_latency_seconds = island_hop_latency_seconds(ar);
    }
    r.seconds = now_seconds() - t_start;
    r.load_end = load_average_1min();
    phase();
    if (rank == 0) std::cout << "calibrate: done in " << format_seconds(r.seconds) << "\n" << std::flush;

    if (rank == 0) {
      const std::string text = calibrated_cluster_yaml(o.name, o.quick, r, chip, topo, host, date);
      const ClusterSpec back = parse_cluster_text(text, out_path.string());  // round trip through the strict loader
      try {
        write_output_file(out_path.string(), text);
      } catch (const ConfigError& e) {  // after the last collective call: the other ranks are finishing
        if (world.size() == 1) throw;
        std::cerr << "scanshard: error: " << e.what() << "\n" << std::flush;
        finalize_and_exit(2);
      }
      const auto& e = back.chip.efficiency;
      Table t({"measured", "value"}, {false, true});
      t.add({"sgemm peak (fp32, 1 thread)", format_si(back.chip.peak("fp32"), "FLOP/s")});
      t.add({"vector FMA", format_si(back.chip.vector_flops_per_s, "FLOP/s")});
      {  // the roofline prices the best working set (in cache); the largest is nearest DRAM
        const auto& big = r.triad.back();
        t.add({"stream triad (best; priced as memory_bytes_per_s)", format_si(back.chip.memory_bytes_per_s, "B/s")});
        t.add({"stream triad at " + format_si(big.bytes, "B") + " (largest working set)", format_si(big.bytes_per_s, "B/s")});
        if (!r.gemv.empty())
          t.add({"one-row linear (sgemv) at " + format_si(r.gemv.back().bytes, "B") + " of weights", format_si(r.gemv.back().bytes_per_s, "B/s")});
      }
      t.add({"per-call cost (decode kernels; hot loop " + format_seconds(r.launch) + ")", format_seconds(back.chip.launch_overhead_seconds)});
      char effs[200];
      std::snprintf(effs, sizeof effs, "gemm %.2f  elementwise %.2f  norm %.2f  scan %.2f  attention %.2f (softmax %.3f)", e.gemm,
                    e.elementwise, e.norm, e.scan, e.attention, e.attention_softmax);
      t.add({"efficiency", effs});
      if (r.rank_kernel_seconds.size() > 1) {  // the same kernels on every rank at once: a slower core shows here
        const double mean = std::accumulate(r.rank_kernel_seconds.begin(), r.rank_kernel_seconds.end(), 0.0) /
                            static_cast<double>(r.rank_kernel_seconds.size());
        std::string by;
        for (std::size_t i = 0; i < r.rank_kernel_seconds.size(); ++i) {
          char b[48];
          std::snprintf(b, sizeof b, "%srank %zu %.3f", i ? "  " : "", i, r.rank_kernel_seconds[i] / mean);
          by += b;
        }
        t.add({"kernel time by rank (of the mean)", by});
      }
      if (!e.gemm_curve.empty()) {
        std::string curve;
        for (const auto& [flops, f] : e.gemm_curve) curve += (curve.empty() ? "" : "  ") + format_si(flops, "FLOP") + " " + fmt6(f);
        t.add({"gemm by FLOPs of one GEMM", curve});
      }
      std::string ops;
      for (const auto& [op, eff] : e.ops) { char b[32]; std::snprintf(b, sizeof b, " %.3g", eff); ops += (ops.empty() ? "" : "  ") + op + b; }
      if (!ops.empty()) t.add({"efficiency of kernels priced on their own", ops});
      if (!r.comm.empty()) {
        auto fit_text = [](const CommFit& c) {
          return format_seconds(c.fit.intercept > 0 ? c.fit.intercept : 0) + " + bytes / " +
                 format_si(c.fit.slope > 0 ? 1.0 / c.fit.slope : 0, "B/s");
        };
        for (const auto& c : r.comm) t.add({c.kind + " (benchmark fit)", fit_text(c)});
        if (!r.traced_all_reduce.empty())
          t.add({"all_reduce in training steps (fit, " + std::to_string(r.traced_all_reduce.size()) + " traced sizes)",
                 fit_text(r.comm_in_step)});
        t.add({r.traced_all_reduce.empty() ? "island link (from the all-reduce benchmark)" : "island link (from the training steps' all-reduce)", format_si(back.topology.island_link_bytes_per_s, "B/s") + ", " +
                                                   format_seconds(back.topology.island_latency_seconds) + " per hop"});
        if (back.topology.island_latency_back_to_back_seconds > 0)
          t.add({"island latency back to back (decode)", format_seconds(back.topology.island_latency_back_to_back_seconds) + " per hop"});
      } else {
        t.add({"network", "not measured (1 rank; run under mpirun -n 2)"});
      }
      std::cout << "\n" << t.str() << "wrote " << out_path.string() << " (cluster '" << back.name << "', " << back.devices()
                << " devices; use it with --cluster " << out_path.string() << ")\n";
    }
  } catch (const std::exception& e) {
    if (world.size() == 1) throw;
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

}  // namespace

void register_calibrate_command(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  auto* cmd = app.add_subcommand("calibrate", "measure this machine (sgemm, stream, kernels, MPI) and write a cluster YAML; "
                                              "run as mpirun -n N scanshard calibrate");
  cmd->add_option("--out", o->out, "cluster YAML to write (atomically)")->capture_default_str();
  cmd->add_option("--name", o->name, "cluster name inside the file")->capture_default_str();
  cmd->add_flag("--quick", o->quick, "fewer shapes and repetitions, messages up to 1 MiB (a few seconds)");
  cmd->callback([o] { run_calibrate(*o); });
}

}  // namespace scanshard
