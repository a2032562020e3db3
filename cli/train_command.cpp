// cli/train_command.cpp — `scanshard train`: run a plan for real on MPI ranks (issue 8: data, fsdp
// with ZeRO 0–3, tensor and sequence parallelism for Griffin / Hawk / MQA, fp32). Run as
//   mpirun -n N scanshard train --plan P [--model M] [--data FILE] [--steps S] [--seed N] [--trace FILE]
//                                [--checkpoint-dir D [--checkpoint-every K] [--keep-last N]] [--resume PATH]
// or plainly for one rank. N must equal the plan's mesh size. Input errors (bad plan, mesh ≠ ranks,
// unsupported axis or family, missing data) are detected identically on every rank before any
// communication: rank 0 reports them, every rank exits with the same code (2), nothing hangs. A
// failure during training aborts the whole job (MPI_Abort) after the failing rank prints it.
// SIGTERM or SIGUSR1 (a batch scheduler's warning before preemption or the time limit; mpirun
// forwards SIGUSR1 to every rank, Slurm signals every task) at any rank: every rank finishes the
// current step, the run checkpoints (with --checkpoint-dir), rank 0 says where to resume, exit 0.
// A rank that stops responding (SIGSTOP, a hang outside MPI, a dead node) ends the job within
// --watchdog-seconds plus a 10 s grace with a message naming it (train/watchdog.hpp).
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <span>

#include <unistd.h>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/plan_options.hpp"
#include "program/output_file.hpp"
#include "program/plan.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "reports/timeline.hpp"
#include "train/checkpoint.hpp"
#include "train/comm.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/resume.hpp"
#include "train/runner.hpp"

namespace scanshard {
namespace {

// The stop signal this rank received (0: none). Set by the handler, read by the step loop.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGUSR1}) ::sigaction(sig, &sa, nullptr);
}

struct TrainOptions {
  std::string plan_file, model, data, data_format = "bytes", trace, timeline, checkpoint_dir, resume, on_nan = "stop", optimizer;
  bool allow_optimizer_change = false, allow_data_change = false;
  std::int64_t steps = 10, checkpoint_every = 0, keep_last = 0;
  // Long enough for any wait inside a step of a healthy job (ranks reach each collective within
  // this of one another; the timeout also stretches to 3 × the slowest step), short enough that a
  // stopped rank ends the job within a minute (40 s + the 10 s heartbeat grace).
  double watchdog_seconds = 40;
  unsigned seed = 1234;
};

nlohmann::json trace_json(const Trace& t, const ModelSpec& m, const Plan& p, int world) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : t.steps()) {
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& [k, c] : s.cells)
      ops.push_back({{"phase", std::get<0>(k)}, {"op", std::get<1>(k)}, {"name", std::get<2>(k)},
                     {"seconds", c.seconds}, {"calls", c.calls}});
    steps.push_back({{"step", s.step}, {"wall_seconds", s.wall}, {"loss", s.loss}, {"ops", ops}});
  }
  return {{"model", m.name}, {"mesh", p.mesh.describe()}, {"ranks", world}, {"rank", 0},
          {"global_batch", p.global_batch}, {"micro_batch", p.micro_batch}, {"seq_len", p.seq_len},
          {"dtype", "fp32"}, {"steps", steps}};
}

// Every rank's measured timeline (reports/timeline.hpp) in one trace-event file, written by rank 0
// (collective: each rank's events travel as JSON text).
void write_timeline(const mpi::Comm& world, const Trace& trace, const std::string& file, const ModelSpec& m, const Plan& p) {
  std::string mine = trace_events(measured_timeline(trace, world.rank())).dump();
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(world.size()));
  const std::int64_t n = static_cast<std::int64_t>(mine.size());
  world.allgather(std::span<const std::int64_t>(&n, 1), std::span<std::int64_t>(sizes));
  std::vector<int> counts;
  std::int64_t total = 0, offset = 0;
  for (std::int64_t k = 0; k < world.size(); ++k) {
    counts.push_back(static_cast<int>(sizes[static_cast<std::size_t>(k)]));
    if (k < world.rank()) offset += sizes[static_cast<std::size_t>(k)];
    total += sizes[static_cast<std::size_t>(k)];
  }
  std::vector<std::uint8_t> all(static_cast<std::size_t>(total));
  std::copy(mine.begin(), mine.end(), all.begin() + offset);
  world.allgather_v_inplace(std::span<std::uint8_t>(all), counts);
  if (world.rank() != 0) return;
  nlohmann::json events = nlohmann::json::array();
  std::size_t at = 0;
  for (int c : counts) {
    for (auto& e : nlohmann::json::parse(all.begin() + static_cast<std::ptrdiff_t>(at), all.begin() + static_cast<std::ptrdiff_t>(at) + c))
      events.push_back(std::move(e));
    at += static_cast<std::size_t>(c);
  }
  const nlohmann::json other = {{"kind", "measured"}, {"model", m.name}, {"mesh", p.mesh.describe()}, {"ranks", world.size()},
                                {"schedule", to_string(p.schedule)}, {"micro_batches", p.micro_batches()}};
  write_output_file(file, trace_event_file(std::move(events), other).dump() + "\n");
}

// Rank 0, before training: "" if the outputs can be written, else why not (an input error).
std::string output_problem(const TrainOptions& o) {
  try {
    if (!o.checkpoint_dir.empty()) {
      make_output_directory(o.checkpoint_dir, "--checkpoint-dir");
      if (::access(o.checkpoint_dir.c_str(), W_OK | X_OK) != 0)
        return "--checkpoint-dir: " + o.checkpoint_dir + ": not writable (" + std::strerror(errno) + ")";
    }
    if (!o.trace.empty()) check_output_file(o.trace);
    if (!o.timeline.empty()) check_output_file(o.timeline);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

void run_train(const TrainOptions& o) {
  const MpiSession session;
  const mpi::Comm world = mpi::Comm::world();
  const int rank = world.rank();

  // Input checks: deterministic, the same on every rank, no communication.
  ModelSpec m;
  Plan p;
  std::optional<train::Tokens> data;  // opened: each rank reads only its sequences
  train::OnNan on_nan = train::OnNan::stop;
  train::OptimizerConfig optimizer;  // defaults (train/optimizer.hpp) unless --optimizer
  std::string resume;  // --resume, a directory resolved to the step file its `latest` names
  check_inputs_on_every_rank(rank, [&] {
    if (!o.resume.empty()) resume = train::resolve_resume_path(o.resume);
    if (!o.optimizer.empty()) optimizer = train::load_optimizer(o.optimizer);
    p = load_plan(o.plan_file);
    const std::string model = pick_preset(o.model, p.model, "model", o.plan_file);
    m = load_model(model, o.model.empty() ? o.plan_file + ": model" : "--model");
    if (o.steps < 1) throw ConfigError("--steps: must be at least 1");
    train::check_steps(0, o.steps);  // again with a --resume checkpoint's step, once it is read
    if (o.checkpoint_every < 0) throw ConfigError("--checkpoint-every: must be 0 (only after the last step) or positive");
    if (!(o.watchdog_seconds >= 0)) throw ConfigError("--watchdog-seconds: must be 0 (off) or positive");
    if (o.checkpoint_every > 0 && o.checkpoint_dir.empty()) throw ConfigError("--checkpoint-every: needs --checkpoint-dir");
    if (o.keep_last < 0) throw ConfigError("--keep-last: must be 0 (keep every checkpoint) or positive");
    if (o.keep_last > 0 && o.checkpoint_dir.empty()) throw ConfigError("--keep-last: needs --checkpoint-dir");
    try {
      train::check_supported(m, p, world.size());
    } catch (const PlanError& e) {  // name the plan file and the key to change
      throw plan_file_error(o.plan_file, e);
    }
    on_nan = train::parse_on_nan(o.on_nan);
    data = train::Tokens::open_file(o.data.empty() ? train::default_corpus_path() : o.data,
                                   train::parse_token_format(o.data_format), p.seq_len + 2);
  });

  // Output checks before the first step, so a long run does not die at its first checkpoint or
  // at the end for a bad path: rank 0 creates a missing --checkpoint-dir and checks that it and the
  // --trace file's directory are writable directories; every rank gets its verdict.
  {
    std::string bad = rank == 0 ? output_problem(o) : std::string();
    std::int64_t n = static_cast<std::int64_t>(bad.size());
    world.broadcast(std::span<std::int64_t>(&n, 1), 0);
    bad.resize(static_cast<std::size_t>(n));
    if (n > 0) world.broadcast(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(bad.data()), bad.size()), 0);
    if (n > 0) exit_on_every_rank(rank, ConfigError(bad));
  }

  mpi::arm_watchdog(MPI_COMM_WORLD, o.watchdog_seconds);  // every rank, here: see watchdog.hpp

  if (rank == 0) {
    std::cout << "train " << m.name << " on " << world.size() << " rank(s), mesh " << p.mesh.describe() << ", batch "
              << p.global_batch << " x " << p.seq_len << " tokens, micro-batch " << p.micro_batch << ", "
              << o.steps << " steps, seed " << o.seed << "\n";
    std::cout << optimizer.describe() << (o.optimizer.empty() ? " (defaults; --optimizer FILE to change)" : "") << "\n";
    std::cout << "note: parameters " << to_string(p.param_dtype)
              << (p.param_dtype == DType::bf16 ? " (an fp32 master copy for AdamW)" : "") << ", activations "
              << to_string(p.act_dtype) << ", arithmetic and GEMM accumulation fp32 (docs/mixed-precision.md)\n";
    std::cout << "note: gradients are summed in " << (p.grad_dtype == GradDType::fp64 ? "fp64" : "fp32") << " and reduced across ranks in "
              << (p.grad_bytes() == 2 ? "bf16" : p.grad_bytes() == 8 ? "fp64" : "fp32") << " (plan dtypes: grads: "
              << to_string(p.grad_dtype) << ")\n";
    if (!o.checkpoint_dir.empty())
      for (const auto& f : train::remove_stale_partials(o.checkpoint_dir))
        std::cout << "note: removed " << f << ", a partial checkpoint an interrupted run left behind\n";
    std::cout.flush();
  }
  train::Options opt;
  opt.steps = o.steps;
  opt.seed = o.seed;
  opt.checkpoint_dir = o.checkpoint_dir;
  opt.checkpoint_every = o.checkpoint_every;
  opt.keep_last = o.keep_last;
  opt.resume = resume;
  opt.on_nan = on_nan;
  opt.adamw = optimizer.adamw;
  opt.schedule = optimizer.schedule;
  opt.allow_optimizer_change = o.allow_optimizer_change;
  opt.allow_data_change = o.allow_data_change;
  opt.timeline = !o.timeline.empty();
  install_stop_handlers();
  opt.stop_requested = [] { return g_stop_signal != 0; };
  opt.notice = [rank](const std::string& line) {
    if (rank == 0) std::cout << "warning: " << line << "\n" << std::flush;
  };
  try {
    const auto t0 = std::chrono::steady_clock::now();
    std::int64_t done = 0;
    auto res = train::run(m, p, *data, opt, &world, [&](std::int64_t step, double loss, double tps) {
      if (rank != 0) return;
      if (done == 0 && !resume.empty())
        std::cout << "resumed from step " << step << " of " << resume << ": running steps " << step + 1 << ".." << step + o.steps
                  << " (--steps counts the steps after the checkpoint)\n";
      ++done;  // ETA: the mean step time so far times the steps left in this run
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double eta = elapsed / static_cast<double>(done) * static_cast<double>(o.steps - done);
      char line[160];
      std::snprintf(line, sizeof line, "step %lld loss %.6f tokens/s %.1f eta %.1f s\n", static_cast<long long>(step + 1),
                    loss, tps, eta);
      std::cout << line << std::flush;
    });
    if (rank == 0 && !o.trace.empty()) {
      write_output_file(o.trace, trace_json(res.trace, m, p, world.size()).dump(1) + "\n");
    }
    if (!o.timeline.empty()) write_timeline(world, res.trace, o.timeline, m, p);
    if (rank == 0)
      for (const auto& c : res.checkpoints) std::cout << "checkpoint " << c << "\n";
    if (res.stopped_after > 0) {  // every rank stopped at the same step: name the signal on rank 0
      std::int64_t sig = g_stop_signal;
      world.allreduce_max(std::span<std::int64_t>(&sig, 1));
      if (rank == 0) {
        std::cout << "stopped by " << (sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM") << " after step " << res.stopped_after << " ("
                  << res.stopped_after - res.first_step << " of the " << o.steps << " step(s) this run was asked for); ";
        if (res.checkpoints.empty()) std::cout << "no --checkpoint-dir, so nothing was saved\n";
        else std::cout << "resume with --resume " << res.checkpoints.back() << "\n";
        std::cout << std::flush;
      }
    }
    if (rank == 0 && !res.pruned.empty())
      std::cout << "removed " << res.pruned.size() << " older checkpoint(s) (--keep-last " << o.keep_last << ")\n";
  } catch (const train::NumericalError& e) {  // every rank saw the same non-finite values
    if (rank == 0) std::cerr << "scanshard: error: " << e.what() << "\n" << std::flush;
    MPI_Barrier(MPI_COMM_WORLD);  // printed before any rank exits (mpi_session.hpp)
    finalize_and_exit(3);
  } catch (const ConfigError& e) {  // a bad --resume file or checkpoint directory: every rank agrees
    exit_on_every_rank(rank, e);
  } catch (const std::exception& e) {
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

}  // namespace

void register_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "run a plan for real on MPI ranks (mpirun -n <mesh size>); fp32 or bf16 (the plan's "
                                          "dtypes), data / fsdp (ZeRO 0-3) / tensor / sequence / pipeline (interleaved too) "
                                          "meshes, Griffin/Hawk/MQA/RWKV/transformer");
  cmd->add_option("--plan", o->plan_file, "plan YAML file (mesh, batch, seq_len)")->required();
  cmd->add_option("--model", o->model, "model preset or YAML path (default: the plan's model)");
  cmd->add_option("--data", o->data, "training data (default: the repository's data/corpus.txt)");
  cmd->add_option("--data-format", o->data_format, "bytes (text, any file), uint16 or uint32 (little-endian token ids)")
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "training steps to run (after the checkpoint with --resume)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "initialisation and dropout-mask seed (the same parameters and masks for every plan)")->capture_default_str();
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir,
                  "write <dir>/step-<N>.h5 (N zero-padded to 8 digits; parallel HDF5, full logical tensors) after the last "
                  "step, and <dir>/latest naming the newest");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "also checkpoint every N steps (needs --checkpoint-dir)");
  cmd->add_option("--keep-last", o->keep_last, "keep only the newest N step files (0: all; needs --checkpoint-dir)")
      ->capture_default_str();
  cmd->add_option("--resume", o->resume,
                  "start from this checkpoint (written under any plan and rank count), or a checkpoint directory's latest");
  cmd->add_option("--optimizer", o->optimizer,
                  "train config YAML with an `optimizer:` section (AdamW lr, beta1, beta2, eps, weight_decay, "
                  "max_grad_norm, warmup_steps, decay_steps, min_lr_ratio; see train/optimizer.hpp)");
  cmd->add_flag("--allow-optimizer-change", o->allow_optimizer_change,
                "resume from a checkpoint written with another optimizer (default: refused, naming what changed)");
  cmd->add_flag("--allow-data-change", o->allow_data_change,
                "resume on other data than the checkpoint's /meta data records (path, size, CRC-32 of the token ids; "
                "default: refused, naming what changed)");
  cmd->add_option("--on-nan", o->on_nan,
                  "a NaN/Inf loss or gradient: stop (exit 3, naming the step and the first bad tensor) or skip "
                  "that step's update")
      ->capture_default_str();
  cmd->add_option("--watchdog-seconds", o->watchdog_seconds,
                  "end the job, naming the rank, when a wait for other ranks exceeds this (and 3x the slowest step); "
                  "0: off")
      ->capture_default_str();
  cmd->add_option("--trace", o->trace, "write measured seconds per (phase, op, name) per step as JSON (rank 0)");
  cmd->add_option("--timeline", o->timeline,
                  "write every rank's measured timeline (one span per executed step and pipeline pass) as Chrome "
                  "trace-event JSON: open it in Perfetto (ui.perfetto.dev) or chrome://tracing");
  cmd->callback([o] { run_train(*o); });
}

}  // namespace scanshard
